"""The PostgreSQL events store behind the ``postgres`` sink and the dashboards' drill-down panels.

One row per verdict in ``misuse_events``, keyed by ``request_id`` so a replayed batch (the stream
commits offsets only after every sink flushed, so replays happen) overwrites instead of
duplicating. Indexes follow the dashboard queries (``dashboards/overview.py``):

- ``ts``: every panel filters on the time range (``$__timeFilter(ts)``) and retention deletes by it;
- ``(severity_rank, ts)``: the recent critical events table;
- ``(user_id, ts) WHERE flagged``: repeat offenders and model hopping group flagged rows by user;
- ``(tenant_id, ts)``: tenants are the usual drill-down filter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql as pg
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from pipeline.postgres_settings import PostgresSettings
from pipeline.schemas import Finding, MisuseVerdict
from pipeline.verdicts import finding_severity

TABLE_NAME = "misuse_events"

metadata = sa.MetaData()

events = sa.Table(
    TABLE_NAME,
    metadata,
    sa.Column("request_id", sa.Text, primary_key=True),
    sa.Column("ts", sa.DateTime(timezone=True), nullable=False, comment="Request timestamp"),
    sa.Column("ingested_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("model", sa.Text, nullable=False),
    sa.Column("deployment", sa.Text),
    sa.Column("tenant_id", sa.Text),
    sa.Column("user_id", sa.Text, comment="Pseudonymised (keyed hash), never the raw id"),
    sa.Column("flagged", sa.Boolean, nullable=False),
    sa.Column("severity", sa.Text, nullable=False),
    sa.Column("severity_rank", sa.SmallInteger, nullable=False, comment="0 none .. 4 critical"),
    sa.Column("categories", pg.ARRAY(sa.Text), nullable=False),
    sa.Column("complied", sa.Boolean, comment="NULL when there was no completion"),
    sa.Column("max_score", sa.Float),
    sa.Column("worst_category", sa.Text),
    sa.Column("evidence", sa.Text, comment="Redacted snippet of the worst finding"),
    sa.Column("detector_versions", pg.ARRAY(sa.Text), nullable=False, comment="Sorted detector@version"),
    sa.Column("findings", pg.JSONB, nullable=False),
    sa.Index("ix_misuse_events_ts", "ts"),
    sa.Index("ix_misuse_events_severity_ts", "severity_rank", "ts"),
    sa.Index("ix_misuse_events_flagged_user_ts", "user_id", "ts", postgresql_where=sa.text("flagged")),
    sa.Index("ix_misuse_events_tenant_ts", "tenant_id", "ts"),
)

_UPDATABLE = [c.name for c in events.columns if c.name not in ("request_id", "ingested_at")]


class EventStoreError(RuntimeError):
    """The events store could not be written or maintained (after retries)."""


_QUOTED = re.compile(r'"[^"\n]*"|\'[^\'\n]*\'')
_KEY_VALUE = re.compile(r"=\((?:[^()\n]|\([^()\n]*\))*\)")


def describe_db_error(exc: BaseException) -> str:
    """The first line of a database error with the values it quotes masked.

    ``hide_parameters`` keeps SQLAlchemy from echoing bound values, but PostgreSQL quotes the
    offending value itself (``invalid input syntax for type integer: "..."``, ``Key
    (request_id)=(...) already exists``); this text ends up in logs, so those go too.
    """
    orig = getattr(exc, "orig", None)
    source = orig if orig is not None else exc
    lines = str(source).strip().splitlines()
    text = _KEY_VALUE.sub("=(…)", _QUOTED.sub('"…"', lines[0] if lines else ""))
    return f"{type(source).__name__}: {text} [SQL parameters hidden]"


# Connection drops, restarts and timeouts are worth retrying; constraint or SQL errors are not.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError)


def create_engine(settings: PostgresSettings) -> sa.Engine:
    """A pooled engine with connect and statement timeouts (no connection is opened here).

    ``hide_parameters``: SQLAlchemy puts the bound values of a failed statement (request ids,
    pseudonyms, evidence) into the exception text, which EventStoreError and the runner log;
    with it the message keeps the statement and says the parameters were hidden.
    """
    return sa.create_engine(
        settings.url.get_secret_value(),
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={
            "connect_timeout": settings.connect_timeout_s,
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        },
    )


def create_schema(engine: sa.Engine) -> None:
    """CREATE TABLE / INDEX IF NOT EXISTS; safe to run from several processes at start-up."""
    with engine.begin() as conn:
        # Serialises concurrent start-ups: CREATE ... IF NOT EXISTS can still race on the catalog.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": TABLE_NAME})
        metadata.create_all(conn, checkfirst=True)


def worst_finding(verdict: MisuseVerdict) -> Finding | None:
    """The finding that drives the verdict's severity (ties: higher score) - its evidence is shown."""
    return max(
        verdict.findings,
        key=lambda f: (finding_severity(f, verdict.complied).rank, f.score),
        default=None,
    )


