"""A detector slower than kafka's max.poll.interval must not get the stream evicted.

While its stages are full the runner keeps polling (partitions paused), so the member stays in the
group; before, a slow CPU detector made it miss the poll deadline, get evicted, re-read the same
batches after rejoining and be evicted again (seen in `make demo` on a loaded machine).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import ClassVar

import pytest

from detectors.base import Detector
from pipeline.metrics import PipelineMetrics
from pipeline.runner import OutageError, Pipeline
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


class _Hangs(Detector):
    """A detector call that does not return until released (as a hung GPU kernel looks)."""

    name: ClassVar[str] = "hangs"
    version: ClassVar[str] = "1"

    def __init__(self, release: threading.Event, hang_s: float) -> None:
        self.release, self.hang_s, self.calls = release, hang_s, 0

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        self.calls += 1
        if self.calls == 2:  # the second batch hangs
            self.release.wait(self.hang_s)
        return [[] for _ in records]


def _hang_settings(kafka_bootstrap: str, topic: str, tmp_path, group: str, **stream) -> Settings:
    return Settings(
        kafka={"bootstrap_servers": kafka_bootstrap, "input_topic": topic, "verdict_topic": f"{topic}.verdicts",
               "dead_letter_topic": f"{topic}.dlq", "group_id": group},
        batch={"max_records": 3, "max_wait_ms": 100},
        stream={"score_stall_s": 2, **stream},
        lake={"path": str(tmp_path / "lake")},
        sinks=["lake", "metrics"],
        pseudonym_key="hang-detector-test-key",
    )


def test_a_detector_call_that_hangs_inline_is_reported_then_waited_out(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """Inline scoring (the default): the hung call shows as the ``scoring`` component on /healthz
    while it hangs, and the run goes on when it returns (the process mode: test_stream_process_scoring.py)."""
    topic = kafka_topic_factory(partitions=1)
    records = [_record(i) for i in range(12)]
    _produce(kafka_bootstrap, topic, records)
    metrics = PipelineMetrics()
    release = threading.Event()
    detector = _Hangs(release, hang_s=60)
    pipeline = Pipeline.from_settings(_hang_settings(kafka_bootstrap, topic, tmp_path, "g-hang-inline"), metrics,
                                      Scorer([detector], Pseudonymizer(b"k"), metrics))
    result: dict = {}
    runner_thread = threading.Thread(target=lambda: result.setdefault("stats", pipeline.run(max_records=len(records))))
    runner_thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "scoring" not in metrics.health.report()[1]["down"]:
            time.sleep(0.1)
        healthy, report = metrics.health.report()
        assert not healthy and "has not returned" in report["down"]["scoring"]["reason"], report
    finally:
        release.set()
    runner_thread.join(timeout=120)
    assert result["stats"].records == len(records)
    assert metrics.health.report()[0]
    assert sorted(_lake_ids(tmp_path)) == [r["request_id"] for r in records]


def test_a_detector_call_hung_past_the_deadline_ends_the_run(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=1)
    _produce(kafka_bootstrap, topic, [_record(i) for i in range(12)])
    metrics = PipelineMetrics()
    release = threading.Event()
    settings = _hang_settings(kafka_bootstrap, topic, tmp_path, "g-hang-deadline", outage_deadline_s=5)
    pipeline = Pipeline.from_settings(settings, metrics, Scorer([_Hangs(release, hang_s=120)], Pseudonymizer(b"k"), metrics))
    started = time.monotonic()
    try:
        with pytest.raises(OutageError, match=r"scoring unavailable for \d+ s \(deadline 5 s\): a call has not returned"):
            pipeline.run(max_records=12)
        assert time.monotonic() - started < 60
    finally:
        release.set()  # the stuck scoring thread (a daemon) returns and finds the run failed
