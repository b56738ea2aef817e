"""Misuse overview: what is being flagged, where, and by whom (pseudonymously)."""

from __future__ import annotations

from typing import Any

from dashboards.panels import (
    POSTGRES,
    PROM_FILTER,
    SQL_FILTER,
    SqlQuery,
    base_dashboard,
    filter_variables,
    prom,
    rate_by,
    row,
    stat_panel,
    table_panel,
    timeseries_panel,
    to_json,
)

UID = "mm-misuse-overview"
TITLE = "Misuse overview"

# Model hopping ignores the model filter on purpose: it is about one user across models.
SQL_FILTER_NO_MODEL = SQL_FILTER.rsplit(" AND model", 1)[0]
HOP_MIN_MODELS = 2
OFFENDER_MIN_FLAGGED = 2
SEVERITY_NAMES = "(ARRAY['none','low','medium','high','critical'])"

# A user is one user of one tenant: user ids are the tenant's own, so "1042" of two tenants are two
# people under one pseudonym (grouped by the pseudonym alone, their scores and models added up; a
# review of 2026-12-07). The tenant is a column of its own, as in the alert rules and the Spark job.
TOP_OFFENDERS_SQL = f"""
SELECT user_id AS "user (pseudonym)",
       tenant_id AS tenant,
       count(*) AS flagged,
       round(sum(power(0.5, extract(epoch FROM ($__timeTo()::timestamptz - ts)) / 86400.0))::numeric, 2)
         AS "decayed score (1d half-life)",
       {SEVERITY_NAMES}[max(severity_rank) + 1] AS "worst severity",
       count(*) FILTER (WHERE complied) AS complied,
       count(DISTINCT model) AS models,
       max(ts) AS "last seen"
FROM misuse_events
WHERE flagged AND user_id IS NOT NULL AND $__timeFilter(ts) AND {SQL_FILTER}
GROUP BY tenant_id, user_id
HAVING count(*) >= {OFFENDER_MIN_FLAGGED}
ORDER BY 4 DESC, 3 DESC
LIMIT 25
"""

MODEL_HOPPING_SQL = f"""
SELECT user_id AS "user (pseudonym)",
       tenant_id AS tenant,
       count(DISTINCT model) AS models,
       string_agg(DISTINCT model, ', ' ORDER BY model) AS "flagged on",
       count(*) AS flagged,
       min(ts) AS "first seen",
       max(ts) AS "last seen"
FROM misuse_events
WHERE flagged AND user_id IS NOT NULL AND $__timeFilter(ts) AND {SQL_FILTER_NO_MODEL}
GROUP BY tenant_id, user_id
HAVING count(DISTINCT model) >= {HOP_MIN_MODELS}
ORDER BY 3 DESC, 5 DESC
LIMIT 25
"""

CRITICAL_EVENTS_SQL = f"""
SELECT ts AS "time",
       array_to_string(categories, ', ') AS categories,
       CASE complied WHEN true THEN 'complied' WHEN false THEN 'refused' ELSE 'no completion' END AS outcome,
       round(max_score::numeric, 2) AS score,
       tenant_id AS tenant, deployment, model,
       user_id AS "user (pseudonym)",
       evidence,
       request_id
FROM misuse_events
WHERE severity_rank >= 4 AND $__timeFilter(ts) AND {SQL_FILTER}
ORDER BY ts DESC
LIMIT 100
"""

FLAGGED_EVENTS_SQL = f"""
SELECT $__timeGroupAlias(ts, $__interval), worst_category AS metric, count(*) AS value
FROM misuse_events
WHERE flagged AND $__timeFilter(ts) AND {SQL_FILTER}
GROUP BY 1, 2
ORDER BY 1
"""


