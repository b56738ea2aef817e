"""Hostile checks of the PostgreSQL events store (a review, 2026-12): a later record with a taken
request_id must not erase a flagged event, and retention must not be dodged by a future timestamp.

Real PostgreSQL (``pipeline.localinfra.postgres`` on a free port, or ``MM_TEST_POSTGRES_URL``),
one fresh database per test: the fixtures of ``tests/integration/dashboards/conftest.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from dashboards.overview import CRITICAL_EVENTS_SQL
from dashboards.queries import render_sql
from pipeline import events_db
from pipeline.metrics import PipelineMetrics
from pipeline.postgres_settings import PostgresSettings
from pipeline.schemas import Category, Finding, InferenceLog, Side
from pipeline.settings import Settings
from pipeline.sinks.base import ScoredRecord, SourcePosition
from pipeline.sinks.postgres import PostgresSink
from pipeline.verdicts import Pseudonymizer, build_verdict

pytestmark = pytest.mark.postgres

PSEUDO = Pseudonymizer(b"test-key")
TOPIC = "inference-logs"
NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def metrics() -> PipelineMetrics:
    return PipelineMetrics(CollectorRegistry())


@pytest.fixture
def sink(postgres_settings: PostgresSettings, metrics: PipelineMetrics) -> Iterator[PostgresSink]:
    pg_sink = PostgresSink.create(Settings(sinks=["postgres"], postgres=postgres_settings), metrics)
    yield pg_sink
    pg_sink.close()


def record(request_id: str, *, offset: int | None, score: float | None = None, tenant: str = "acme",
           user: str = "u-attacker", ts: datetime = NOW) -> ScoredRecord:
    """A verdict read from ``offset`` of partition 0 (None: from a file); flagged critical if ``score``."""
    log = InferenceLog.model_validate({
        "schema": "inference-log/v1", "request_id": request_id, "timestamp": ts.isoformat(), "model": "qwen3-coder",
        "deployment": "prod-eu", "tenant_id": tenant, "user_id": user, "prompt": "p", "completion": "sure",
    })  # fmt: skip
    findings = [] if score is None else [
        Finding(category=Category.CYBER_ABUSE, subcategory="malware", side=Side.COMPLETION, score=score,
                detector="rules", detector_version="1.0.0", evidence="here is the ransomware [REDACTED]")
    ]  # fmt: skip
    position = None if offset is None else SourcePosition(TOPIC, 0, offset)
    return ScoredRecord(log=log, verdict=build_verdict(log, findings, PSEUDO), position=position)


def rows(engine: sa.Engine) -> list[dict]:
    with engine.connect() as conn:
        result = conn.execute(sa.text("SELECT * FROM misuse_events ORDER BY request_id")).mappings().all()
    return [dict(r) for r in result]


def conflicts(metrics: PipelineMetrics) -> float:
    return metrics.registry.get_sample_value("mm_events_conflicts_total") or 0.0


def critical_events(engine: sa.Engine) -> list[tuple]:
    """The dashboards' "critical events" table, as Grafana runs it with every variable on All."""
    sql = render_sql(CRITICAL_EVENTS_SQL, NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    with engine.connect() as conn:
        return [(r.request_id, r.tenant) for r in conn.exec_driver_sql(sql)]


def test_a_later_record_with_a_taken_request_id_does_not_erase_the_flagged_event(
    sink: PostgresSink, metrics: PipelineMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    sink.write([record("chatcmpl-1", offset=10, score=0.97)])
    sink.flush()
    with caplog.at_level(logging.WARNING, logger="pipeline.events_db"):
        sink.write([record("chatcmpl-1", offset=11, tenant="other", user="u-someone")])
        sink.flush()

    first, second = rows(sink._engine)
    assert (first["request_id"], first["tenant_id"], first["flagged"], first["severity"]) == ("chatcmpl-1", "acme", True, "critical")
    assert first["conflict_of"] is None and first["source_offset"] == 10
    assert second["request_id"].startswith("chatcmpl-1#") and second["conflict_of"] == "chatcmpl-1"
    assert (second["tenant_id"], second["flagged"], second["source_offset"]) == ("other", False, 11)
    assert critical_events(sink._engine) == [("chatcmpl-1", "acme")]
    assert conflicts(metrics) == 1
    # Counted and logged, but the log line names no request id, tenant or user.
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "1 verdicts had a request_id already holding a different record" in logged
    for value in ("chatcmpl-1", "acme", "other", PSEUDO("u-someone"), PSEUDO("u-attacker")):
        assert value not in logged


def test_replays_of_both_records_are_idempotent(sink: PostgresSink, metrics: PipelineMetrics) -> None:
    sink.write([record("chatcmpl-1", offset=10, score=0.97), record("chatcmpl-1", offset=11, tenant="other")])
    sink.flush()
    # A crash before the commit: the same offsets are read again and scored in another batch
    # (bf16: a slightly different score), twice.
    for score in (0.96, 0.95):
        sink.write([record("chatcmpl-1", offset=10, score=score), record("chatcmpl-1", offset=11, tenant="other")])
        sink.flush()

    stored = rows(sink._engine)
    assert [(r["tenant_id"], r["flagged"], r.get("conflict_of")) for r in stored] == [
        ("acme", True, None), ("other", False, "chatcmpl-1")
    ]
    assert stored[0]["max_score"] == pytest.approx(0.95)  # the replay updated its own row in place
    assert conflicts(metrics) == 1  # one different record, however often it is replayed


def test_a_benign_duplicate_of_the_same_request_does_not_lower_a_flagged_event(sink: PostgresSink, metrics: PipelineMetrics) -> None:
    # Same tenant, user, model and time, but another Kafka record (a producer that can write to
    # the topic sends a clean copy under the id of its flagged request).
    sink.write([record("chatcmpl-1", offset=10, score=0.97)])
    sink.flush()
    sink.write([record("chatcmpl-1", offset=99)])
    sink.flush()

    stored = rows(sink._engine)
    assert [(r["flagged"], r["severity"], r.get("conflict_of")) for r in stored] == [
        (True, "critical", None), (False, "none", "chatcmpl-1")
    ]
    assert critical_events(sink._engine) == [("chatcmpl-1", "acme")]
    assert conflicts(metrics) == 1


def test_different_records_with_one_request_id_in_one_batch_are_all_kept(sink: PostgresSink, metrics: PipelineMetrics) -> None:
    sink.write([record("dup", offset=1, score=0.97), record("dup", offset=2, tenant="other"),
                record("dup", offset=3, tenant="third", score=0.9)])
    sink.flush()

    stored = rows(sink._engine)
    assert sorted((r["tenant_id"], r["flagged"]) for r in stored) == [("acme", True), ("other", False), ("third", True)]
    assert [r["request_id"] for r in stored if r["conflict_of"] is None] == ["dup"]
    assert conflicts(metrics) == 2


def test_keys_planted_under_a_records_conflict_chain_do_not_stop_the_sink(sink: PostgresSink, metrics: PipelineMetrics) -> None:
    """A hostile review (2026-12-07): the chain of keys a record refused its id tries is the
    sender's to compute; 16 rows planted under them stopped the sink ("no free key after 16
    tries"), and the stream with it, at every restart. Past them the record's place in Kafka is
    its key, so a replay lands there again."""
    victim = record("victim-req", offset=100, user="u-victim", ts=NOW + timedelta(seconds=1))
    chain = [events_db.conflict_key(events_db.verdict_row(victim.verdict, victim.position), a)
             for a in range(events_db.MAX_KEY_ATTEMPTS)]  # fmt: skip
    sink.write([record(key, offset=i, ts=NOW + timedelta(seconds=10 + i)) for i, key in enumerate(chain)])
    sink.flush()
    for _ in range(2):  # written, then replayed: one row
        sink.write([victim, record("innocent", offset=200)])
        sink.flush()
    by_key = {r["request_id"]: r for r in rows(sink._engine)}
    kept = by_key[f"victim-req#at-{TOPIC}-0-100"]
    assert kept["conflict_of"] == "victim-req" and kept["source_offset"] == 100 and "innocent" in by_key
    assert len(by_key) == events_db.MAX_KEY_ATTEMPTS + 2


def test_the_reviewed_api_path_keeps_the_flagged_event(postgres_settings: PostgresSettings) -> None:
    """events_db used directly with bare verdicts (file input: no source position)."""
    engine = events_db.create_engine(postgres_settings)
    events_db.create_schema(engine)
    events_db.upsert_with_retry(engine, [record("chatcmpl-1", offset=None, score=0.97).verdict], 3)
    result = events_db.upsert_with_retry(engine, [record("chatcmpl-1", offset=None, tenant="other", user="u-someone").verdict], 3)
    # Re-running the same file writes the same rows again, nothing more.
    again = events_db.upsert_with_retry(engine, [record("chatcmpl-1", offset=None, tenant="other", user="u-someone").verdict], 3)

    stored = rows(engine)
    engine.dispose()
    assert [(r["tenant_id"], r["flagged"]) for r in stored] == [("acme", True), ("other", False)]
    assert (result.written, result.conflicts) == (1, 1)
    assert (again.written, again.conflicts) == (1, 0)


def test_a_table_of_the_previous_release_is_upgraded_in_place(postgres_settings: PostgresSettings, metrics: PipelineMetrics) -> None:
    engine = events_db.create_engine(postgres_settings)
    events_db.create_schema(engine)
    events_db.upsert_verdicts(engine, [record("legacy", offset=None, score=0.97).verdict])
    with engine.begin() as conn:  # back to what the previous release created: no source or conflict columns
        conn.exec_driver_sql(
            "ALTER TABLE misuse_events DROP COLUMN IF EXISTS source_topic, DROP COLUMN IF EXISTS source_partition,"
            " DROP COLUMN IF EXISTS source_offset, DROP COLUMN IF EXISTS conflict_of"
        )
        conn.exec_driver_sql("DROP INDEX IF EXISTS ix_misuse_events_ingested_at")

    sink = PostgresSink.create(Settings(sinks=["postgres"], postgres=postgres_settings), metrics)  # create_schema at start-up
    try:
        sink.write([record("legacy", offset=5, score=0.99),  # the same request, replayed from Kafka: updates
                    record("legacy", offset=6, tenant="other")])  # a different record: kept beside it
        sink.flush()
    finally:
        sink.close()

    inspector = sa.inspect(engine)
    assert {"source_topic", "source_partition", "source_offset", "conflict_of"} <= {c["name"] for c in inspector.get_columns("misuse_events")}
    assert ("ingested_at",) in {tuple(ix["column_names"]) for ix in inspector.get_indexes("misuse_events")}
    stored = rows(engine)
    engine.dispose()
    assert [(r["tenant_id"], r["flagged"], r["source_offset"], r.get("conflict_of")) for r in stored] == [
        ("acme", True, 5, None), ("other", False, 6, "legacy")
    ]
    assert stored[0]["max_score"] == pytest.approx(0.99)


def test_retention_deletes_a_future_dated_row_once_it_was_written_long_enough_ago(sink: PostgresSink) -> None:
    sink.write([record("future-old", offset=1, score=0.97, ts=datetime(2199, 1, 1, tzinfo=UTC)),
                record("future-new", offset=2, score=0.97, ts=datetime(2199, 1, 1, tzinfo=UTC)),
                record("past", offset=3, ts=NOW - timedelta(days=40)),
                record("recent", offset=4, ts=NOW - timedelta(days=1))])  # fmt: skip
    sink.flush()
    with sink._engine.begin() as conn:
        conn.exec_driver_sql("UPDATE misuse_events SET ingested_at = now() - interval '31 days' WHERE request_id = 'future-old'")

    assert events_db.delete_older_than(sink._engine, 30, batch=1) == 2
    # Written 31 days ago: gone, whatever the sender claimed as its time. The request 40 days
    # old goes by its request time, as before, though it was written just now.
    assert [r["request_id"] for r in rows(sink._engine)] == ["future-new", "recent"]


def test_events_prune_cli_applies_the_write_time_too(postgres_settings: PostgresSettings) -> None:
    from typer.testing import CliRunner

    from pipeline.events_cli import app

    url = postgres_settings.url.get_secret_value()
    assert CliRunner().invoke(app, ["init", "--url", url]).exit_code == 0
    engine = events_db.create_engine(postgres_settings)
    events_db.upsert_verdicts(engine, [record("future", offset=None, ts=datetime(2199, 1, 1, tzinfo=UTC)).verdict])
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE misuse_events SET ingested_at = now() - interval '100 days'")
    result = CliRunner().invoke(app, ["prune", "--url", url, "--days", "90", "--json"])
    assert result.exit_code == 0, result.output
    assert '"deleted": 1' in result.output
    assert rows(engine) == []
    engine.dispose()


def test_events_prune_before_the_table_exists_warns_and_deletes_nothing(postgres_settings: PostgresSettings) -> None:
    """A cron job's first prune, before any flush, ended as "internal error: UndefinedTable" (exit 1);
    a `postgres://` URL, libpq's and Heroku's spelling, was refused as an unknown dialect."""
    from typer.testing import CliRunner

    from pipeline.events_cli import app

    url = postgres_settings.url.get_secret_value()
    for written in (url, url.replace("postgresql+psycopg://", "postgres://", 1)):
        result = CliRunner().invoke(app, ["prune", "--url", written, "--json"])
        assert result.exit_code == 0, result.output
        assert "no misuse_events table in that database: nothing to prune" in result.output
        assert '"deleted": 0' in result.output
    engine = events_db.create_engine(postgres_settings)
    assert not events_db.has_events_table(engine)  # prune creates nothing
    engine.dispose()


def test_a_foreign_table_of_our_name_is_left_alone(postgres_settings: PostgresSettings) -> None:
    """A privacy review (2026-12-06): with someone else's `misuse_events (request_id, ts,
    ingested_at, note)` in the database, `events prune` deleted its rows and `events init` tried
    to add our columns ("internal error", exit 1). Both now refuse (exit 3) and change nothing."""
    from pipeline.cli import main

    url = postgres_settings.url.get_secret_value()
    engine = events_db.create_engine(postgres_settings)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE misuse_events (request_id text PRIMARY KEY, ts timestamptz, "
                             "ingested_at timestamptz, note text)")
        conn.exec_driver_sql("INSERT INTO misuse_events VALUES ('a', '2000-01-01', '2000-01-01', 'theirs')")
    for command in (["events", "prune", "--url", url, "--days", "1"], ["events", "init", "--url", url]):
        assert main(command) == 3, command
    with pytest.raises(events_db.ForeignTableError):  # the stream's sink, at start-up
        PostgresSink.create(Settings(sinks=["postgres"], postgres=postgres_settings), PipelineMetrics())
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT note FROM misuse_events").scalars().all() == ["theirs"]
        columns = [r[0] for r in conn.exec_driver_sql(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'misuse_events' ORDER BY 1")]
    assert columns == ["ingested_at", "note", "request_id", "ts"]
    engine.dispose()


def test_the_urls_own_options_are_kept(postgres_settings: PostgresSettings) -> None:
    """`?options=-csearch_path%3Dmm` was replaced by our statement timeout: the table went to
    `public`, not to the schema the URL named (a privacy review, 2026-12-06)."""
    base = postgres_settings.url.get_secret_value()
    admin = events_db.create_engine(postgres_settings)
    with admin.begin() as conn:
        conn.exec_driver_sql("CREATE SCHEMA mm")
    separator = "&" if "?" in base else "?"
    settings = postgres_settings.model_copy(update={"url": type(postgres_settings.url)(f"{base}{separator}options=-csearch_path%3Dmm")})
    engine = events_db.create_engine(settings)
    events_db.create_schema(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW search_path").scalar() == "mm"
        assert conn.exec_driver_sql("SHOW statement_timeout").scalar() not in ("0", None)
    with admin.connect() as conn:
        schemas = conn.exec_driver_sql("SELECT table_schema FROM information_schema.tables WHERE table_name = 'misuse_events'").scalars().all()
    assert schemas == ["mm"]
    engine.dispose()
    admin.dispose()


def test_a_read_only_database_is_a_configuration_error_in_one_line(postgres_settings: PostgresSettings) -> None:
    """A hostile review (2026-12-07): `events init` on a read-only database (a standby, cron aimed
    at a replica) was "internal error: InternalError: ... cannot execute CREATE TABLE", exit 1,
    as if it were a bug; so were a role without privileges and a search_path naming no schema."""
    from sqlalchemy.engine import make_url

    from pipeline.cli import main
    from pipeline.exits import ExitCode, classify_exception

    url = postgres_settings.url.get_secret_value()
    name = make_url(url).database
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    admin.dispose()
    engine = events_db.create_engine(postgres_settings)
    try:
        with pytest.raises(sa.exc.SQLAlchemyError) as raised:
            events_db.create_schema(engine)
    finally:
        engine.dispose()
    code, message = classify_exception(raised.value)
    assert code == ExitCode.CONFIG and "SQLSTATE 25006" in message and "read-only" in message, message
    assert "\n" not in message and main(["events", "init", "--url", url]) == ExitCode.CONFIG
