"""Alerting: rules over verdicts, Alertmanager-style grouping, and durable signed delivery.

Flow: :class:`~pipeline.alerts.engine.AlertEngine` turns verdicts into alerts (state in the
alert database), :class:`~pipeline.alerts.grouping.Notifier` groups, deduplicates, silences and
inhibits them into notifications in the outbox, and
:class:`~pipeline.alerts.delivery.Dispatcher` delivers the outbox to the receivers.
See docs/alerting.md. Nothing here runs at import time.
"""
