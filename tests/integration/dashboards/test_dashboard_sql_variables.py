"""The dashboards' SQL with a chosen tenant whose name holds a quote, on a real PostgreSQL.

Tenant names come from request headers (the gateway's ``x-tenant-id``), so a dashboard user can
pick one like ``o'brien``. The SQL panels put the variable, in Grafana's ``regex`` format, inside
a pattern literal; Grafana's regexEscape escapes regex characters but not ``'``, and with
'...' literals every table broke on such a name, or ran what a crafted name added (a hostile
check, 2026-12-02). The literals are dollar-quoted now. Grafana itself cannot run here:
``dashboards.queries.render_sql`` applies the ``regex`` format the way Grafana documents it.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from dashboards.generate import all_dashboards
from dashboards.panels import POSTGRES_TYPE
from dashboards.queries import iter_queries, render_sql
from pipeline.metrics import PipelineMetrics
from pipeline.postgres_settings import PostgresSettings
from pipeline.schemas import Category, Finding, InferenceLog, Side
from pipeline.settings import Settings
from pipeline.sinks.base import ScoredRecord
from pipeline.sinks.postgres import PostgresSink
from pipeline.verdicts import Pseudonymizer, build_verdict

pytestmark = pytest.mark.postgres

PSEUDO = Pseudonymizer(b"test-key")
QUOTED = "o'brien$mm$ (eu)"  # a quote, the dollar-quote tag and regex characters
CRAFTED = "x')$' OR true OR tenant_id ~ '"  # would widen the filter to every tenant if it got out


def _record(request_id: str, tenant: str, user: str, ts: datetime) -> ScoredRecord:
    log = InferenceLog.model_validate({
        "schema": "inference-log/v1", "request_id": request_id, "timestamp": ts.isoformat(), "model": "qwen3-coder",
        "deployment": "prod-eu", "tenant_id": tenant, "user_id": user, "prompt": "p", "completion": "sure",
    })  # fmt: skip
    finding = Finding(category=Category.CYBER_ABUSE, subcategory="phishing", side=Side.COMPLETION, score=0.97,
                      detector="rules", detector_version="1.0.0", evidence="Dear customer, verify your [REDACTED]")
    return ScoredRecord(log=log, verdict=build_verdict(log, [finding], PSEUDO))


def test_every_sql_panel_filters_by_a_tenant_whose_name_holds_a_quote(postgres_settings: PostgresSettings) -> None:
    now = datetime.now(UTC)
    sink = PostgresSink.create(Settings(sinks=["postgres"], postgres=postgres_settings), PipelineMetrics())
    try:
        sink.write([_record(f"q{i}", QUOTED, "quoted-user", now - timedelta(minutes=i)) for i in range(3)]
                   + [_record(f"a{i}", "acme", "acme-user", now - timedelta(minutes=i)) for i in range(3)])
        sink.flush()
        engine = sink._engine
        panels = [q for board in all_dashboards() for q in iter_queries(board)
                  if q.datasource_type == POSTGRES_TYPE and q.kind == "panel"]
        assert len(panels) >= 4
        start, end = now - timedelta(hours=1), now + timedelta(minutes=1)
        with engine.connect() as conn:
            for values in ({"tenant": QUOTED}, {"tenant": CRAFTED}, {}):  # {}: every variable on "All"
                for pq in panels:
                    sql = render_sql(pq.query, start, end, values=values)
                    conn.exec_driver_sql(sql).all()  # a syntax error fails the test here
            offenders = next(q for q in panels if q.panel == "Top repeat offenders")

            def users(tenant: str | None) -> set[str]:
                sql = render_sql(offenders.query, start, end, values={"tenant": tenant} if tenant else {})
                return {row[0] for row in conn.exec_driver_sql(sql).all()}

            assert users(QUOTED) == {PSEUDO("quoted-user")}
            assert users(CRAFTED) == set()  # matched as a name (none has it), not run as SQL
            assert users(None) == {PSEUDO("quoted-user"), PSEUDO("acme-user")}  # "All"
    finally:
        sink.close()
