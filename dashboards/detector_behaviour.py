"""Detector behaviour: score distributions over time (drift), first-stage skips, versions in use."""

from __future__ import annotations

from typing import Any

from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from dashboards.panels import (
    POSTGRES,
    PROMETHEUS,
    SqlQuery,
    base_dashboard,
    heatmap_panel,
    label_variable,
    prom,
    row,
    table_panel,
    timeseries_panel,
    to_json,
)

UID = "mm-detector-behaviour"
TITLE = "Misuse detector behaviour"

CATEGORY = 'category=~"$category"'

DETECTOR_VERSIONS_SQL = """
SELECT f->>'detector' AS detector,
       f->>'detector_version' AS version,
       count(*) AS findings,
       min(e.ts) AS "first seen",
       max(e.ts) AS "last seen"
FROM misuse_events e, jsonb_array_elements(e.findings) AS f
WHERE $__timeFilter(e.ts)
GROUP BY 1, 2
ORDER BY 1, 2
"""


def detector_behaviour() -> dict[str, Any]:
    board = base_dashboard(
        UID,
        TITLE,
        "Calibrated score distributions per category over time (a shifting distribution is drift in traffic or in a "
        "detector), flag rates per category, first-stage skip share, detector versions in use.",
    ).with_variable(label_variable("category", "Category", "mm_finding_score_bucket"))

    def q(p: float) -> str:
        return f"histogram_quantile({p}, sum by (category, le) (rate(mm_finding_score_bucket{{{CATEGORY}}}[$__rate_interval])))"

    board = (
        board.with_row(row("Scores"))
        .with_panel(
            timeseries_panel(
                "Finding score quantiles by category",
                [prom(q(0.5), "p50 {{category}}", "A"), prom(q(0.9), "p90 {{category}}", "B")],
                unit="percentunit",
                description="Calibrated probability of reported findings. A step change without a deploy is drift.",
            )
        )
        .with_panel(
            timeseries_panel(
                "Mean finding score by category and side",
                [
                    prom(
                        f"sum by (category, side) (rate(mm_finding_score_sum{{{CATEGORY}}}[$__rate_interval])) "
                        f"/ sum by (category, side) (rate(mm_finding_score_count{{{CATEGORY}}}[$__rate_interval]))",
                        "{{category}} {{side}}",
                    )
                ],
                unit="percentunit",
            )
        )
        .with_panel(
            heatmap_panel(
                "Score distribution ($category)",
                prom(f"sum by (le) (increase(mm_finding_score_bucket{{{CATEGORY}}}[$__rate_interval]))", "{{le}}").format(
                    PromQueryFormat.HEATMAP
                ),
                description="Findings per score bucket over time, one panel per selected category.",
            ).repeat("category").repeat_direction("h")
        )
        .with_row(row("Rates"))
        .with_panel(
            timeseries_panel(
                "Flag rate by category (share of all verdicts)",
                [
                    prom(
                        f"sum by (category) (rate(mm_flagged_total{{{CATEGORY}}}[$__rate_interval])) "
                        "/ scalar(sum(rate(mm_verdicts_total[$__rate_interval])))",
                        "{{category}}",
                    )
                ],
                unit="percentunit",
            )
        )
        .with_panel(
            timeseries_panel(
                "Findings by detector and side",
                [prom(f"sum by (detector, category, side) (rate(mm_findings_total{{{CATEGORY}}}[$__rate_interval]))", "{{detector}} {{category}} {{side}}")],
                unit="reqps",
            )
        )
        .with_panel(
            timeseries_panel(
                "Findings by the part of the record they point at",
                [prom(f"sum by (category, part) (rate(mm_findings_total{{{CATEGORY}}}[$__rate_interval]))", "{{category}} {{part}}")],
                unit="reqps",
                description="A category that follows the system prompts' volume is often one deployment's own prompt, "
                            "sent with every request: list it in detectors.trusted_system_prompts (README, Detectors).",
            )
        )
        .with_row(row("Stages and versions"))
        .with_panel(
            timeseries_panel(
                "Share of records skipped by a first stage",
                [
                    prom(
                        'sum by (detector) (rate(mm_first_stage_records_total{outcome="skipped"}[$__rate_interval])) '
                        "/ sum by (detector) (rate(mm_first_stage_records_total[$__rate_interval]))",
                        "{{detector}}",
                    )
                ],
                unit="percentunit",
                width=8,
                description="Records a detector's cheap first stage cleared without running the model.",
            )
        )
        .with_panel(
            table_panel(
                "Detectors loaded",
                prom("max by (detector, version) (mm_detector_info)", instant=True).format(PromQueryFormat.TABLE),
                datasource=PROMETHEUS,
                width=8,
                description="Detector versions the running pipeline processes loaded.",
            )
        )
        .with_panel(
            table_panel(
                "Detector versions in findings (events store)",
                SqlQuery(DETECTOR_VERSIONS_SQL),
                datasource=POSTGRES,
                width=8,
                description="Which detector versions produced the stored findings in range (spot a stale replica).",
            )
        )
    )
    return to_json(board)
