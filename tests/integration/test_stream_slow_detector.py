"""A detector slower than kafka's max.poll.interval must not get the stream evicted.

While its stages are full the runner keeps polling (partitions paused), so the member stays in the
group; before, a slow CPU detector made it miss the poll deadline, get evicted, re-read the same
batches after rejoining and be evicted again (seen in `make demo` on a loaded machine).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import ClassVar

import pytest

from detectors.base import Detector
from pipeline.metrics import PipelineMetrics
from pipeline.runner import Pipeline
from pipeline.schemas import Finding, InferenceLog
from pipeline.scoring import Scorer
from pipeline.settings import Settings
from pipeline.verdicts import Pseudonymizer
from tests.integration.test_stream import _lake_ids, _produce, _record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

POLL_INTERVAL_MS = 6000


class _Slow(Detector):
    name: ClassVar[str] = "slow"
    version: ClassVar[str] = "1"

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        time.sleep(POLL_INTERVAL_MS / 1000 * 1.3)  # each batch outlasts the poll deadline
        return [[] for _ in records]


def test_a_detector_slower_than_the_poll_interval_does_not_get_the_member_evicted(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    topic = kafka_topic_factory(partitions=2)
    records = [_record(i) for i in range(12)]
    _produce(kafka_bootstrap, topic, records)
    settings = Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "verdict_topic": f"{topic}.verdicts",
               "dead_letter_topic": f"{topic}.dlq", "group_id": "g-slow", "max_poll_interval_ms": POLL_INTERVAL_MS,
               "session_timeout_ms": POLL_INTERVAL_MS},
        batch={"max_records": 3, "max_wait_ms": 100},
        stream={"max_in_flight_batches": 2},
        lake={"path": str(tmp_path / "lake")},
        sinks=["lake", "metrics"],
        pseudonym_key="slow-detector-test-key",
    )
    metrics = PipelineMetrics()
    pipeline = Pipeline.from_settings(settings, metrics, Scorer([_Slow()], Pseudonymizer(b"k"), metrics))
    stats = pipeline.run(max_records=len(records))
    assert metrics.registry.get_sample_value("mm_rebalances_total", {"event": "lost"}) in (None, 0.0)
    assert stats.records == len(records)
    ids = _lake_ids(tmp_path)
    assert sorted(ids) == [r["request_id"] for r in records]
