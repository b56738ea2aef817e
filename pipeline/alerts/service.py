"""Builds the alerting parts from AlertSettings (used by the sink, the CLI and the bench)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import cachetools
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from pipeline.alerts.alertmanager import RECEIVER_LABEL, AlertmanagerPusher
from pipeline.alerts.delivery import Dispatcher, Stage
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.grouping import Notifier
from pipeline.alerts.metrics import AlertMetrics
from pipeline.alerts.model import GeneratorLinks
from pipeline.alerts.receivers.base import build_receivers
from pipeline.alerts.rules import AlertRules, ModelHoppingRule, RateRule, RepeatOffenderRule, VerdictRule, load_rules
from pipeline.alerts.settings import AlertSettings
from pipeline.alerts.state import create_db_engine
from pipeline.alerts.transport import alert_client
from pipeline.alerts import state as state_db
from pipeline.schemas import MisuseVerdict
from pipeline.sinks.base import ScoredRecord
from pipeline.units import DAY_S

log = logging.getLogger(__name__)
Partition = tuple[str, int]  # (topic, partition)

# Request ids remembered to count a copy once: about 150 bytes each, 15 MB at most.
SEEN_REQUESTS = 100_000


class HalfAppliedBatch(RuntimeError):
    """The engine raised part-way through a batch: its state holds part of that batch, and must
    not be saved (a restart loads the last commit and re-reads the batch)."""


def dedup_window_s(rules: AlertRules) -> float:
    """How long a verdict can still change what a rule decides: its window, the repeat offender
    score's five half-lives (3% left), a verdict alert's resolve_after; at least a minute, at
    most a day."""
    spans = [60.0]
    for rule in rules.rules:
        if isinstance(rule, RateRule):
            spans.append(rule.history_s)
        elif isinstance(rule, RepeatOffenderRule):
            spans.append(5 * rule.half_life)
        elif isinstance(rule, ModelHoppingRule):
            spans.append(rule.window)
        elif isinstance(rule, VerdictRule):
            spans.append(rule.resolve_after)
    return min(max(spans), DAY_S)


@dataclass
class Alerting:
    """Engine + notifying stage + dispatcher over one alert database; thread-safe entry points.

    The stage is the Alertmanager pusher (``notify: alertmanager``) or the direct notifier.
    Rebalances: the runner calls :meth:`on_revoked` before giving partitions up and
    :meth:`on_assigned` after getting them (see docs/alerting.md, "Scaling out")."""

    settings: AlertSettings
    rules: AlertRules
    db: Engine
    metrics: AlertMetrics
    engine: AlertEngine
    notifier: Stage
    dispatcher: Dispatcher
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_tick: float = 0.0
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _dirty_offsets: set[tuple[str, int]] = field(default_factory=set)
    # (topic, partition) -> the ownership epoch this replica took on assignment (see state.py).
    _epochs: dict[tuple[str, int], int] = field(default_factory=dict)
    _owner_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    # (partition, request_id) of verdicts seen lately: see observe_records. Built in __post_init__.
    _seen: cachetools.TTLCache = field(init=False)
    # Why the in-memory state may no longer be saved (see observe_records); None while it may.
    failed_batch: str | None = None
    # Time-based re-evaluation needs no finer grain than this; the dispatcher ticks faster.
    TICK_EVERY_S = 1.0

    def __post_init__(self) -> None:
        self._seen = cachetools.TTLCache(maxsize=SEEN_REQUESTS, ttl=dedup_window_s(self.rules))

    @classmethod
    def build(
        cls,
        settings: AlertSettings,
        registry: CollectorRegistry | None = None,
        *,
        rules: AlertRules | None = None,
        clock: Callable[[], float] = time.time,
        evaluate: bool = True,
    ) -> Alerting:
        """Validate rules against the configured receivers, open the database, restore state.

        ``evaluate=False`` is for a standalone dispatcher: it must not run the rules' time-based
        re-evaluation, which belongs to the stream process that owns the windows."""
        names = [r.name for r in settings.receivers]
        if rules is None:
            rules = load_rules(settings.rules_file, names)
        else:
            rules.check_receivers(names)
        db = create_db_engine(settings.db_url.get_secret_value())
        metrics = AlertMetrics(registry, receivers=[RECEIVER_LABEL] if settings.notify == "alertmanager" else names)
        engine = AlertEngine(rules, clock=clock, metrics=metrics)
        if evaluate:
            with db.connect() as conn:
                engine.load(conn)
        links = GeneratorLinks(base_url=settings.generator_url)
        client = alert_client()
        notifier: Stage
        if settings.notify == "alertmanager":
            notifier = AlertmanagerPusher(db, settings.alertmanager, links, metrics=metrics, clock=clock, client=client)
        else:
            notifier = Notifier(
                db, rules, {r.name: r.send_resolved for r in settings.receivers}, clock=clock, metrics=metrics,
                links=links, external_url=settings.external_url, max_alerts={r.name: r.max_alerts for r in settings.receivers},
            )
        self_ref: list[Alerting] = []
        dispatcher = Dispatcher(
            db,
            notifier,
            build_receivers(settings.receivers),
            settings.delivery,
            metrics=metrics,
            clock=clock,
            on_tick=(lambda: self_ref[0].tick()) if evaluate else None,
            client=client,
        )
        alerting = cls(settings, rules, db, metrics, engine, notifier, dispatcher)
        self_ref.append(alerting)
        if evaluate:
            with db.connect() as conn:
                t = state_db.source_offsets
                for topic, partition, offset in conn.execute(sa.select(t.c.topic, t.c.partition, t.c.offset)):
                    alerting._offsets[(topic, partition)] = offset
        return alerting

    def observe_records(self, records: Sequence[ScoredRecord]) -> None:
        """Feed the verdicts of a stream batch, skipping records already reflected in the
        committed state (a batch re-read after a crash between our commit and Kafka's)."""
        fresh = []
        partitions = []
        offsets: dict[Partition, int] = {}
        seen: set[tuple[int, str]] = set()
        with self._lock:
            if self.failed_batch is not None:
                raise HalfAppliedBatch(self.failed_batch)
            for rec in records:
                pos = rec.position
                if pos is not None:
                    key = (pos.topic, pos.partition)
                    if not self.engine.owns(pos.partition):
                        # Polled before a rebalance took the partition away: its new owner reads it.
                        log.warning("alerts: record of %s-%d not owned here, skipped", pos.topic, pos.partition)
                        continue
                    if pos.offset <= offsets.get(key, self._offsets.get(key, -1)):
                        continue
                    offsets[key] = pos.offset
                # The same record produced twice (a producer's retry, a gateway's spill replayed
                # after an outage) has a new offset and the same request_id, the contract's
                # idempotency key: count it once. It was counted twice, and two high verdicts
                # replayed made a repeat offender fire (an on-call review, 2026-12-06).
                partition = pos.partition if pos is not None else 0
                request = (partition, rec.verdict.request_id)
                if request in self._seen or request in seen:
                    continue
                seen.add(request)
                fresh.append(rec.verdict)
                partitions.append(partition)
            # Offsets and request ids move on only once the engine has counted the batch. They
            # moved first: when observe raised, the runner closed the sink, close() committed the
            # batch's offsets, and after the restart the re-read batch was skipped as counted, its
            # alerts never fired (a hostile review, 2026-12-07). A raise part-way leaves the
            # engine holding some of the batch and not the rest, so from then on nothing of this
            # state is saved (commit() raises, the sink's close() skips it): the restart loads the
            # last commit and counts the batch once.
            try:
                self.engine.observe(fresh, partitions)
            except BaseException as exc:
                self.failed_batch = f"alert state not saved: evaluating a batch failed part-way ({type(exc).__name__}: {exc})"
                raise
            self._offsets.update(offsets)
            self._dirty_offsets.update(offsets)
            for request in seen:
                self._seen[request] = True

    def observe(self, verdicts: Sequence[MisuseVerdict]) -> None:
        with self._lock:
            self.engine.observe(verdicts)

    def on_assigned(self, partitions: Iterable[Partition], partition_count: int) -> None:
        """Kafka assigned ``partitions`` (of a topic with ``partition_count`` partitions): load
        their rule state, alerts and last input offsets, which another replica may have advanced
        since this one last held them."""
        assigned = sorted(set(partitions))
        try:
            self._assign(assigned, partition_count)
        except BaseException:
            # The transaction rolled back (its COMMIT failed: the database blip the runner retries
            # the hook through), but the epochs and the engine's ownership were already changed
            # in memory: a partition the retry no longer held stayed owned here, at the epoch its
            # next owner also took, so the fence missed and this replica's saves overwrote that
            # owner's state (a review, 2026-12-07). Nothing of a failed attempt is kept.
            with self._lock:
                self._forget(assigned)
            raise
        log.info("alerts: own partitions %s", [p for _, p in assigned])

    def _assign(self, assigned: list[Partition], partition_count: int) -> None:
        with self._lock, self.db.begin() as conn:
            # Take ownership first (a new epoch fences the previous owner out), then read the
            # state it committed; one transaction, so nothing it writes afterwards counts.
            owners = state_db.partition_owners
            for topic, p in assigned:
                row = conn.execute(
                    sa.select(owners.c.epoch).where(owners.c.topic == topic, owners.c.partition == p).with_for_update()
                ).first()
                epoch = (row[0] if row is not None else 0) + 1
                state_db.upsert(
                    conn, owners,
                    [{"topic": topic, "partition": p, "epoch": epoch, "owner": self._owner_id, "updated_at": time.time()}],
                    ["topic", "partition"],
                )
                self._epochs[(topic, p)] = epoch
            self.engine.assign(conn, {p for _, p in assigned}, partition_count)
            t = state_db.source_offsets
            for topic, p in assigned:
                self._offsets.pop((topic, p), None)
                self._dirty_offsets.discard((topic, p))
                row = conn.execute(sa.select(t.c.offset).where(t.c.topic == topic, t.c.partition == p)).first()
                if row is not None:
                    self._offsets[(topic, p)] = row[0]

    def on_revoked(self, partitions: Iterable[Partition]) -> None:
        """Kafka is taking ``partitions`` away: commit their state with their offsets (one
        transaction, as every flush), then forget them so the next owner's writes are never
        overwritten by ours."""
        revoked = sorted(set(partitions))
        try:
            if self.failed_batch is None:  # else the last commit stands: the next owner re-reads the rest
                self.commit()
        finally:
            # Forgotten even when the commit failed (the database down at the rebalance; the
            # runner logs it): they are another member's now, whatever this one could save.
            with self._lock:
                self._forget(revoked)

    def _forget(self, partitions: Sequence[Partition]) -> None:
        self.engine.release({p for _, p in partitions})
        for key in partitions:
            self._offsets.pop(key, None)
            self._dirty_offsets.discard(key)
            self._epochs.pop(key, None)

    def _save(self, conn: sa.Connection) -> None:
        """Write rule state and input offsets of the partitions this replica still owns.

        Runs with the lock held, in the caller's transaction. A partition whose epoch moved on
        was given to another replica behind our back (we missed heartbeats): its state here is
        stale, so it is dropped instead of written, and its records are the new owner's."""
        if self._epochs:
            owners = state_db.partition_owners
            keys = sorted(self._epochs)
            current = {
                (r[0], r[1]): r[2]
                for r in conn.execute(
                    sa.select(owners.c.topic, owners.c.partition, owners.c.epoch)
                    .where(owners.c.partition.in_([p for _, p in keys]))
                    .with_for_update()
                )
            }
            fenced = [k for k in keys if current.get(k) != self._epochs[k]]
            if fenced:
                log.warning("alerts: partitions %s now belong to another replica; dropping their unsaved state", fenced)
                self._forget(fenced)
        self.engine.save(conn)
        rows = [{"topic": k[0], "partition": k[1], "offset": self._offsets[k]} for k in sorted(self._dirty_offsets)]
        state_db.upsert(conn, state_db.source_offsets, rows, ["topic", "partition"])

    def _write(self) -> None:
        """:meth:`_save` in one transaction. What it wrote is marked saved only once the COMMIT
        has succeeded: after a failed one (connection lost, disk full) the runner retries
        :meth:`commit`, which must write the same changes again, not find none and let the Kafka
        offsets be committed over an alert that exists only in memory."""
        with self.db.begin() as conn:
            self._save(conn)
        self.engine.mark_saved()
        self._dirty_offsets.clear()

    def commit(self) -> None:
        """Make every alert decided so far durable (one transaction), then wake the dispatcher."""
        with self._lock:
            if self.failed_batch is not None:
                raise HalfAppliedBatch(self.failed_batch)
            if not self.engine.has_changes and not self._dirty_offsets:
                return
            self._write()
        self.dispatcher.wake()

    def tick(self) -> None:
        """Time-based re-evaluation (runs in the dispatcher thread, at most every TICK_EVERY_S)."""
        if time.monotonic() - self._last_tick < self.TICK_EVERY_S:
            return
        # The dispatcher thread must not queue behind a batch the sink is evaluating: notifying
        # what is already committed matters more than re-evaluating now. Try again next loop.
        if not self._lock.acquire(blocking=False):
            return
        self._last_tick = time.monotonic()
        try:
            if self.failed_batch is not None:  # nothing of this state may be saved (observe_records)
                return
            with self.db.connect() as conn:
                changed = self.engine.refresh_foreign(conn, self.engine.now())
            self.engine.evaluate_owned_rates(self.engine.now(), changed)
            self.engine.tick()
            if self.engine.has_changes:
                self._write()
        finally:
            self._lock.release()

    def close(self) -> None:
        self.dispatcher.stop()
        self.db.dispose()
