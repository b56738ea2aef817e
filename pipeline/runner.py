"""The streaming job: consume -> decode -> detect -> sinks -> commit, in overlapping stages.

Guarantees:
- Nothing accepted is lost. Offsets are committed only after the dead letters and every sink
  flushed the batch, in input order.
- One record never stops a partition. A record that fails on its own (undecodable, a detector
  raises on it, a sink's ``check`` refuses it) is dead-lettered with its reason and reaches no
  sink; the rest of its batch goes on. One that crashes the process (a native crash while it is
  scored), or hangs its scoring past the deadline, is found by the scoring journal after a
  restart and dead-lettered the same way.
- Outages are waited out. A sink or broker that fails is retried with capped backoff, keeping the
  uncommitted batch (``mm_component_up`` and /healthz show it); the process exits with a one-line
  reason only when the outage outlasts ``stream.outage_deadline_s``, or when a detector is broken
  for every record (:class:`DetectorFailure`). A restart re-reads what was not committed: the lake
  and PostgreSQL are idempotent (offset range / request id); the verdicts topic may repeat the
  verdicts of those batches, and its consumers de-duplicate by ``request_id``. A quiet stream
  asks the broker for its end offsets (``_read_everything``), so a broker outage with nothing in
  flight is reported and bounded by the same deadline, and never counts as ``--max-idle`` time.
- Rebalances re-deliver every uncommitted record to its next owner (pipeline/source.py); a
  graceful rebalance drains and commits the batches in flight first, so it repeats nothing.

Stages: this thread polls and commits (the consumer is not thread-safe); a scoring thread decodes
and detects (with ``stream.scoring = "process"`` it hands the detection to a worker process,
pipeline/score_worker.py, and waits without the GIL; either way it journals the offsets it
scores, pipeline/scoring_journal.py, so that a record that crashes the process or hangs its
scoring is found after a restart); a sink thread writes and flushes. Queues between them are bounded by
``stream.max_in_flight_batches``, so batch N+1 is fetched and scored while batch N is flushed.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

from kafka import TopicPartition

from pipeline.deadletter import DeadLetters
from pipeline.memory import limit_malloc_arenas, settle_gc
from pipeline.metrics import PipelineMetrics
from pipeline.producer import TrackedProducer
from pipeline.score_worker import ProcessScorer, build_scorer
from pipeline.scoring import RecordError, Scorer
from pipeline.scoring_journal import ScoringJournal, journal_dir
from pipeline.settings import Settings
from pipeline.sinks.base import ScoredRecord, Sink
from pipeline.sinks.registry import build_sinks
from pipeline.source import KafkaSource, RawRecord, RebalanceHooks

log = logging.getLogger(__name__)

DEAD_LETTERS = "dead_letters"
CORRUPT_RECORD = "corrupt_record"  # the dead-letter reason of a record the consumer could not parse
BROKER = "kafka"  # the health component of the broker as the source sees it
# A quiet stream asks the broker this often whether it has read everything (its health while idle).
BROKER_CHECK_S = 10.0


class OutageError(RuntimeError):
    """A dependency stayed down past ``stream.outage_deadline_s``; nothing after it was committed."""


SCORING = "scoring"  # the component a hung scoring call is reported as (/healthz, mm_component_up)


class StalledCall(RuntimeError):
    """A sink call, or a batch's scoring, that has not returned for ``stream.sink_stall_s`` or
    ``stream.score_stall_s`` (shown on /healthz as its reason)."""


class _SendsWaited(Exception):
    """Raised inside a watched write (dead letters, a sink) that waited in vain for its destination."""


@dataclass
class RunStats:
    batches: int = 0
    records: int = 0
    verdicts: int = 0
    flagged: int = 0
    dead_letters: int = 0
    by_category: dict[str, int] = field(default_factory=dict)
    by_severity: dict[str, int] = field(default_factory=dict)
    by_dead_letter_reason: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    # Wall time during which at least one batch was being scored or flushed.
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


@dataclass
class _Scored:
    """One batch between the scoring and the sink stage."""

    batch: list[RawRecord]
    scored: list[ScoredRecord]
    dead: list[tuple[RawRecord, str, str]]
    started: float


@dataclass
class _Hook:
    """A rebalance hook run by the sink stage, in order with the batches around it."""

    run: Callable[[], None]


_STOP = object()


class Pipeline(RebalanceHooks):
    def __init__(
        self,
        settings: Settings,
        source: KafkaSource,
        scorer: Scorer | ProcessScorer,
        sinks: Sequence[Sink],
        dead_letters: DeadLetters,
        metrics: PipelineMetrics,
    ) -> None:
        self.settings = settings
        self.source = source
        source.hooks = self
        self.scorer = scorer
        # Inline, a native crash on one record ends this process; the journal finds that record
        # after a restart (pipeline/scoring_journal.py). A scoring process survives a crash
        # itself, but not a record that hangs it: the run ends at the deadline and a restart
        # re-read the batch and hung again, for good (2026-12-06). The journal finds that one too.
        self.journal = ScoringJournal(journal_dir(settings), settings.kafka.group_id)
        self.sinks = list(sinks)
        self.dead_letters = dead_letters
        self.metrics = metrics
        self.stats = RunStats()
        self._stop = threading.Event()
        limit = settings.stream.max_in_flight_batches
        self._to_score: queue.Queue = queue.Queue(maxsize=limit)
        self._to_sink: queue.Queue = queue.Queue(maxsize=limit)
        self._in_flight = 0
        self._changed = threading.Condition()
        self._failure: BaseException | None = None
        self._busy_until = 0.0
        self._broker_down_since: float | None = None  # see _read_everything
        self._last_unread: dict = {}
        # Per stage ("score", "sink"): the call in progress (component, monotonic start), set by
        # that stage and watched by this thread (_watch_calls); the ones reported as stalled.
        self._calls: dict[str, tuple[str, float]] = {}
        self._stalled: dict[str, tuple[str, float]] = {}

    @classmethod
    def from_settings(
        cls, settings: Settings, metrics: PipelineMetrics | None = None, scorer: Scorer | ProcessScorer | None = None
    ) -> Pipeline:
        """The stream as configured; ``scorer`` replaces the configured detectors (tests)."""
        limit_malloc_arenas()  # before the threads that would add arenas
        metrics = metrics or PipelineMetrics.from_settings(settings.metrics)
        scorer = scorer or build_scorer(settings, metrics)  # loads models before joining the group
        sinks = build_sinks(settings, metrics)
        dead_letters = DeadLetters(TrackedProducer(settings.kafka), settings.kafka.dead_letter_topic, metrics)
        source = KafkaSource(settings.kafka, settings.batch, metrics)
        return cls(settings, source, scorer, sinks, dead_letters, metrics)

    def stop(self) -> None:
        """Ask the loop to finish the batches in flight, commit them and return."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())

    def start_up(self) -> None:
        """What comes before the first poll joins the group: what detectors would load on their
        first finding, the warm-up (``stream.warm_up_records``), then the collector stops walking
        the objects of start-up (pipeline/memory.py; 62 us of the noop stream's ~450 us of CPU
        per record were collections before). ``run`` calls it; a benchmark may call it first to
        keep start-up out of its timing, and ``run``'s call then finds nothing left to do."""
        self.scorer.preload(self.settings.stream.warm_up_records)
        settle_gc()

    # -- the main loop: poll, hand out, commit ---------------------------------------------------

    def run(
        self,
        max_idle_s: float | None = None,
        max_records: int | None = None,
        on_batch: Callable[[RunStats], None] | None = None,
    ) -> RunStats:
        """Loop until stop(); ``max_idle_s`` (no records for that long, and the broker confirms
        every owned partition was read to its end) or ``max_records`` end a bounded run (demo,
        backfill, tests). ``on_batch`` gets the running stats after each commit (a progress
        display). Raises what stopped a stage."""
        # Here rather than in from_settings: a SIGTERM meanwhile finds the handlers installed.
        self.start_up()
        stages = [
            threading.Thread(target=self._stage, args=("score", self._to_score, self._score, self._to_sink), daemon=True),
            threading.Thread(target=self._stage, args=("sink", self._to_sink, self._sink, None), daemon=True),
        ]
        for t in stages:
            t.start()
        # Quiet (no records, nothing in flight) since; the broker is asked every check_every_s
        # whether that quiet means "read everything" (see _read_everything).
        idle_since = checked_at = time.monotonic()
        check_every_s = BROKER_CHECK_S if max_idle_s is None else min(BROKER_CHECK_S, max_idle_s)
        handed_out = 0
        committed_batches = 0
        try:
            while not self._stop.is_set() and self._failure is None:
                self._watch_calls()
                self._commit()
                if on_batch is not None and self.stats.batches != committed_batches:
                    committed_batches = self.stats.batches
                    on_batch(self.stats)
                if self._in_flight >= self.settings.stream.max_in_flight_batches:
                    with self._changed:
                        self._changed.wait_for(self._can_hand_out, timeout=0.1)
                    self.source.keep_alive()  # stays in the group while a slow batch finishes
                    continue
                batch = self.source.next_batch()
                if not batch:
                    now = time.monotonic()
                    if self._in_flight:
                        idle_since = checked_at = now  # finishing batches is not idleness
                    elif now - checked_at >= check_every_s:
                        checked_at = now
                        if not self._read_everything():
                            idle_since = time.monotonic()
                        elif max_idle_s is not None and now - idle_since >= max_idle_s:
                            break
                    continue
                idle_since = checked_at = time.monotonic()
                self._hand_out(batch)
                handed_out += len(batch)
                if max_records is not None and handed_out >= max_records:
                    break
            self._finish_in_flight()
            self._commit()
            if on_batch is not None and self.stats.batches != committed_batches:
                on_batch(self.stats)
        except BaseException as exc:
            # As a failed stage does: the stages discard what is left, and a rebalance (the
            # consumer's close below) does not wait for a batch stuck behind a hung sink call.
            self._fail(exc)
            raise
        finally:
            # 5 s in all: a stage stuck behind a sink call that never returns is left behind
            # (the stages are daemon threads, and what they held is not committed).
            until = time.monotonic() + 5
            try:
                self._to_score.put(_STOP, timeout=5)
            except queue.Full:
                log.warning("a stage did not take the stop; exiting without it")
            for t in stages:
                t.join(timeout=max(0.0, until - time.monotonic()))
            self.close()
        if self._failure is not None:
            raise self._failure
        return self.stats

    def _read_everything(self) -> bool:
        """Has this member read every partition it owns to the end the broker reports now?

        False while joining the group, while the broker holds records not read yet, during a
        broker outage, and at its first answer after one. So a broker that is down (or restarting
        and not answering yet) does not end a ``--max-idle`` run: the outage is logged once, shown
        on /healthz (component ``kafka``), and ends the run with :class:`OutageError` only past
        ``stream.outage_deadline_s``. Asked only while quiet (every ``BROKER_CHECK_S`` at most):
        one ListOffsets round trip.
        """
        try:
            unread = self.source.unread(timeout_s=self.settings.kafka.connect_timeout_s)
        except Exception as exc:  # noqa: BLE001 - no answer from the broker, whatever the cause, is an outage
            if self._broker_down_since is None:
                self._broker_down_since = time.monotonic()
                log.warning("kafka: the broker does not answer (%s); waiting for it", exc)
            self._down(BROKER, exc, self._broker_down_since)
            return False
        if self._broker_down_since is not None:
            self._up(BROKER, self._broker_down_since)
            self._broker_down_since = None
            # Not yet: the quiet interval starts now. A hung broker (SIGSTOP, a long GC pause)
            # blocked commits and polls for seconds at a time, and that time counted as quiet:
            # the run ended within 4 s of the broker's return, before records produced after it
            # were read (hostile check, 2026-12-04).
            return False
        if unread is None:
            return False  # joining (e.g. waiting out a crashed member's session)
        if unread and unread == self._last_unread:
            # The broker answers and reports the same unread range twice, a check interval apart,
            # with nothing fetched meanwhile: not records this member can read. Not seen; a guard
            # so that a bounded run cannot wait forever on it.
            log.info("kafka: end offsets past the positions but nothing to fetch: %s", unread)
            return True
        self._last_unread = unread
        return not unread

    def _can_hand_out(self) -> bool:
        return self._failure is not None or self._in_flight < self.settings.stream.max_in_flight_batches

    def _hand_out(self, item: list[RawRecord] | _Hook) -> None:
        with self._changed:
            self._in_flight += 1
        self.metrics.in_flight_batches.set(self._in_flight)
        if isinstance(item, list) and self.stats.first_batch_at is None:
            self.stats.first_batch_at = time.perf_counter()
        self._to_score.put(item)

    def _finish_in_flight(self) -> None:
        """Wait until every batch handed out is flushed (or a stage failed), staying in the group."""
        done = lambda: self._in_flight == 0 or self._failure is not None  # noqa: E731
        while True:
            with self._changed:
                if self._changed.wait_for(done, timeout=0.1):
                    return
            self._watch_calls()
            if self._stop.is_set() and self._stalled:
                # A stop must not wait for a call that may never return; its batch is re-read.
                component, since = next(iter(self._stalled.values()))
                raise OutageError(f"stopped while {component} was unavailable: "
                                  f"a call has not returned for {time.monotonic() - since:.0f} s")
            self.source.keep_alive()

    def _commit(self) -> None:
        committed = self.source.commit_done()
        if committed:
            self.metrics.health.up("kafka_commit")
            self.stats.last_commit_at = time.perf_counter()
        elif committed is False:
            self.metrics.health.down("kafka_commit", "offset commit failed; retried with the next commit")

    # -- rebalance hooks (pipeline/source.py calls them) -----------------------------------------

    def drained(self) -> bool:
        return self._in_flight == 0 or self._failure is not None

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Each sink's revoke hook; a failing one is logged and counted, never raised.

        Nothing is in flight here (see KafkaSource._on_revoked): every batch of these partitions
        was flushed and committed, so a hook only settles state those flushes already stored (the
        alerts' epochs fence the next owner out of it). It runs in kafka-python's rebalance,
        which turned an exception into "User rebalance callback throws an error" and ended the
        stream: one PostgreSQL blip during a rolling restart stopped every member (a hostile
        review, 2026-12-07)."""
        pairs = [(tp.topic, tp.partition) for tp in partitions]
        for sink in self.sinks:
            try:
                sink.on_revoked(pairs)
            except Exception as exc:  # noqa: BLE001 - see the docstring
                self.metrics.sink_errors.labels(sink.name).inc()
                log.warning("%s: its revoke hook failed (%r); the partitions go on to their next owner", sink.name, exc)

    def assigned(self, partitions: set[TopicPartition]) -> None:
        pairs = [(tp.topic, tp.partition) for tp in partitions]
        count = self.source.partition_count()

        def still_owned(sink: Sink) -> None:
            # Only what this member still owns: a rebalance during the wait may have given a
            # partition to another member, and the alerts' hook takes ownership (a new epoch),
            # which fenced the new owner out of its partition's alert state (a review, 2026-12-07).
            owned = {(tp.topic, tp.partition) for tp in self.source.assignment}
            if mine := [pair for pair in pairs if pair in owned]:
                sink.on_assigned(mine, count)

        def run() -> None:
            # Retried like a flush (an outage on /healthz, ended only by the deadline): a hook's
            # error ended the stream at once, the alert database's blip at a rebalance included
            # (a hostile review, 2026-12-07). A sink's hook is one transaction, so a retry is safe.
            for sink in self.sinks:
                self._retry(sink.name, partial(still_owned, sink))

        # Runs in the sink stage, before any batch handed out after it.
        self._hand_out(_Hook(run))

    # -- stages ------------------------------------------------------------------------------------

    def _stage(self, name: str, inbox: queue.Queue, work: Callable, outbox: queue.Queue | None) -> None:
        busy = self.metrics.stage_busy.labels(name)
        while True:
            item = inbox.get()
            if item is _STOP:
                if outbox is not None:
                    outbox.put(_STOP)
                return
            if self._failure is None:
                started = time.perf_counter()
                try:
                    result = work(item)
                except BaseException as exc:  # noqa: BLE001 - handed to run(), which re-raises it
                    log.error("%s stage failed: %r; nothing from this batch on is committed", name, exc)
                    self._fail(exc)
                    result = None
                busy.inc(time.perf_counter() - started)
                if outbox is not None and result is not None:
                    outbox.put(result)
                    continue
            with self._changed:  # finished, or discarded after a failure
                self._in_flight -= 1
                self._changed.notify_all()
            self.metrics.in_flight_batches.set(self._in_flight)

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            if self._failure is None:
                self._failure = exc
            self._changed.notify_all()

    def _score(self, item: list[RawRecord] | _Hook) -> _Scored | _Hook:
        """Decode, detect and check one batch; every record ends as a scored record or a dead letter."""
        if isinstance(item, _Hook):
            return item
        started = time.perf_counter()
        self.metrics.batch_records.observe(len(item))
        dead: list[tuple[RawRecord, str, str]] = []
        scored: list[ScoredRecord] = []
        scored_raws: list[RawRecord] = []
        max_bytes = self.settings.batch.max_record_bytes
        readable = [raw for raw in item if raw.unreadable is None]
        if len(readable) < len(item):  # records the consumer could not parse (source.py, _skip_unreadable)
            dead.extend((raw, CORRUPT_RECORD, raw.unreadable) for raw in item if raw.unreadable is not None)
        with self._calling(SCORING, stage="score"):
            results = self.journal.score(readable, lambda values: self.scorer.score_values(values, max_bytes),
                                         canary=self.scorer.score_canary)  # fmt: skip
        for raw, result in zip(readable, results, strict=True):
            if isinstance(result, RecordError):
                dead.append((raw, result.reason, result.detail))
                continue
            lg, verdict, verdict_json = result
            scored.append(ScoredRecord(lg, verdict, raw.position, verdict_json))
            scored_raws.append(raw)
        refused: dict[int, str] = {}
        for sink in self.sinks:
            for i, why in sink.check(scored).items():
                refused.setdefault(i, why)
        if refused:
            dead.extend((scored_raws[i], "sink_refused", why) for i, why in sorted(refused.items()))
            scored = [rec for i, rec in enumerate(scored) if i not in refused]
        return _Scored(item, scored, dead, started)

    def _sink(self, item: _Scored | _Hook) -> None:
        """Write and flush one batch everywhere (waiting out outages), then mark it done."""
        if isinstance(item, _Hook):
            item.run()
            return
        # Watched like a sink call: a send waits for the topic's metadata (a dead-letter topic
        # missing on a broker that does not create topics: 60 s per record, /healthz "ok"
        # throughout and the outage deadline overshot; a hostile review, 2026-12-07).
        def send_dead_letters() -> None:
            for raw, reason, detail in item.dead:
                log.info("dead-lettering %s-%d@%d: %s: %s", raw.position.topic, raw.position.partition,
                         raw.position.offset, reason, detail)  # fmt: skip
                self.dead_letters.send(raw, reason, detail)

        self._deliver(DEAD_LETTERS, send_dead_letters, self.dead_letters.waiting, self.dead_letters.flush)
        for sink in self.sinks:
            t0 = time.perf_counter()
            self._deliver(sink.name, partial(sink.write, item.scored), sink.waiting, sink.flush)
            self.metrics.sink_flush_duration.labels(sink.name).observe(time.perf_counter() - t0)
        self.source.mark_done(item.batch)
        self._count(item)

    def _deliver(self, component: str, write: Callable[[], None], waiting: Callable[[], bool],
                 flush: Callable[[], None]) -> None:  # fmt: skip
        """``write`` inside a watched call, then ``flush`` until it succeeds (:meth:`_retry`).

        A write that waited in vain for its destination (``waiting()``: a Kafka topic's metadata
        did not come; a dead letter's send was outside any watch until 2026-12-07) ends its
        watched call as a failure: ending it normally reported a recovery on /healthz and started
        the outage clock again at the flush (a review of this change)."""
        started = time.monotonic()
        try:
            with self._calling(component):
                write()
                if waiting():
                    raise _SendsWaited
        except _SendsWaited:
            self._retry(component, flush, down_since=started)
        else:
            self._retry(component, flush)

    def _retry(self, component: str, flush: Callable[[], None], down_since: float | None = None) -> None:
        """Call ``flush`` until it succeeds, backing off; raise OutageError past the deadline.
        ``down_since``: the component has been down since then already (the outage clock)."""
        cfg = self.settings.stream
        delay = cfg.retry_initial_s
        while True:
            started = time.monotonic()
            try:
                with self._calling(component):
                    flush()
            except Exception as exc:  # noqa: BLE001 - any failure of the sink itself is an outage to wait out
                down_since = down_since or started  # a call that hung before it failed counts
                self.metrics.sink_errors.labels(component).inc()
                self._down(component, exc, down_since, ahead_s=delay)
                log.warning("%s failed (%s); retrying in %.1f s, batch kept uncommitted", component, exc, delay)
                if self._stop.wait(delay):
                    # A stop during an outage ends the wait; the uncommitted batches are re-read later.
                    raise OutageError(f"stopped while {component} was unavailable: {exc}") from exc
                delay = min(delay * 2, cfg.retry_max_s)
                continue
            if down_since is not None:
                self._up(component, down_since)
            return

    @contextmanager
    def _calling(self, component: str, stage: str = "sink") -> Iterator[None]:
        """Around one call of a stage (a sink's write or flush, a batch's scoring), so that this
        thread can see it hang."""
        call = (component, time.monotonic())
        self._calls[stage] = call
        failed = True
        try:
            yield
            failed = False
        finally:
            self._calls.pop(stage, None)
            if self._stalled.get(stage) == call:
                del self._stalled[stage]
                if failed:  # _retry reports it from here, down since the call began
                    log.warning("%s: the call that hung failed after %.1f s", component, time.monotonic() - call[1])
                else:
                    self._up(component, call[1])

    def _watch_calls(self) -> None:
        """Report a sink call that has not returned for ``stream.sink_stall_s``, or a batch whose
        scoring has not finished for ``stream.score_stall_s``, as an outage of its component, and
        end the run (OutageError) once it outlasts ``stream.outage_deadline_s``.

        A hung PostgreSQL (every process SIGSTOPped for 60 s) blocked the sink stage without an
        error: /healthz said "ok" throughout and a 30 s deadline never fired; a stopped scoring
        worker did the same to the score stage (hostile check, 2026-12-04). Runs in the polling
        thread, which a hung stage does not block."""
        cfg = self.settings.stream
        for stage, call in list(self._calls.items()):
            component, since = call
            waited = time.monotonic() - since
            if waited < (cfg.score_stall_s if stage == "score" else cfg.sink_stall_s):
                continue
            if self._stalled.get(stage) != call:
                self._stalled[stage] = call
                log.warning("%s: a call has not returned for %.0f s; waiting for it", component, waited)
            self._down(component, StalledCall(f"a call has not returned for {waited:.0f} s"), since)

    def _down(self, component: str, exc: BaseException, down_since: float, ahead_s: float = 0.0) -> None:
        """Show ``component`` down on /healthz; raise OutageError once it is (or, ``ahead_s`` from
        now, would be) down past ``stream.outage_deadline_s``."""
        self.metrics.health.down(component, repr(exc))
        deadline, down_s = self.settings.stream.outage_deadline_s, time.monotonic() - down_since
        if deadline and down_s + ahead_s > deadline:
            raise OutageError(f"{component} unavailable for {down_s:.0f} s (deadline {deadline:.0f} s): {exc}") from exc

    def _up(self, component: str, down_since: float) -> None:
        log.warning("%s recovered after %.1f s", component, time.monotonic() - down_since)
        self.metrics.health.up(component)

    def _count(self, item: _Scored) -> None:
        s = self.stats
        s.batches += 1
        s.records += len(item.batch)
        s.verdicts += len(item.scored)
        s.dead_letters += len(item.dead)
        for _, reason, _ in item.dead:
            s.by_dead_letter_reason[reason] = s.by_dead_letter_reason.get(reason, 0) + 1
        for rec in item.scored:
            v = rec.verdict
            s.by_severity[v.severity.value] = s.by_severity.get(v.severity.value, 0) + 1
            if v.flagged:
                s.flagged += 1
                for c in v.categories:
                    s.by_category[c.value] = s.by_category.get(c.value, 0) + 1
        ended = time.perf_counter()
        self.metrics.batch_duration.observe(ended - item.started)
        # Batches overlap: busy time is the union of their [scoring start, flushed] intervals.
        s.busy_s += max(0.0, ended - max(item.started, self._busy_until))
        self._busy_until = ended

    def close(self) -> None:
        # The journal first: closing a scoring process makes a call that hangs on a record return
        # with an error, and an entry emptied then would no longer point at that record (the
        # next start re-read the batch and hung again; the process-scoring hang test, 1 run in 2).
        closers = [self.journal.close, *(s.close for s in self.sinks), self.dead_letters.close, self.scorer.close,
                   self.source.close]  # fmt: skip
        for closer in closers:
            try:
                closer()
            except Exception:  # noqa: BLE001 - shutdown continues; the failure is logged
                log.exception("error while closing %s", closer)
