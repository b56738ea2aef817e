"""The tee gateway: what it proxies, what it fails to log, and what it refuses.

An exchange the gateway proxies but does not log is never screened, so the logging row comes
first after the traffic: lost logs (by reason), the spill file, Kafka. ``job`` and ``instance``
select the gateways (every query is filtered by them). The alert rules for the same signals are
``MisuseGateway*`` in ``dashboards/rules/misuse-monitor.rules.yml``.
"""

from __future__ import annotations

from typing import Any

from dashboards.panels import (
    PROCESS_FILTER,
    base_dashboard,
    process_variables,
    prom,
    quantile,
    row,
    stat_panel,
    timeseries_panel,
    to_json,
)

G = PROCESS_FILTER
GREEN, YELLOW, RED = "green", "yellow", "red"

UID = "mm-gateway"
TITLE = "Misuse gateway"
# Every gateway exports it from its first request on; `dashboards verify` skips this dashboard
# when the Prometheus it checks has no series of it (no gateway is scraped there).
PRESENCE_METRIC = "mm_gateway_requests_total"
# A labelled counter has no series until its first increment: "or on()" a zero, so the panel reads
# 0 rather than "No data" on a gateway that never lost a log (on(): the zero only when the left
# side has no series at all, never as an extra line beside real reasons).
ZERO = f"sum(0 * rate(mm_gateway_logs_enqueued_total{{{G}}}[$__rate_interval]))"


def gateway() -> dict[str, Any]:
    board = base_dashboard(
        UID,
        TITLE,
        "The tee gateway: requests and refusals, upstream latency, and whether every exchange reaches Kafka.",
    )
    for variable in process_variables(PRESENCE_METRIC):
        board = board.with_variable(variable)
    board = (
        board.with_row(row("Traffic"))
        .with_panel(
            stat_panel(
                "Logging workers up",
                prom(f"sum(mm_gateway_worker_up{{{G}}})"),
                steps=[(None, RED), (1, GREEN)],
                width=4,
                description="One per gateway. A gateway whose worker is gone still proxies, but logs nothing (alert MisuseGatewayLoggingStopped).",
            )
        )
        .with_panel(
            stat_panel(
                "Requests per second",
                prom(f"sum(rate(mm_gateway_requests_total{{{G}}}[$__rate_interval]))"),
                steps=[(None, YELLOW), (0.001, GREEN)],
                unit="reqps",
                width=4,
            )
        )
        .with_panel(
            stat_panel(
                "Logs lost",
                prom(f"sum(increase(mm_gateway_logs_dropped_total{{{G}}}[$__range])) or on() {ZERO}", instant=True),
                steps=[(None, GREEN), (1, RED)],
                width=4,
                description="Exchanges proxied but never logged in the time range, so never screened (alert MisuseGatewayLogsLost).",
            )
        )
        .with_panel(
            stat_panel(
                "Kafka reachable",
                prom(f"min(mm_gateway_kafka_up{{{G}}})"),
                steps=[(None, YELLOW), (1, GREEN)],
                width=4,
                description="0 while the last delivery failed (logs spill to disk), and on a gateway that has not delivered yet.",
            )
        )
        .with_panel(
            stat_panel(
                "Spilled, waiting",
                prom(f"sum(mm_gateway_spill_bytes{{{G}}})"),
                steps=[(None, GREEN), (1, YELLOW)],
                unit="bytes",
                width=4,
                description="Logs on disk waiting for Kafka; replayed when it is back (alert MisuseGatewayLogsWaiting).",
            )
        )
        .with_panel(
            stat_panel(
                "Request bodies in flight",
                prom(f"sum(mm_gateway_inflight_request_bytes{{{G}}})"),
                steps=[(None, GREEN), (512 * 1024 * 1024, YELLOW)],
                unit="bytes",
                width=4,
                description="Past gateway.max_inflight_request_bytes (1 GiB by default) requests are refused 503.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Requests by route and status",
                [prom(f"sum by (route, status) (rate(mm_gateway_requests_total{{{G}}}[$__rate_interval]))", "{{route}} {{status}}")],
                unit="reqps",
                description="status: the upstream's class (2xx, 4xx, 5xx), 502/504 when it failed, or the gateway's own "
                "refusals: too_large (413), overloaded (503), refused (unlogged route), client_gone.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Upstream latency",
                [
                    prom(quantile(0.5, "mm_gateway_upstream_seconds_bucket", "route", G), "p50 {{route}}", "A"),
                    prom(quantile(0.99, "mm_gateway_upstream_seconds_bucket", "route", G), "p99 {{route}}", "B"),
                ],
                unit="s",
                description="To the upstream's last byte (a streamed answer included): the model's time, not the gateway's.",
            )
        )
        .with_row(row("Logging"))
        .with_panel(
            timeseries_panel(
                "Logs",
                [
                    prom(f"sum(rate(mm_gateway_logs_delivered_total{{{G}}}[$__rate_interval]))", "delivered", "A"),
                    prom(f"sum(rate(mm_gateway_logs_spilled_total{{{G}}}[$__rate_interval]))", "spilled", "B"),
                    prom(f"sum(rate(mm_gateway_logs_replayed_total{{{G}}}[$__rate_interval]))", "replayed", "C"),
                ],
                unit="ops",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Logs lost by reason",
                [prom(f"sum by (reason) (increase(mm_gateway_logs_dropped_total{{{G}}}[$__rate_interval])) or on() {ZERO}", "{{reason}}")],
                unit="short",
                width=8,
                bars=True,
                description="spill_full / spill_failed: the spill file's cap or its disk; too_large: over gateway.max_tee_bytes; "
                "rejected_full: the rejected file is full; queue_full etc. with overflow: drop.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Kept in the rejected file, by reason",
                [prom(f"sum by (reason) (increase(mm_gateway_logs_rejected_total{{{G}}}[$__rate_interval])) or on() {ZERO}", "{{reason}}")],
                unit="short",
                width=8,
                bars=True,
                description="Exchanges that could not become inference logs, kept as they arrived (docs/integrations.md).",
            )
        )
        .with_panel(
            timeseries_panel(
                "Logging queue",
                [prom(f"sum by (instance) (mm_gateway_queue_depth{{{G}}})", "{{instance}}")],
                unit="short",
                description="Exchanges waiting for the logging worker; it fills while Kafka is slow or down.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Spill file",
                [prom(f"sum by (instance) (mm_gateway_spill_bytes{{{G}}})", "{{instance}}")],
                unit="bytes",
            )
        )
    )
    return to_json(board)
