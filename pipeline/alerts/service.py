"""Builds the alerting parts from AlertSettings (used by the sink, the CLI and the bench)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.engine import Engine

from pipeline.alerts.delivery import Dispatcher
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.grouping import Notifier
from pipeline.alerts.metrics import AlertMetrics
from pipeline.alerts.receivers.base import build_receivers
from pipeline.alerts.rules import AlertRules, load_rules
from pipeline.alerts.settings import AlertSettings
from pipeline.alerts.state import create_db_engine
from pipeline.alerts import state as state_db
from pipeline.schemas import MisuseVerdict
from pipeline.sinks.base import ScoredRecord


@dataclass
class Alerting:
    """Engine + notifier + dispatcher over one alert database; thread-safe entry points."""

    settings: AlertSettings
    rules: AlertRules
    db: Engine
    metrics: AlertMetrics
    engine: AlertEngine
    notifier: Notifier
    dispatcher: Dispatcher
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_tick: float = 0.0
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _dirty_offsets: set[tuple[str, int]] = field(default_factory=set)
    # Time-based re-evaluation needs no finer grain than this; the dispatcher ticks faster.
    TICK_EVERY_S = 1.0

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
        metrics = AlertMetrics(registry)
        engine = AlertEngine(rules, clock=clock, metrics=metrics)
        if evaluate:
            with db.connect() as conn:
                engine.load(conn)
        notifier = Notifier(db, rules, {r.name: r.send_resolved for r in settings.receivers}, clock=clock, metrics=metrics)
        self_ref: list[Alerting] = []
        dispatcher = Dispatcher(
            db,
            notifier,
            build_receivers(settings.receivers),
            settings.delivery,
            metrics=metrics,
            clock=clock,
            on_tick=(lambda: self_ref[0].tick()) if evaluate else None,
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
        with self._lock:
            for rec in records:
                pos = rec.position
                if pos is not None:
                    key = (pos.topic, pos.partition)
                    if pos.offset <= self._offsets.get(key, -1):
                        continue
                    self._offsets[key] = pos.offset
                    self._dirty_offsets.add(key)
                fresh.append(rec.verdict)
            self.engine.observe(fresh)

    def observe(self, verdicts: Sequence[MisuseVerdict]) -> None:
        with self._lock:
            self.engine.observe(verdicts)

    def commit(self) -> None:
        """Make every alert decided so far durable (one transaction), then wake the dispatcher."""
        with self._lock:
            if not self.engine.has_changes and not self._dirty_offsets:
                return
            with self.db.begin() as conn:
                self.engine.save(conn)
                rows = [{"topic": k[0], "partition": k[1], "offset": self._offsets[k]} for k in sorted(self._dirty_offsets)]
                state_db.upsert(conn, state_db.source_offsets, rows, ["topic", "partition"])
            self._dirty_offsets.clear()
        self.dispatcher.wake()

    def tick(self) -> None:
        """Time-based re-evaluation (runs in the dispatcher thread, at most every TICK_EVERY_S)."""
        if time.monotonic() - self._last_tick < self.TICK_EVERY_S:
            return
        self._last_tick = time.monotonic()
        with self._lock:
            self.engine.tick()
            if self.engine.has_changes:
                with self.db.begin() as conn:
                    self.engine.save(conn)

    def close(self) -> None:
        self.dispatcher.stop()
        self.db.dispose()
