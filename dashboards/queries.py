"""Every query of every panel, extracted from dashboard JSON, and run against live datasources.

:func:`iter_queries` walks a dashboard (rows included) and yields one :class:`PanelQuery` per
target and per query variable. :func:`render_promql` / :func:`render_sql` substitute template
variables and Grafana macros the way Grafana would for the "All" selection, so the same text can
be sent to Prometheus' HTTP API or to PostgreSQL: the integration test and
``misuse-monitor dashboards verify`` use this to prove each panel has data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from dashboards.panels import POSTGRES_TYPE, PROMETHEUS_TYPE

QueryKind = Literal["panel", "variable"]


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    datasource_type: str
    query: str
    ref_id: str
    kind: QueryKind = "panel"
    instant: bool = False

    @property
    def label(self) -> str:
        return f"{self.dashboard} / {self.panel} [{self.ref_id}]"


def iter_queries(dashboard: Mapping[str, Any]) -> Iterator[PanelQuery]:
    uid = str(dashboard.get("uid", ""))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query", "") if isinstance(query, Mapping) else str(query or "")
        yield PanelQuery(uid, f"${variable['name']}", variable.get("datasource", {}).get("type", ""), text, variable["name"], "variable")
    for panel in _panels(dashboard.get("panels", [])):
        panel_ds = (panel.get("datasource") or {}).get("type", "")
        for target in panel.get("targets", []):
            ds_type = (target.get("datasource") or {}).get("type") or panel_ds
            text = target.get("rawSql") if ds_type == POSTGRES_TYPE else target.get("expr")
            if text is None:
                raise ValueError(f"{uid} / {panel.get('title')}: target {target.get('refId')} has no query text")
            yield PanelQuery(uid, panel["title"], ds_type, text, target.get("refId", ""), "panel", bool(target.get("instant")))


def _panels(panels: list[Mapping[str, Any]]) -> Iterator[Mapping[str, Any]]:
    for panel in panels:
        if panel.get("type") == "row":
            yield from _panels(panel.get("panels", []))
        else:
            yield panel


# --------------------------------------------------------------------------- rendering

_VAR = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
# Grafana's regexEscape (the `regex` format): these characters get a backslash.
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<metric>[^,]+),\s*)?(?P<label>\w+)\)$")
_SQL_MACRO = re.compile(r"\$__(\w+)\(([^()]*)\)")
_GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__range", "__interval_ms", "__range_s"}


def _substitute_variables(text: str, values: Mapping[str, str], all_value: str = ".*") -> str:
    """Grafana's interpolation for the queries here: a variable on a chosen value gets its format
    applied (``regex``: Grafana's regexEscape), on "All" the custom all value as it is (Grafana
    does not format it). A dollar-quote tag (``$mm$``) is not a variable and stays."""

    def repl(match: re.Match[str]) -> str:
        name, fmt = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), None)
        if match.group(3) and text.startswith("$", match.end()):
            return match.group(0)  # $tag$: a PostgreSQL dollar quote
        if name in values:
            value = values[name]
            return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value) if fmt == "regex" else value
        if name.startswith("__"):
            return match.group(0)  # macros and builtins are handled by the caller
        return all_value

    return _VAR.sub(repl, text)


def render_promql(query: str, rate_interval: str = "1m", values: Mapping[str, str] | None = None) -> str:
    """PromQL as Grafana sends it with every variable on "All" (``.*``)."""
    builtins = {"__rate_interval": rate_interval, "__interval": rate_interval, "__range": rate_interval}
    return _substitute_variables(query, {**builtins, **(values or {})})


def parse_label_values(query: str) -> tuple[str | None, str]:
    """``label_values(metric, label)`` -> (metric, label); Grafana-only syntax, not PromQL."""
    match = _LABEL_VALUES.match(query.strip())
    if not match:
        raise ValueError(f"unsupported variable query: {query!r}")
    return (match.group("metric") or None), match.group("label")


def _sql_time(t: datetime) -> str:
    return f"'{t.isoformat()}'"


def render_sql(query: str, start: datetime, end: datetime, interval_s: int = 60, values: Mapping[str, str] | None = None) -> str:
    """SQL as Grafana's PostgreSQL datasource sends it: variables on "All", macros expanded."""
    text = _substitute_variables(query, {"__interval": f"{interval_s}s", **(values or {})})

    def macro(match: re.Match[str]) -> str:
        name, args = match.group(1), [a.strip() for a in match.group(2).split(",") if a.strip()]
        if name == "timeFilter":
            return f"{args[0]} BETWEEN {_sql_time(start)} AND {_sql_time(end)}"
        if name == "timeFrom":
            return _sql_time(start)
        if name == "timeTo":
            return _sql_time(end)
        if name == "timeGroupAlias":
            seconds = _interval_seconds(args[1].strip("'")) if len(args) > 1 else interval_s
            return f'floor(extract(epoch from {args[0]})/{seconds})*{seconds} AS "time"'
        if name == "timeGroup":
            seconds = _interval_seconds(args[1].strip("'")) if len(args) > 1 else interval_s
            return f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
        raise ValueError(f"unsupported Grafana SQL macro $__{name}")

    return _SQL_MACRO.sub(macro, text)


def _interval_seconds(interval: str) -> int:
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)", interval)
    if not match:
        raise ValueError(f"bad interval {interval!r}")
    n, unit = int(match.group(1)), match.group(2)
    return max(1, {"ms": n // 1000, "s": n, "m": n * 60, "h": n * 3600, "d": n * 86400}[unit])


# --------------------------------------------------------------------------- running


@dataclass(frozen=True)
class QueryResult:
    query: PanelQuery
    rendered: str
    rows: int


def run_query(
    pq: PanelQuery,
    *,
    prometheus_url: str,
    engine: Any,
    start: datetime,
    end: datetime,
    step_s: int = 15,
    rate_interval: str = "1m",
) -> QueryResult:
    """Run one query the way its panel would; ``rows`` counts series (PromQL) or rows (SQL).

    Raises on a query the datasource rejects: a broken query is an error, not "no data".
    """
    from pipeline.localinfra.prometheus import label_values, query, query_range

    if pq.datasource_type == PROMETHEUS_TYPE:
        if pq.kind == "variable":
            # Chained variables (instance after job) carry a selector: render it as for "All".
            metric, label = parse_label_values(render_promql(pq.query, rate_interval))
            return QueryResult(pq, pq.query, len(label_values(prometheus_url, label, metric)))
        promql = render_promql(pq.query, rate_interval)
        if pq.instant:
            return QueryResult(pq, promql, len(query(prometheus_url, promql, at=end.timestamp())))
        series = query_range(prometheus_url, promql, start.timestamp(), end.timestamp(), step_s)
        return QueryResult(pq, promql, sum(1 for s in series if s.get("values")))
    if pq.datasource_type == POSTGRES_TYPE:
        import sqlalchemy as sa

        sql = render_sql(pq.query, start, end, interval_s=step_s)
        with engine.connect() as conn:
            return QueryResult(pq, sql, len(conn.execute(sa.text(sql)).all()))
    raise ValueError(f"{pq.label}: unsupported datasource type {pq.datasource_type!r}")
