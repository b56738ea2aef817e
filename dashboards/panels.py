"""Shared building blocks for the dashboards: datasources, filters, variables and panel helpers.

Everything here is a pure function over grafana-foundation-sdk builders. The Grafana PostgreSQL
datasource has no builder in the SDK, so :class:`SqlQuery` adds one (a cog ``Dataquery``).
Datasource uids are fixed (``provisioning/datasources.yaml`` creates them; ``publish`` maps them
to an existing Grafana's own uids).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.builders.common import ReduceDataOptions, StackingConfig, VizLegendOptions, VizTooltipOptions
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    SortOrder,
    StackingMode,
    TableCellHeight,
    TooltipDisplayMode,
)

PROMETHEUS_TYPE = "prometheus"
POSTGRES_TYPE = "grafana-postgresql-datasource"
PROMETHEUS_UID = "mm-prometheus"
POSTGRES_UID = "mm-postgres"
PROMETHEUS = dm.DataSourceRef(type_val=PROMETHEUS_TYPE, uid=PROMETHEUS_UID)
POSTGRES = dm.DataSourceRef(type_val=POSTGRES_TYPE, uid=POSTGRES_UID)

TAGS = ["misuse-monitor"]
REFRESH = "30s"

# Template variables shared by the misuse dashboards. Values come from metric labels (bounded);
# "All" is the regex ".*" so one variable serves PromQL (=~) and SQL (~) alike.
FILTER_VARIABLES = ("tenant", "deployment", "model")
PROM_FILTER = 'tenant=~"$tenant", deployment=~"$deployment", model=~"$model"'
# Metrics say "unknown" where the log had no tenant/deployment; the table keeps NULL.
# The patterns are dollar-quoted ($mm$...$mm$), not '...': Grafana's regex format escapes regex
# characters, `$` included (so a value cannot close the quote), but not `'`, and a tenant named
# o'brien (tenants come from request headers) made every table a syntax error, or let a crafted
# name add SQL to the panel's query (a hostile check, 2026-12-02).
SQL_FILTER = (
    "coalesce(tenant_id, 'unknown') ~ $mm$^(${tenant:regex})$$mm$ "
    "AND coalesce(deployment, 'unknown') ~ $mm$^(${deployment:regex})$$mm$ "
    "AND model ~ $mm$^(${model:regex})$$mm$"
)


# --------------------------------------------------------------------------- queries


class SqlDataquery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's PostgreSQL datasource (``rawSql`` in code mode)."""

    def __init__(self, raw_sql: str, ref_id: str, fmt: Literal["table", "time_series"]) -> None:
        self.raw_sql = raw_sql
        self.ref_id = ref_id
        self.format = fmt

    def to_json(self) -> dict[str, object]:
        return {
            "datasource": POSTGRES.to_json(),
            "editorMode": "code",
            "format": self.format,
            "rawQuery": True,
            "rawSql": self.raw_sql,
            "refId": self.ref_id,
        }


class SqlQuery(cogbuilder.Builder[SqlDataquery]):
    def __init__(self, raw_sql: str, ref_id: str = "A", fmt: Literal["table", "time_series"] = "table") -> None:
        self._internal = SqlDataquery(_squash(raw_sql), ref_id, fmt)

    def build(self) -> SqlDataquery:
        return self._internal


def _squash(sql: str) -> str:
    """One space between tokens: SQL written as indented blocks reads the same in Grafana's editor."""
    return " ".join(sql.split())


def prom(expr: str, legend: str = "", ref_id: str = "A", *, instant: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(_squash(expr)).ref_id(ref_id).datasource(PROMETHEUS.to_json())
    if legend:
        query = query.legend_format(legend)
    return query.instant() if instant else query.range()


def rate_by(metric: str, by: str, selector: str = PROM_FILTER) -> str:
    """``sum by (by) (rate(metric{selector}[$__rate_interval]))``."""
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def quantile(q: float, bucket_metric: str, by: str = "", selector: str = "") -> str:
    group = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({group}) (rate({bucket_metric}{{{selector}}}[$__rate_interval])))"


# --------------------------------------------------------------------------- variables