def overview() -> dict[str, Any]:
    flagged = "mm_flagged_total"
    verdicts = "mm_verdicts_total"
    board = base_dashboard(
        UID,
        TITLE,
        "Flagged LLM traffic by category, severity, model, deployment and tenant; complied vs refused; "
        "repeat offenders and model hopping (pseudonymous user ids); recent critical events with evidence.",
    )
    for variable in filter_variables():
        board = board.with_variable(variable)

    board = (
        board.with_row(row("Flagged traffic"))
        .with_panel(
            stat_panel(
                "Flagged share",
                prom(
                    f'sum(rate({verdicts}{{flagged="true", {PROM_FILTER}}}[$__rate_interval])) '
                    f"/ sum(rate({verdicts}{{{PROM_FILTER}}}[$__rate_interval]))"
                ),
                unit="percentunit",
                steps=[(None, "green"), (0.05, "yellow"), (0.2, "red")],
                description="Flagged verdicts / all verdicts.",
            )
        )
        .with_panel(stat_panel("Flagged per second", prom(f'sum(rate({verdicts}{{flagged="true", {PROM_FILTER}}}[$__rate_interval]))'), unit="reqps",
                                   steps=[(None, "green"), (0.5, "yellow"), (5, "red")]))
        .with_panel(
            stat_panel(
                "Critical per second",
                prom(f'sum(rate({verdicts}{{severity="critical", {PROM_FILTER}}}[$__rate_interval]))'),
                unit="reqps",
                steps=[(None, "green"), (0.001, "red")],
                description="Any critical verdict is red.",
            )
        )
        .with_panel(
            stat_panel(
                "Complied share of flagged",
                prom(
                    f'sum(rate({flagged}{{complied="true", {PROM_FILTER}}}[$__rate_interval])) '
                    f'/ sum(rate({flagged}{{complied!="none", {PROM_FILTER}}}[$__rate_interval]))'
                ),
                unit="percentunit",
                steps=[(None, "green"), (0.05, "yellow"), (0.2, "red")],
                description="Among flagged records with a completion: how often the model produced the harmful content "
                "(counted per category: a record with two categories weighs twice).",
            )
        )
        .with_panel(timeseries_panel("Flagged rate by category", [prom(rate_by(flagged, "category"), "{{category}}")], unit="reqps", stacked=True))
        .with_panel(timeseries_panel("Flagged rate by severity", [prom(rate_by(verdicts, "severity", f'flagged="true", {PROM_FILTER}'), "{{severity}}")], unit="reqps", stacked=True))
        # Flagged verdicts, not mm_flagged_total: that counts a verdict once per category, so a
        # record with two categories counted twice here (a review of the dashboards, 2026-12-07).
        .with_panel(timeseries_panel("Flagged rate by model", [prom(rate_by(verdicts, "model", f'flagged="true", {PROM_FILTER}'), "{{model}}")], unit="reqps", width=8))
        .with_panel(timeseries_panel("Flagged rate by deployment", [prom(rate_by(verdicts, "deployment", f'flagged="true", {PROM_FILTER}'), "{{deployment}}")], unit="reqps", width=8))
        .with_panel(timeseries_panel("Flagged rate by tenant", [prom(rate_by(verdicts, "tenant", f'flagged="true", {PROM_FILTER}'), "{{tenant}}")], unit="reqps", width=8))
        .with_panel(
            timeseries_panel(
                "Complied vs refused",
                [prom(rate_by(flagged, "complied"), "complied={{complied}}")],
                unit="reqps",
                stacked=True,
                description="Flagged records per category: complied=true the model produced the content, "
                "false it refused, none there was no completion (prompt only).",
            )
        )
        .with_panel(
            timeseries_panel(
                "Flagged events by worst category (events store)",
                [SqlQuery(FLAGGED_EVENTS_SQL, fmt="time_series")],
                unit="short",
                bars=True,
                datasource=POSTGRES,
                description="Counts from PostgreSQL, for cross-checking the metrics and for ranges older than Prometheus retention.",
            )
        )
        .with_row(row("Users (pseudonymous)"))
        .with_panel(
            table_panel(
                "Top repeat offenders",
                SqlQuery(TOP_OFFENDERS_SQL),
                description=f"Users with >= {OFFENDER_MIN_FLAGGED} flagged requests in range, ranked by a score where each "
                "flagged request counts 1, halving every day before the range end. User ids are keyed hashes.",
            )
        )
        .with_panel(
            table_panel(
                "Model hopping",
                SqlQuery(MODEL_HOPPING_SQL),
                description=f"Users flagged on >= {HOP_MIN_MODELS} distinct models in range (misuse spread across specialised "
                "models). Ignores the model filter.",
            )
        )
        .with_row(row("Recent critical events"))
        .with_panel(
            table_panel(
                "Recent critical events",
                SqlQuery(CRITICAL_EVENTS_SQL),
                description="Newest first, with the redacted evidence snippet of the finding that made the verdict critical.",
                width=24,
                height=12,
            )
        )
    )
    return to_json(board)
