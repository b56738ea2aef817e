"""Pipeline health: is the stream keeping up, how fast is it, what is it dropping, do alerts get out."""

from __future__ import annotations

from typing import Any

from dashboards.panels import base_dashboard, prom, quantile, row, stat_panel, timeseries_panel, to_json

UID = "mm-pipeline-health"
TITLE = "Misuse pipeline health"


def pipeline_health() -> dict[str, Any]:
    board = base_dashboard(
        UID,
        TITLE,
        "Consumer lag, throughput, batch and detector latency, sinks, dead letters, offset commits and alert delivery.",
    )
    board = (
        board.with_row(row("Keeping up"))
        .with_panel(stat_panel("Consumer lag", prom("sum(mm_consumer_lag_records)"), unit="short", description="Records behind the high watermark, all partitions."))
        .with_panel(stat_panel("Records per second", prom("sum(rate(mm_records_consumed_total[$__rate_interval]))"), unit="reqps"))
        .with_panel(
            stat_panel(
                "Since last offset commit",
                prom("time() - max(mm_last_commit_timestamp_seconds)"),
                unit="s",
                description="Grows without bound when the stream is stuck (a sink failing, a poison batch).",
            )
        )
        .with_panel(
            stat_panel(
                "Dead-letter share",
                prom("sum(rate(mm_dead_letters_total[$__rate_interval])) / sum(rate(mm_records_consumed_total[$__rate_interval]))"),
                unit="percentunit",
            )
        )
        .with_panel(timeseries_panel("Consumer lag by partition", [prom("sum by (topic, partition) (mm_consumer_lag_records)", "{{topic}}/{{partition}}")], unit="short"))
        .with_panel(
            timeseries_panel(
                "Throughput",
                [
                    prom("sum by (topic) (rate(mm_records_consumed_total[$__rate_interval]))", "consumed {{topic}}", "A"),
                    prom("sum(rate(mm_verdicts_total[$__rate_interval]))", "verdicts", "B"),
                ],
                unit="reqps",
            )
        )
        .with_row(row("Latency"))
        .with_panel(
            timeseries_panel(
                "Batch latency",
                [
                    prom(quantile(0.5, "mm_batch_duration_seconds_bucket"), "p50", "A"),
                    prom(quantile(0.99, "mm_batch_duration_seconds_bucket"), "p99", "B"),
                ],
                unit="s",
                width=8,
                description="Wall time per micro-batch (decode, detect, sinks), poll excluded.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Records per batch",
                [prom("sum(rate(mm_batch_records_sum[$__rate_interval])) / sum(rate(mm_batch_records_count[$__rate_interval]))", "mean")],
                unit="short",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Detector latency per batch",
                [
                    prom(quantile(0.5, "mm_detector_duration_seconds_bucket", "detector"), "p50 {{detector}}", "A"),
                    prom(quantile(0.99, "mm_detector_duration_seconds_bucket", "detector"), "p99 {{detector}}", "B"),
                ],
                unit="s",
                width=8,
            )
        )
        .with_panel(
            timeseries_panel(
                "Sink write+flush p99",
                [prom(quantile(0.99, "mm_sink_flush_duration_seconds_bucket", "sink"), "{{sink}}")],
                unit="s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Offset commits",
                [prom("sum by (result) (rate(mm_offset_commits_total[$__rate_interval]))", "{{result}}")],
                unit="ops",
                description="A failed commit means the batch is re-read (at-least-once); sinks are idempotent.",
            )
        )
        .with_row(row("Errors"))
        .with_panel(
            timeseries_panel(
                "Dead letters by reason",
                [prom("sum by (reason) (rate(mm_dead_letters_total[$__rate_interval]))", "{{reason}}")],
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
                        "sum by (sink) (increase(mm_sink_errors_total[$__rate_interval])) "
                        "or sum by (sink) (0 * rate(mm_sink_flush_duration_seconds_count[$__rate_interval]))",
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
                [prom("sum by (event) (increase(mm_rebalances_total[$__rate_interval]))", "{{event}}")],
                unit="short",
                width=8,
                bars=True,
            )
        )
        .with_row(row("Alert delivery"))
        .with_panel(
            timeseries_panel(
                "Alerts fired",
                [prom("sum by (rule, severity) (increase(mm_alerts_fired_total[$__rate_interval]))", "{{rule}} ({{severity}})")],
                unit="short",
                width=6,
                bars=True,
            )
        )
        .with_panel(
            timeseries_panel(
                "Deliveries by receiver and result",
                [prom("sum by (receiver, result) (rate(mm_alert_deliveries_total[$__rate_interval]))", "{{receiver}} {{result}}")],
                unit="ops",
                width=6,
            )
        )
        .with_panel(
            timeseries_panel(
                "Delivery retries",
                [
                    prom(
                        "sum by (receiver) (rate(mm_alert_retries_total[$__rate_interval])) "
                        "or sum by (receiver) (0 * rate(mm_alert_deliveries_total[$__rate_interval]))",
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
                        "sum by (receiver) (increase(mm_alert_dead_letters_total[$__rate_interval])) "
                        "or sum by (receiver) (0 * rate(mm_alert_deliveries_total[$__rate_interval]))",
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
                [prom(quantile(0.99, "mm_alert_delivery_latency_seconds_bucket", "receiver"), "{{receiver}}")],
                unit="s",
            )
        )
        .with_panel(
            timeseries_panel(
                "Outbox pending",
                [prom("sum(mm_alert_outbox_pending)", "pending")],
                unit="short",
                description="Notifications waiting for delivery or retry; should drain to zero.",
            )
        )
    )
    return to_json(board)
