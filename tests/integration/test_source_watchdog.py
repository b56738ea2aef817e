"""A consumer whose group membership stops making progress is replaced, and nothing is lost.

kafka-python 3.0.12 was seen (in CI, and in 2 of about 20 loaded runs of test_stream.py) to stay in
a rejoin forever: its IO loop kept heartbeating while the rebalance never went on, the broker saw
an empty group, and the stream polled without partitions until the test's 180 s timeout. The
fault is injected here the same way it showed: the first consumer's revoke callback never
returns, so its rejoin never completes. The watchdog (``kafka.join_watchdog_s``) must close that
consumer, join with a new one and consume every record.
"""

from __future__ import annotations

import threading
import time

import pytest
from kafka import KafkaConsumer

from detectors.noop import NoopDetector
from pipeline.metrics import PipelineMetrics
from pipeline.runner import Pipeline
from pipeline.scoring import Scorer
from pipeline.settings import Settings
from pipeline.source import KafkaSource
from pipeline.verdicts import Pseudonymizer
from tests.integration.test_stream import _lake_ids, _produce, _record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

WATCHDOG_S = 3.0
GROUP = "g-watchdog"


def _pipeline(bootstrap: str, topic: str, tmp_path) -> tuple[Pipeline, PipelineMetrics]:
    settings = Settings(
        kafka={"bootstrap_servers": bootstrap, "input_topic": topic, "verdict_topic": f"{topic}.verdicts",
               "dead_letter_topic": f"{topic}.dlq", "group_id": GROUP, "join_watchdog_s": WATCHDOG_S,
               "max_poll_interval_ms": 20_000, "session_timeout_ms": 10_000},
        batch={"max_records": 5, "max_wait_ms": 100},
        lake={"path": str(tmp_path / "lake")},
        sinks=["lake", "metrics"],
        pseudonym_key="watchdog-test-key",
    )
    metrics = PipelineMetrics()
    return Pipeline.from_settings(settings, metrics, Scorer([NoopDetector()], Pseudonymizer(b"k"), metrics)), metrics


def _make_revoke_hang(source: KafkaSource) -> None:
    """The fault: the current consumer's revoke callback never returns (its rejoin never completes)."""
    consumer = source._consumer
    listener = consumer._subscription.rebalance_listener

    async def never_returns(revoked) -> None:  # noqa: ANN001 - kafka-python's callback signature
        await consumer._net.sleep(3600)

    listener.on_partitions_revoked = never_returns


def test_a_rejoin_that_never_completes_is_replaced_and_every_record_is_consumed(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    topic = kafka_topic_factory(partitions=2)
    first, second = [_record(i) for i in range(40)], [_record(i) for i in range(40, 60)]
    _produce(kafka_bootstrap, topic, first)
    pipeline, metrics = _pipeline(kafka_bootstrap, topic, tmp_path)
    result: dict = {}

    def run() -> None:
        try:
            result["stats"] = pipeline.run(max_idle_s=8)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    while not pipeline.source.assignment:
        time.sleep(0.1)
    _make_revoke_hang(pipeline.source)
    # A second member joins: the first must rejoin, and its rejoin hangs (the fault).
    other = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=GROUP, enable_auto_commit=False,
                          max_poll_interval_ms=20_000, session_timeout_ms=10_000)
    deadline = time.monotonic() + 60
    while not metrics.registry.get_sample_value("mm_rebalances_total", {"event": "watchdog"}):
        assert time.monotonic() < deadline, "the watchdog never replaced the stuck consumer"
        other.poll(timeout_ms=200)  # stays a live member; never commits, so nothing it reads counts
    other.close(autocommit=False)
    _produce(kafka_bootstrap, topic, second)
    runner.join(timeout=120)
    assert not runner.is_alive(), "the stream never finished after the consumer was replaced"
    assert "error" not in result, result.get("error")
    assert set(_lake_ids(tmp_path)) == {r["request_id"] for r in first + second}
