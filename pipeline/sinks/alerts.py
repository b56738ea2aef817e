"""Alerts sink: feeds every verdict to the alert engine; flush() commits the decisions.

write() evaluates the rules in memory; flush() writes alerts, rule state and the last input
offset per partition to the alert database in one transaction, so Kafka offsets are committed
only after the alerts are durable, and a batch replayed after a crash in between is recognised by
its offsets and not counted twice in windows and risk scores. Delivery is
asynchronous: a dispatcher thread of this process (or a standalone ``misuse-monitor alerts
dispatch``) groups them into the outbox and sends them. Only the verdict reaches the engine,
never the inference log, so no prompt text can end up in an alert.
"""

from __future__ import annotations

import logging

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Self

from pipeline.alerts.service import Alerting
from pipeline.sinks.base import ScoredRecord, Sink

if TYPE_CHECKING:
    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import Settings


log = logging.getLogger(__name__)


class AlertsSink(Sink):
    name = "alerts"

    def __init__(self, alerting: Alerting, *, run_dispatcher: bool) -> None:
        self.alerting = alerting
        self._run_dispatcher = run_dispatcher
        if run_dispatcher:
            alerting.dispatcher.start()

    @classmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        from pipeline.alerts.settings import NO_RECEIVERS

        alert_settings = settings.alerts
        if alert_settings.notifies_nobody:
            # Allowed (decisions kept in the alert database only), but said: it was silent.
            log.warning("%s; they are kept in the alert database only", NO_RECEIVERS)
        alerting = Alerting.build(alert_settings, metrics.registry)
        return cls(alerting, run_dispatcher=alert_settings.run_dispatcher)

    def write(self, records: Sequence[ScoredRecord]) -> None:
        self.alerting.observe_records(records)

    def flush(self) -> None:
        self.alerting.commit()
        if not self._run_dispatcher:
            # No dispatcher thread here: run the time-based evaluation (and, across replicas,
            # the rate keys this replica owns) from the stream itself, at most once a second.
            self.alerting.tick()

    def on_assigned(self, partitions: Iterable[tuple[str, int]], partition_count: int) -> None:
        """Rebalance hook (runner): load the rule state of newly assigned input partitions."""
        self.alerting.on_assigned(partitions, partition_count)

    def on_revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Rebalance hook (runner): commit and release the state of revoked input partitions."""
        self.alerting.on_revoked(partitions)

    def close(self) -> None:
        # The runner closes every sink after one raised. After a write that failed part-way the
        # engine holds half a batch: committing it saved that batch's offsets, and the batch
        # re-read after the restart was skipped (see Alerting.observe_records). The last commit
        # stands then.
        if self.alerting.failed_batch is None:
            self.alerting.commit()
        self.alerting.close()
