"""A sink's rebalance hook that fails (the alert database's blip at a rebalance) is an outage to
wait out, never the end of the stream (a hostile review, 2026-12-07).

The source is scripted: a real broker cannot time a database error into a rebalance. The
rebalance itself runs for real in tests/integration/test_stream_chaos.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
from kafka import TopicPartition

from pipeline.metrics import PipelineMetrics
from pipeline.runner import Pipeline
from pipeline.scoring import RecordError
from pipeline.settings import Settings
from pipeline.sinks.base import Sink, SourcePosition
from pipeline.source import RawRecord

TP = TopicPartition("logs", 0)


class AssigningSource:
    """Assigns ``logs-0`` before its first batch of three records (as KafkaSource._reposition
    calls the hook after a rebalance), then has nothing more."""

    def __init__(self) -> None:
        self.hooks = None
        self.batches = 0
        self.done: list[int] = []
        self.owned = {TP}

    def next_batch(self) -> list[RawRecord]:
        self.batches += 1
        if self.batches == 1:
            self.hooks.assigned({TP})
            return [RawRecord(SourcePosition("logs", 0, i), None, b"{}", (), 0) for i in range(3)]
        time.sleep(0.02)
        return []

    def keep_alive(self) -> None:
        pass

    def mark_done(self, records: list[RawRecord]) -> None:
        self.done.extend(r.position.offset for r in records)

    def commit_done(self) -> None:
        return None

    def unread(self, timeout_s: float) -> dict:
        return {}

    def partition_count(self) -> int:
        return 1

    @property
    def assignment(self) -> set[TopicPartition]:  # a property, as KafkaSource's
        return set(self.owned)

    def close(self) -> None:
        pass


class DecodeErrors:
    """Every record a dead letter: the hooks, not the detectors, are under test."""

    score_canary = None

    def preload(self, n: int) -> None:
        pass

    def score_values(self, values: list[bytes], max_bytes: int) -> list[RecordError]:
        return [RecordError("decode_error", "scripted") for _ in values]

    def close(self) -> None:
        pass


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[int] = []

    def send(self, raw: RawRecord, reason: str, detail: str) -> None:
        self.sent.append(raw.position.offset)

    def waiting(self) -> bool:
        return False

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class BlippingSink(Sink):
    """Its hooks raise the first ``failures`` times, as SQLAlchemy does while PostgreSQL restarts."""

    name = "alerts"

    def __init__(self, failures: int, on_failure: object = None) -> None:
        self.failures = failures
        self.assigned_calls = 0
        self.on_failure = on_failure

    @classmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> BlippingSink:  # pragma: no cover - not built from settings here
        return cls(0)

    def on_assigned(self, partitions: list[tuple[str, int]], partition_count: int) -> None:
        self.assigned_calls += 1
        if self.assigned_calls <= self.failures:
            if self.on_failure is not None:
                self.on_failure()
            raise ConnectionError("could not connect to server: Connection refused")

    def on_revoked(self, partitions: list[tuple[str, int]]) -> None:
        raise ConnectionError("could not connect to server: Connection refused")

    def write(self, records: list) -> None:
        pass

    def flush(self) -> None:
        pass


def _settings(tmp_path: Path, **stream: float) -> Settings:
    return Settings(stream={"journal_dir": str(tmp_path / "journal"), "retry_initial_s": 0.05, **stream})


def test_an_assign_hook_that_fails_is_retried_and_the_batch_after_it_goes_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, sink, dead = AssigningSource(), BlippingSink(failures=2), DeadLetters()
    pipeline = Pipeline(_settings(tmp_path, outage_deadline_s=300), source, DecodeErrors(), [sink], dead, PipelineMetrics())
    pipeline.run(max_idle_s=0.5)
    assert sink.assigned_calls == 3  # two failures, then it held
    assert dead.sent == [0, 1, 2] and source.done == [0, 1, 2]  # the batch after the hook was not lost
    warnings = [r.getMessage() for r in caplog.records if r.name == "pipeline.runner"]
    assert sum("alerts failed" in w and "Connection refused" in w for w in warnings) == 2, warnings
    assert any("alerts recovered after" in w for w in warnings), warnings


def test_an_assign_hook_down_past_the_deadline_ends_the_run_with_the_reason(tmp_path: Path) -> None:
    from pipeline.runner import OutageError

    source, sink = AssigningSource(), BlippingSink(failures=10**6)
    settings = _settings(tmp_path, outage_deadline_s=0.3, retry_max_s=0.1)
    pipeline = Pipeline(settings, source, DecodeErrors(), [sink], DeadLetters(), PipelineMetrics())
    with pytest.raises(OutageError, match=r"alerts unavailable for .* \(deadline 0 s\): .*Connection refused"):
        pipeline.run(max_idle_s=5)
    assert source.done == []  # nothing after the hook was marked done


def test_a_partition_revoked_while_its_assign_hook_waits_is_not_taken_back(tmp_path: Path) -> None:
    """The alerts' hook takes ownership (a new epoch): retried for a partition that a rebalance
    meanwhile gave to another member, it fenced that member out of the partition's alert state."""
    source = AssigningSource()
    sink = BlippingSink(failures=1, on_failure=source.owned.clear)  # revoked while the database is down
    pipeline = Pipeline(_settings(tmp_path, outage_deadline_s=300), source, DecodeErrors(), [sink], DeadLetters(), PipelineMetrics())
    pipeline.run(max_idle_s=0.5)
    assert sink.assigned_calls == 1  # the failed attempt only: the retry found nothing of its own


def test_the_scripted_source_answers_as_kafka_source_does() -> None:
    """The scripted source stands in for KafkaSource: a method where KafkaSource has a property
    let the first version of the owned-partitions check pass here and spin on every real stream."""
    import inspect

    from pipeline.source import KafkaSource

    for name in ("assignment",):
        assert type(inspect.getattr_static(KafkaSource, name)) is type(inspect.getattr_static(AssigningSource, name))
    for name in ("next_batch", "keep_alive", "mark_done", "commit_done", "unread", "partition_count", "close"):
        assert callable(getattr(KafkaSource, name))


def test_a_revoke_hook_that_fails_is_logged_and_counted_not_raised_into_the_consumer(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = PipelineMetrics()
    pipeline = Pipeline(_settings(tmp_path), AssigningSource(), DecodeErrors(), [BlippingSink(0)], DeadLetters(), metrics)
    with caplog.at_level(logging.WARNING, logger="pipeline.runner"):
        pipeline.revoked({TP})  # kafka-python's rebalance ended the stream on any exception from here
    assert any("alerts: its revoke hook failed" in r.getMessage() for r in caplog.records)
    assert metrics.sink_errors.labels("alerts")._value.get() == 1
