"""The postgres sink against a real PostgreSQL: idempotent upserts, indexes, retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from pipeline import events_db
from pipeline.localinfra.base import free_port
from pipeline.postgres_settings import PostgresSettings
from pipeline.schemas import Category, Finding, InferenceLog, Side
from pipeline.metrics import PipelineMetrics
from pipeline.settings import Settings
from pipeline.sinks.base import ScoredRecord
from pipeline.sinks.postgres import PostgresSink
from pipeline.verdicts import Pseudonymizer, build_verdict

pytestmark = pytest.mark.postgres

PSEUDO = Pseudonymizer(b"test-key")


def make_record(request_id: str, *, ts: datetime, user: str = "alice", model: str = "qwen3-coder",
                findings: tuple[Finding, ...] = (), completion: str | None = "sure") -> ScoredRecord:
    log = InferenceLog.model_validate({
        "schema": "inference-log/v1", "request_id": request_id, "timestamp": ts.isoformat(), "model": model,
        "deployment": "prod-eu", "tenant_id": "acme", "user_id": user, "prompt": "p", "completion": completion,
    })
    return ScoredRecord(log=log, verdict=build_verdict(log, list(findings), PSEUDO))


def phishing(score: float, side: Side = Side.COMPLETION, evidence: str = "Dear customer, verify your [REDACTED]") -> Finding:
    return Finding(category=Category.CYBER_ABUSE, subcategory="phishing", side=side, score=score,
                   detector="rules", detector_version="1.0.0", evidence=evidence)


def jailbreak(score: float) -> Finding:
    return Finding(category=Category.JAILBREAK, side=Side.PROMPT, score=score, detector="rules",
                   detector_version="1.0.0", evidence="ignore all previous instructions")


@pytest.fixture
def sink(postgres_settings: PostgresSettings):
    pg_sink = PostgresSink.create(Settings(sinks=["postgres"], postgres=postgres_settings), PipelineMetrics())
    yield pg_sink
    pg_sink.close()


def rows(settings: PostgresSettings) -> list[sa.Row]:
    engine = events_db.create_engine(settings)
    with engine.connect() as conn:
        result = conn.execute(sa.select(events_db.events).order_by(events_db.events.c.request_id)).all()
    engine.dispose()
    return result


def test_replayed_batch_overwrites_instead_of_duplicating(sink: PostgresSink, postgres_settings: PostgresSettings) -> None:
    now = datetime.now(UTC)
    batch = [make_record("r1", ts=now, findings=(phishing(0.95), jailbreak(0.6))), make_record("r2", ts=now)]
    sink.write(batch)
    sink.flush()
    # The stream replays a batch after a crash before commit; a gateway retry repeats an id in a batch.
    rescored = make_record("r2", ts=now, findings=(jailbreak(0.7),), completion=None)
    sink.write([*batch, rescored, rescored])
    sink.flush()

    r1, r2 = rows(postgres_settings)
    assert (r1.request_id, r1.flagged, r1.severity) == ("r1", True, "critical")
    assert r1.categories == ["cyber_abuse", "jailbreak"]
    assert r1.complied is True
    assert r1.evidence.startswith("Dear customer")  # the finding that drove severity, not the jailbreak
    assert r1.user_id == PSEUDO("alice") and "alice" not in r1.user_id
    assert r1.detector_versions == ["rules@1.0.0"]
    assert {f["category"] for f in r1.findings} == {"cyber_abuse", "jailbreak"}
    assert (r2.flagged, r2.severity, r2.complied, r2.categories) == (True, "low", None, ["jailbreak"])


def test_schema_has_indexes_for_dashboard_queries(sink: PostgresSink, postgres_settings: PostgresSettings) -> None:
    events_db.create_schema(sink._engine)  # idempotent at every start-up
    inspector = sa.inspect(sink._engine)
    indexed = {tuple(ix["column_names"]) for ix in inspector.get_indexes(events_db.TABLE_NAME)}
    assert {("ts",), ("severity_rank", "ts"), ("user_id", "ts"), ("tenant_id", "ts")} <= indexed


def test_retention_deletes_only_rows_older_than_the_cutoff(sink: PostgresSink, postgres_settings: PostgresSettings) -> None:
    now = datetime.now(UTC)
    sink.write([make_record(f"old{i}", ts=now - timedelta(days=40 + i)) for i in range(5)])
    sink.write([make_record("recent", ts=now - timedelta(days=29))])
    sink.flush()
    assert events_db.delete_older_than(sink._engine, 30, batch=2) == 5
    assert [r.request_id for r in rows(postgres_settings)] == ["recent"]


def test_flush_raises_typed_error_when_database_is_gone_and_keeps_the_batch(postgres_settings: PostgresSettings) -> None:
    url = sa.make_url(postgres_settings.url.get_secret_value()).set(port=free_port())
    dead = PostgresSettings(url=url.render_as_string(hide_password=False), connect_timeout_s=1, flush_attempts=2)
    pg_sink = PostgresSink(events_db.create_engine(dead), dead)
    pg_sink.write([make_record("r1", ts=datetime.now(UTC))])
    with pytest.raises(events_db.EventStoreError) as info:
        pg_sink.flush()
    assert isinstance(info.value.__cause__, sa.exc.OperationalError)
    assert pg_sink._pending, "a failed flush must not drop the batch"


def test_sink_is_discovered_by_name() -> None:
    from pipeline.sinks.registry import discover_sinks

    assert discover_sinks()["postgres"] is PostgresSink


def test_events_cli_creates_schema_and_prunes_by_retention(postgres_settings: PostgresSettings) -> None:
    from typer.testing import CliRunner

    from pipeline.events_cli import app

    url = postgres_settings.url.get_secret_value()
    runner = CliRunner()
    assert runner.invoke(app, ["init", "--url", url]).exit_code == 0
    engine = events_db.create_engine(postgres_settings)
    now = datetime.now(UTC)
    events_db.upsert_verdicts(engine, [make_record("old", ts=now - timedelta(days=100)).verdict,
                                       make_record("new", ts=now - timedelta(days=1)).verdict])
    # Retention comes from the settings (here the environment, as a deployment would set it).
    result = runner.invoke(app, ["prune", "--url", url], env={"MM_POSTGRES__RETENTION_DAYS": "50"})
    assert result.exit_code == 0, result.output
    assert "deleted 1 events older than 50 days" in result.output
    assert [r.request_id for r in rows(postgres_settings)] == ["new"]
    engine.dispose()
