"""The streaming job: consume -> decode -> detect -> sinks -> commit, one micro-batch at a time.

Delivery guarantee: at-least-once into every sink. Offsets are committed only after the
dead letters and every sink flushed; if anything raises, the batch is not committed and
the process stops, so a restart (or the group's next owner) re-reads it. The lake and
PostgreSQL sinks are idempotent (by offset range / request id), so a replay leaves no
duplicate there; topic consumers de-duplicate by ``request_id``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pipeline.deadletter import DeadLetters
from pipeline.decode import DecodeError, decode_log
from pipeline.metrics import PipelineMetrics
from pipeline.producer import TrackedProducer
from pipeline.schemas import InferenceLog
from pipeline.scoring import Scorer
from pipeline.settings import Settings
from pipeline.sinks.base import ScoredRecord, Sink
from pipeline.sinks.registry import build_sinks
from pipeline.source import KafkaSource, RawRecord

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    batches: int = 0
    records: int = 0
    verdicts: int = 0
    flagged: int = 0
    dead_letters: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    busy_s: float = 0.0
    # perf_counter() when the first batch arrived and when the last one was committed.
    first_batch_at: float | None = None
    last_commit_at: float | None = None

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def active_s(self) -> float:
        """From the first batch to the last commit: end-to-end time, start-up and idle tail excluded."""
        if self.first_batch_at is None or self.last_commit_at is None:
            return 0.0
        return self.last_commit_at - self.first_batch_at


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        source: KafkaSource,
        scorer: Scorer,
        sinks: Sequence[Sink],
        dead_letters: DeadLetters,
        metrics: PipelineMetrics,
    ) -> None:
        self.settings = settings
        self.source = source
        self.scorer = scorer
        self.sinks = list(sinks)
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.stats = RunStats()
        self._stop = threading.Event()

    @classmethod
    def from_settings(cls, settings: Settings, metrics: PipelineMetrics | None = None) -> Pipeline:
        metrics = metrics or PipelineMetrics()
        scorer = Scorer.from_settings(settings, metrics)  # loads models before joining the group
        sinks = build_sinks(settings, metrics)
        dead_letters = DeadLetters(TrackedProducer(settings.kafka), settings.kafka.dead_letter_topic, metrics)
        source = KafkaSource(settings.kafka, settings.batch, metrics)
        return cls(settings, source, scorer, sinks, dead_letters, metrics)

    def stop(self) -> None:
        """Ask the loop to finish the current batch, commit it and return."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def run(self, max_idle_s: float | None = None, max_records: int | None = None) -> RunStats:
        """Loop until stop(); ``max_idle_s`` (no records while owning partitions) or
        ``max_records`` end a bounded run (demo, backfill, tests)."""
        idle_since = time.monotonic()
        try:
            while not self._stop.is_set():
                batch = self.source.next_batch()
                if not batch:
                    if not self.source.assignment:
                        # Still joining the group (e.g. waiting out a crashed member's
                        # session): that is not idleness.
                        idle_since = time.monotonic()
                    elif max_idle_s is not None and time.monotonic() - idle_since > max_idle_s:
                        break
                    continue
                idle_since = time.monotonic()
                self.process(batch)
                if not self.source.commit(batch):
                    log.warning("batch of %d records not committed; it will be re-read", len(batch))
                self.stats.last_commit_at = time.perf_counter()
                if max_records is not None and self.stats.records >= max_records:
                    break
        finally:
            self.close()
        return self.stats

    def process(self, batch: Sequence[RawRecord]) -> list[ScoredRecord]:
        """Decode, detect and hand one batch to every sink and flush them all."""
        started = time.perf_counter()
        if self.stats.first_batch_at is None:
            self.stats.first_batch_at = started
        self.metrics.batch_records.observe(len(batch))
        good: list[tuple[RawRecord, InferenceLog]] = []
        for raw in batch:
            try:
                good.append((raw, decode_log(raw.value, self.settings.batch.max_record_bytes)))
            except DecodeError as exc:
                log.info("dead-lettering %s-%d@%d: %s", raw.position.topic, raw.position.partition, raw.position.offset, exc)
                self.dead_letters.send(raw, exc)
                self.stats.dead_letters += 1
        logs = [lg for _, lg in good]
        verdicts = self.scorer.score(logs) if logs else []
        scored = [
            ScoredRecord(log=lg, verdict=v, position=raw.position)
            for (raw, lg), v in zip(good, verdicts, strict=True)
        ]
        self.dead_letters.flush()
        for sink in self.sinks:
            t0 = time.perf_counter()
            try:
                sink.write(scored)
                sink.flush()
            except Exception:
                self.metrics.sink_errors.labels(sink.name).inc()
                raise
            finally:
                self.metrics.sink_flush_duration.labels(sink.name).observe(time.perf_counter() - t0)
        self._count(batch, scored)
        elapsed = time.perf_counter() - started
        self.stats.busy_s += elapsed
        self.metrics.batch_duration.observe(elapsed)
        return scored

    def _count(self, batch: Sequence[RawRecord], scored: Sequence[ScoredRecord]) -> None:
        s = self.stats
        s.batches += 1
        s.records += len(batch)
        s.verdicts += len(scored)
        for rec in scored:
            v = rec.verdict
            s.by_severity[v.severity.value] = s.by_severity.get(v.severity.value, 0) + 1
            if v.flagged:
                s.flagged += 1
                for c in v.categories:
                    s.by_category[c.value] = s.by_category.get(c.value, 0) + 1

    def close(self) -> None:
        for closer in (*(s.close for s in self.sinks), self.dead_letters.close, self.scorer.close, self.source.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - shutdown continues; the failure is logged
                log.exception("error while closing %s", closer)