def verdict_row(verdict: MisuseVerdict) -> dict[str, Any]:
    worst = worst_finding(verdict)
    return {
        "request_id": verdict.request_id,
        "ts": verdict.timestamp,
        "model": verdict.model,
        "deployment": verdict.deployment,
        "tenant_id": verdict.tenant_id,
        "user_id": verdict.user_id,
        "flagged": verdict.flagged,
        "severity": verdict.severity.value,
        "severity_rank": verdict.severity.rank,
        "categories": [c.value for c in verdict.categories],
        "complied": verdict.complied,
        "max_score": max((f.score for f in verdict.findings), default=None),
        "worst_category": worst.category.value if worst else None,
        "evidence": worst.evidence if worst else None,
        "detector_versions": sorted({f"{f.detector}@{f.detector_version}" for f in verdict.findings}),
        "findings": [f.model_dump(mode="json") for f in verdict.findings],
    }


def upsert_statement() -> sa.Insert:
    """INSERT ... ON CONFLICT (request_id) DO UPDATE of every column but the key and ingested_at.

    Executed with a list of rows: SQLAlchemy caches the compiled statement and batches the rows
    into multi-VALUES inserts ("insertmanyvalues"), far cheaper than compiling one big literal
    VALUES statement per batch.
    """
    stmt = pg.insert(events)
    return stmt.on_conflict_do_update(
        index_elements=[events.c.request_id],
        set_={name: stmt.excluded[name] for name in _UPDATABLE},
    )


def dedupe_by_request_id(verdicts: Iterable[MisuseVerdict]) -> list[MisuseVerdict]:
    """Last verdict per request_id, in first-seen order.

    One INSERT ... ON CONFLICT DO UPDATE may not touch the same row twice, and a batch can hold
    a duplicate when a gateway retried a request.
    """
    latest: dict[str, MisuseVerdict] = {}
    for v in verdicts:
        latest[v.request_id] = v
    return list(latest.values())


def upsert_verdicts(engine: sa.Engine, verdicts: Sequence[MisuseVerdict]) -> int:
    """Insert or overwrite rows by request_id in one transaction; returns rows written."""
    unique = dedupe_by_request_id(verdicts)
    if not unique:
        return 0
    with engine.begin() as conn:
        conn.execute(upsert_statement(), [verdict_row(v) for v in unique])
    return len(unique)


def upsert_with_retry(engine: sa.Engine, verdicts: Sequence[MisuseVerdict], attempts: int) -> int:
    """:func:`upsert_verdicts`, retried with backoff on transient errors; raises EventStoreError."""
    retrying = retry(
        retry=retry_if_exception_type(TRANSIENT_ERRORS),
        stop=stop_after_attempt(attempts),
        wait=wait_exponential(multiplier=0.2, max=5),
        reraise=True,
    )
    try:
        return retrying(upsert_verdicts)(engine, verdicts)
    except sa.exc.SQLAlchemyError as exc:
        raise EventStoreError(f"writing {len(verdicts)} verdicts to {TABLE_NAME} failed: {describe_db_error(exc)}") from exc


def delete_older_than(engine: sa.Engine, days: int, *, now: datetime | None = None, batch: int = 10_000) -> int:
    """Delete rows whose request time is more than ``days`` old; returns rows deleted.

    Deletes in batches (one short transaction each) so retention never holds long locks on a
    table the stream is writing to.
    """
    if days < 0:
        raise ValueError("days must be >= 0")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    victims = sa.select(events.c.request_id).where(events.c.ts < cutoff).limit(batch).scalar_subquery()
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(sa.delete(events).where(events.c.request_id.in_(victims))).rowcount
        total += deleted
        if deleted < batch:
            return total