def label_variable(name: str, label: str, metric: str = "mm_verdicts_total") -> dash.QueryVariable:
    """Multi-select variable over one (bounded) label, "All" = ``.*``."""
    return (
        dash.QueryVariable(name)
        .label(label)
        .datasource(PROMETHEUS)
        .query({"query": f"label_values({metric}, {name})", "refId": f"{name}-values"})
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text="All", value="$__all"))
    )


def filter_variables() -> list[dash.QueryVariable]:
    return [label_variable(name, name.capitalize()) for name in FILTER_VARIABLES]


# Pipeline health: which Prometheus job(s) and instance(s) (stream replicas) to show. Chained:
# the instance list follows the chosen jobs. "All" is ".*" as for the filter variables.
PROCESS_FILTER = 'job=~"$job", instance=~"$instance"'


def process_variables(metric: str = "mm_records_consumed_total") -> list[dash.QueryVariable]:
    """``job`` and ``instance`` (chained) over the processes that export ``metric``: the stream
    replicas by default, the gateways on their dashboard."""
    job = label_variable("job", "Job", metric)
    instance = (
        label_variable("instance", "Instance", metric)
        .query({"query": f'label_values({metric}{{job=~"$job"}}, instance)', "refId": "instance-values"})
    )
    return [job, instance]


# --------------------------------------------------------------------------- panels


def timeseries_panel(
    title: str,
    targets: list[cogbuilder.Builder[Any]],
    *,
    unit: str = "short",
    description: str = "",
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    bars: bool = False,
    datasource: dm.DataSourceRef = PROMETHEUS,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(datasource)
        .targets(targets)
        .unit(unit)
        .span(width)
        .height(height)
        .fill_opacity(20 if stacked else 10)
        .legend(VizLegendOptions().display_mode(LegendDisplayMode.LIST).placement(LegendPlacement.BOTTOM).show_legend(True))
        .tooltip(VizTooltipOptions().mode(TooltipDisplayMode.MULTI).sort(SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(GraphDrawStyle.BARS)
    return panel


# Threshold steps: (lower bound, colour); the first step's bound is None (from -inf).
Steps = Sequence[tuple[float | None, str]]


def thresholds(steps: Steps) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps([dm.Threshold(value=v, color=c) for v, c in steps])


def stat_panel(
    title: str,
    target: cogbuilder.Builder[Any],
    *,
    steps: Steps,
    unit: str = "short",
    description: str = "",
    width: int = 6,
) -> stat.Panel:
    """A single number, coloured by ``steps`` (required: a stat without thresholds tells on-call
    nothing about whether the number is bad)."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(target)
        .unit(unit)
        .span(width)
        .height(4)
        .graph_mode(BigValueGraphMode.AREA)
        .color_mode(BigValueColorMode.BACKGROUND)
        .thresholds(thresholds(steps))
        .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
    )


def table_panel(
    title: str,
    target: cogbuilder.Builder[Any],
    *,
    datasource: dm.DataSourceRef = POSTGRES,
    description: str = "",
    width: int = 12,
    height: int = 9,
) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(datasource)
        .with_target(target)
        .span(width)
        .height(height)
        .cell_height(TableCellHeight.SM)
    )


def heatmap_panel(title: str, target: cogbuilder.Builder[Any], *, description: str = "", width: int = 12) -> heatmap.Panel:
    return (
        heatmap.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(target)
        .span(width)
        .height(8)
    )


def row(title: str) -> dash.Row:
    return dash.Row(title)


# --------------------------------------------------------------------------- output


def base_dashboard(uid: str, title: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .refresh(REFRESH)
        .time("now-6h", "now")
        .timezone("utc")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .editable()
    )


def to_json(builder: dash.Dashboard) -> dict[str, Any]:
    """Plain JSON-able dict with stable panel ids (Grafana needs unique ids within a dashboard)."""
    data: dict[str, Any] = json.loads(json.dumps(builder.build(), cls=JSONEncoder))
    next_id = 1
    for panel in data.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for child in panel.get("panels", []):
            child["id"] = next_id
            next_id += 1
    return data
