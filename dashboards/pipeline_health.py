"""Pipeline health: is the stream keeping up, how fast is it, what is it dropping, do alerts get out.

``job`` and ``instance`` select the stream replicas (every stream metric is filtered by them).
Consumer lag comes from the broker (``misuse-monitor lag-exporter``: committed against end
offsets), so it keeps growing on this dashboard when every replica is down.
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

P = PROCESS_FILTER
GREEN, YELLOW, RED = "green", "yellow", "red"

UID = "mm-pipeline-health"
TITLE = "Misuse pipeline health"


def pipeline_health() -> dict[str, Any]:
    board = base_dashboard(
        UID,
        TITLE,
        "Consumer lag, throughput, batch and detector latency, sinks, dead letters, offset commits and alert delivery.",
    )
    for variable in process_variables():
        board = board.with_variable(variable)
    board = (
        board.with_row(row("Keeping up"))
        .with_panel(
            stat_panel(
                "Stream replicas up",
                # Only targets that are stream processes (they export the commit gauge from the
                # start; the last day keeps a stopped one in view at 0): `up` alone on "All" counted
                # every target Prometheus scrapes, the gateway and the lag exporter included, so the
                # panel could not read 0 (a review of the dashboards, 2026-12-07).
                prom(f"sum(up{{{P}}} and on (job, instance) last_over_time(mm_last_commit_timestamp_seconds{{{P}}}[1d])) or vector(0)"),
                steps=[(None, RED), (1, GREEN)],
                width=4,
                description="Scrape targets of the selected job(s) that answer; 0 = the stream is down (alert MisuseStreamDown).",
            )
        )
        .with_panel(
            stat_panel(
                "Consumer lag (broker)",
                prom("sum(mm_kafka_consumergroup_lag)"),
                steps=[(None, GREEN), (1000, YELLOW), (10000, RED)],
                width=4,
                description="Records after the group's committed offsets, read from the broker by the lag exporter.",
            )
        )
        .with_panel(
            stat_panel(
                "Records per second",
                prom(f"sum(rate(mm_records_consumed_total{{{P}}}[$__rate_interval]))"),
                steps=[(None, YELLOW), (0.001, GREEN)],
                unit="reqps",
                width=4,
                description="Yellow at zero: fine when traffic is quiet, worrying when the lag grows.",
            )
        )
        .with_panel(
            stat_panel(
                "Since last offset commit",
                prom(f"time() - max(mm_last_commit_timestamp_seconds{{{P}}})"),
                steps=[(None, GREEN), (120, YELLOW), (300, RED)],
                unit="s",
                width=4,
                description="Grows without bound when the stream is stuck (a sink failing, a poison batch).",
            )
        )
        .with_panel(
            stat_panel(
                "Dead-letter share",
                prom(
                    # An idle stream reads 0, not NaN (0/0) or "No data".
                    f"(sum(rate(mm_dead_letters_total{{{P}}}[$__rate_interval])) "
                    f"/ (sum(rate(mm_records_consumed_total{{{P}}}[$__rate_interval])) > 0)) or on() vector(0)"
                ),
                steps=[(None, GREEN), (0.01, YELLOW), (0.05, RED)],
                unit="percentunit",
                width=4,
                description="Red at the MisuseDeadLetterSurge threshold (5%).",
            )
        )
        .with_panel(
            stat_panel(
                "Alert backlog",
                prom(f"sum(mm_alert_outbox_pending{{{P}}})"),
                steps=[(None, GREEN), (10, YELLOW), (100, RED)],
                width=4,
                description="Alerts decided but not yet accepted by Alertmanager or a direct receiver (alert MisuseAlertBacklog).",
            )
        )
        .with_panel(
            timeseries_panel(
                "Consumer lag by partition (broker)",
                [prom("sum by (group, topic, partition) (mm_kafka_consumergroup_lag)", "{{group}} {{topic}}/{{partition}}")],
                unit="short",
            )
        )
        .with_panel(
            timeseries_panel(
                "Throughput",
                [
                    prom(f"sum by (topic) (rate(mm_records_consumed_total{{{P}}}[$__rate_interval]))", "consumed {{topic}}", "A"),
                    prom(f"sum(rate(mm_verdicts_total{{{P}}}[$__rate_interval]))", "verdicts", "B"),
                ],
                unit="reqps",
            )
        )
        .with_row(row("Latency"))
        .with_panel(
            timeseries_panel(
                "Batch latency",
                [
                    prom(quantile(0.5, "mm_batch_duration_seconds_bucket", selector=P), "p50", "A"),
                    prom(quantile(0.99, "mm_batch_duration_seconds_bucket", selector=P), "p99", "B"),
                ],
                unit="s",
                width=8,
                description="Wall time per micro-batch (decode, detect, sinks), poll excluded.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Records per batch",
                [prom(f"sum(rate(mm_batch_records_sum{{{P}}}[$__rate_interval])) / sum(rate(mm_batch_records_count{{{P}}}[$__rate_interval]))", "mean")],
                unit="short",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Detector latency per batch",
                [
                    prom(quantile(0.5, "mm_detector_duration_seconds_bucket", "detector", P), "p50 {{detector}}", "A"),
                    prom(quantile(0.99, "mm_detector_duration_seconds_bucket", "detector", P), "p99 {{detector}}", "B"),
                ],
                unit="s",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Sink write+flush p99",
                [prom(quantile(0.99, "mm_sink_flush_duration_seconds_bucket", "sink", P), "{{sink}}")],
                unit="s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Offset commits",
                [prom(f"sum by (result) (rate(mm_offset_commits_total{{{P}}}[$__rate_interval]))", "{{result}}")],
                unit="ops",
                description="A failed commit means the batch is re-read (at-least-once); sinks are idempotent.",
            )
        )
        .with_row(row("Errors"))
        .with_panel(
            timeseries_panel(
                "Dead letters by reason",
                [prom(f"sum by (reason) (rate(mm_dead_letters_total{{{P}}}[$__rate_interval]))", "{{reason}}")],
                unit="reqps",
                stacked=True,
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Sink errors",
                [
                    prom(
                        # "or 0 x flushes": a healthy sink shows a zero line instead of "No data".
                        f"sum by (sink) (increase(mm_sink_errors_total{{{P}}}[$__rate_interval])) "
                        f"or sum by (sink) (0 * rate(mm_sink_flush_duration_seconds_count{{{P}}}[$__rate_interval]))",
                        "{{sink}}",
                    )
                ],
                unit="short",
                width=8,
                bars=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Rebalances",
                [prom(f"sum by (event) (increase(mm_rebalances_total{{{P}}}[$__rate_interval]))", "{{event}}")],
                unit="short",
                width=8,
                bars=True,
            )
        )
        .with_row(row("Alert delivery"))
        .with_panel(
            timeseries_panel(
                "Alerts fired",
                [prom(f"sum by (rule, severity) (increase(mm_alerts_fired_total{{{P}}}[$__rate_interval]))", "{{rule}} ({{severity}})")],
                unit="short",
                width=6,
                bars=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Deliveries by receiver and result",
                [prom(f"sum by (receiver, result) (rate(mm_alert_deliveries_total{{{P}}}[$__rate_interval]))", "{{receiver}} {{result}}")],
                unit="ops",
                width=6,
            )
        )
        .with_panel(
            timeseries_panel(
                "Delivery retries",
                [
                    prom(
                        f"sum by (receiver) (rate(mm_alert_retries_total{{{P}}}[$__rate_interval])) "
                        f"or sum by (receiver) (0 * rate(mm_alert_deliveries_total{{{P}}}[$__rate_interval]))",
                        "{{receiver}}",
                    )
                ],
                unit="ops",
                width=6,
            )
        )
        .with_panel(
            timeseries_panel(
                "Alert dead letters",
                [
                    prom(
                        f"sum by (receiver) (increase(mm_alert_dead_letters_total{{{P}}}[$__rate_interval])) "
                        f"or sum by (receiver) (0 * rate(mm_alert_deliveries_total{{{P}}}[$__rate_interval]))",
                        "{{receiver}}",
                    )
                ],
                unit="short",
                width=6,
                bars=True,
                description="Alerts given up on after all retries: someone was not told.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Delivery latency p99 (enqueue to 2xx)",
                [prom(quantile(0.99, "mm_alert_delivery_latency_seconds_bucket", "receiver", P), "{{receiver}}")],
                unit="s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Alert backlog by replica",
                [prom(f"sum by (instance) (mm_alert_outbox_pending{{{P}}})", "{{instance}}")],
                unit="short",
                description="Alerts not yet accepted by Alertmanager, or direct notifications waiting for delivery or retry; should drain to zero.",
            )
        )
    )
    return to_json(board)
