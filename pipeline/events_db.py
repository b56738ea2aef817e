"""The PostgreSQL events store behind the ``postgres`` sink and the dashboards' drill-down panels.

One row per verdict in ``misuse_events``, keyed by ``request_id`` so a replayed batch (the stream
commits offsets only after every sink flushed, so replays happen) overwrites instead of
duplicating. Only the same record may overwrite a row (:func:`same_record_clause`): a replay
from the same source position, or the same request (tenant, user, model, deployment, request
time) with at least the stored severity. Any other record under a request id that is already
taken is kept beside it under a suffixed key (``<request_id>#<digest>``, ``conflict_of`` naming
the id it collided with) and counted, so a later record can never erase a flagged event.
Indexes follow the dashboard queries (``dashboards/overview.py``):

- ``ts``: every panel filters on the time range (``$__timeFilter(ts)``) and retention deletes by it;
- ``ingested_at``: retention also deletes by the time a row was written (``ts`` is sender-supplied);
- ``(severity_rank, ts)``: the recent critical events table;
- ``(user_id, ts) WHERE flagged``: repeat offenders and model hopping group flagged rows by user;
- ``(tenant_id, ts)``: tenants are the usual drill-down filter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.dialects import postgresql as pg
from tenacity import retry, retry_if_exception_type, stop_after_attempt, wait_exponential

from pipeline.postgres_settings import PostgresSettings
from pipeline.schemas import Finding, MisuseVerdict
from pipeline.sinks.base import ScoredRecord, SourcePosition
from pipeline.verdicts import finding_severity

log = logging.getLogger(__name__)

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
    sa.Column("source_topic", sa.Text, comment="Kafka record the verdict came from; NULL for file input"),
    sa.Column("source_partition", sa.Integer),
    sa.Column("source_offset", sa.BigInteger),
    sa.Column("conflict_of", sa.Text, comment="On a row kept under a suffixed key: the request_id it collided with"),
    sa.Index("ix_misuse_events_ts", "ts"),
    sa.Index("ix_misuse_events_ingested_at", "ingested_at"),
    sa.Index("ix_misuse_events_severity_ts", "severity_rank", "ts"),
    sa.Index("ix_misuse_events_flagged_user_ts", "user_id", "ts", postgresql_where=sa.text("flagged")),
    sa.Index("ix_misuse_events_tenant_ts", "tenant_id", "ts"),
)

_UPDATABLE = [c.name for c in events.columns if c.name not in ("request_id", "ingested_at")]

# What makes two verdicts the same request when their source positions do not say so (file
# input, rows written before positions were stored, a producer that sent a record twice).
IDENTITY_COLUMNS = ("ts", "model", "deployment", "tenant_id", "user_id")

# Columns added after the first release, for tables created before them (create_all only creates
# missing tables). Each is a nullable column, so adding it rewrites nothing.
_ADDED_COLUMNS = {
    "source_topic": "TEXT",
    "source_partition": "INTEGER",
    "source_offset": "BIGINT",
    "conflict_of": "TEXT",
}

# A record that is refused its request_id tries <id>#<digest>, then <id>#<digest>.2, ...; past
# this many, keys no sender can plant (conflict_key), and a chain past those fails the batch
# rather than drop a verdict.
MAX_KEY_ATTEMPTS = 16


class EventStoreError(RuntimeError):
    """The events store could not be written or maintained (after retries)."""


class ForeignTableError(EventStoreError):
    """A table of our name that is not ours: a configuration error (the wrong database)."""


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

    The statement timeout goes before the URL's own ``options`` (``?options=-csearch_path%3Dmm``),
    which keeps them and lets them win. It replaced them: the table went to ``public``, not to
    the schema the URL named (a privacy review, 2026-12-06).
    """
    url = make_url(settings.url.get_secret_value())
    given = url.query.get("options")
    own = " ".join(given) if isinstance(given, tuple) else (given or "")
    options = f"-c statement_timeout={settings.statement_timeout_ms} {own}".strip()
    return sa.create_engine(
        url.difference_update_query(["options"]),
        pool_pre_ping=True,
        hide_parameters=True,
        connect_args={"connect_timeout": settings.connect_timeout_s, "options": options},
    )


# Columns every release's table has: a table of that name without them is someone else's.
_FIRST_RELEASE_COLUMNS = frozenset(c.name for c in events.columns) - set(_ADDED_COLUMNS)


def _require_our_table(conn: sa.Connection) -> None:
    """EventStoreError when a table named TABLE_NAME is there but is not ours: ``events init``
    added our columns to it and ``events prune`` deleted its rows (a privacy review, 2026-12-06,
    with a foreign ``misuse_events (request_id, ts, ingested_at, note)``)."""
    inspector = sa.inspect(conn)
    if not inspector.has_table(TABLE_NAME):
        return
    lacking = _FIRST_RELEASE_COLUMNS - {c["name"] for c in inspector.get_columns(TABLE_NAME)}
    if lacking:
        raise ForeignTableError(
            f"table {TABLE_NAME} in that database is not misuse-monitor's events table (it lacks "
            f"{', '.join(sorted(lacking))}): nothing was changed; point postgres.url at another database or schema"
        )


def create_schema(engine: sa.Engine) -> None:
    """CREATE TABLE / INDEX IF NOT EXISTS, and upgrade a table of an older release in place.

    Safe to run from several processes at start-up. The upgrade adds the columns and indexes an
    older table lacks (``_ADDED_COLUMNS``, and e.g. ``ix_misuse_events_ingested_at``); DDL is
    issued only when something is missing, so a normal start-up takes no table lock. Building a
    missing index on a large table blocks writes while it runs (once).
    """
    with engine.begin() as conn:
        # Serialises concurrent start-ups: CREATE ... IF NOT EXISTS can still race on the catalog.
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": TABLE_NAME})
        _require_our_table(conn)
        metadata.create_all(conn, checkfirst=True)
        inspector = sa.inspect(conn)
        present = {c["name"] for c in inspector.get_columns(TABLE_NAME)}
        missing = [name for name in _ADDED_COLUMNS if name not in present]
        if missing:
            adds = ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {_ADDED_COLUMNS[name]}" for name in missing)
            conn.exec_driver_sql(f"ALTER TABLE {TABLE_NAME} {adds}")
        indexed = {ix["name"] for ix in inspector.get_indexes(TABLE_NAME)}
        for index in events.indexes:
            if index.name not in indexed:
                index.create(conn, checkfirst=True)


def worst_finding(verdict: MisuseVerdict) -> Finding | None:
    """The finding that drives the verdict's severity (ties: higher score) - its evidence is shown."""
    return max(
        verdict.findings,
        key=lambda f: (finding_severity(f, verdict.complied).rank, f.score),
        default=None,
    )


def verdict_row(verdict: MisuseVerdict, position: SourcePosition | None = None) -> dict[str, Any]:
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
        "source_topic": position.topic if position else None,
        "source_partition": position.partition if position else None,
        "source_offset": position.offset if position else None,
        "conflict_of": None,
    }


def same_record_clause(excluded: Any) -> sa.ColumnElement[bool]:
    """When an incoming row (``excluded``) may overwrite the stored row with its request_id.

    Either it was read from the same source position (a replay after a crash or a rebalance:
    the same bytes, perhaps scored a little differently), or it is the same request (same
    tenant, user pseudonym, model, deployment and request time) and does not lower the stored
    severity (a producer or gateway that sent it twice). Anything else is a different record.
    """
    t = events.c
    same_position = sa.and_(
        t.source_offset.is_not(None),
        t.source_topic == excluded.source_topic,
        t.source_partition == excluded.source_partition,
        t.source_offset == excluded.source_offset,
    )
    same_request = sa.and_(
        *(t[name].is_not_distinct_from(excluded[name]) for name in IDENTITY_COLUMNS),
        excluded.severity_rank >= t.severity_rank,
    )
    return sa.or_(same_position, same_request)


def _same_record(stored: dict[str, Any], new: dict[str, Any]) -> bool:
    """:func:`same_record_clause` for two rows of one batch."""
    position = ("source_topic", "source_partition", "source_offset")
    if stored["source_offset"] is not None and all(stored[k] == new[k] for k in position):
        return True
    return all(stored[k] == new[k] for k in IDENTITY_COLUMNS) and new["severity_rank"] >= stored["severity_rank"]


def upsert_statement(*, returning: bool = False) -> sa.Insert:
    """INSERT ... ON CONFLICT (request_id) DO UPDATE ... WHERE same record.

    Updates every column but the key and ingested_at. A row that conflicts with a different
    record is neither inserted nor updated. Executed with a list of rows (one cached statement).
    ``returning`` adds the keys written and whether each was new; with it SQLAlchemy renders
    multi-VALUES statements per page of rows, which measured about 3.5x slower per row
    (bench/bench_postgres_sink.py), so only the rare rounds of conflicting rows use it.
    """
    stmt = pg.insert(events)
    upsert = stmt.on_conflict_do_update(
        index_elements=[events.c.request_id],
        set_={name: stmt.excluded[name] for name in _UPDATABLE},
        where=same_record_clause(stmt.excluded),
    )
    if returning:
        # xmax is 0 on a freshly inserted tuple and set on one ON CONFLICT updated.
        return upsert.returning(events.c.request_id, sa.literal_column("xmax = 0").label("inserted"))
    return upsert


_CHECKED = (*IDENTITY_COLUMNS, "severity_rank", "source_topic", "source_partition", "source_offset")
# One array parameter (not IN with a parameter per key), so the statement is the same every batch.
_STORED_QUERY = sa.select(events.c.request_id, *(events.c[name] for name in _CHECKED)).where(
    events.c.request_id == sa.any_(sa.bindparam("keys", type_=pg.ARRAY(sa.Text)))
)


def _write_round(conn: sa.Connection, params: list[dict[str, Any]], conflict_round: bool) -> dict[str, bool]:
    """Upsert rows with distinct keys; returns key -> whether the row was new, for the rows written.

    Without RETURNING, the rows affected are counted: when every row was inserted or updated
    (the usual batch), none was refused. Otherwise a row was written iff the stored row now
    carries its identity, position and severity: a refused row left a different record there
    (:func:`same_record_clause`). Checking every batch that way cost a third of the sink's
    rows/s (bench/bench_postgres_sink.py, docs/benchmarks.md).
    """
    if conflict_round:
        return {r.request_id: r.inserted for r in conn.execute(upsert_statement(returning=True), params)}
    keys = [p["request_id"] for p in params]
    # psycopg's executemany sums the rows each execution affected (an ON CONFLICT whose WHERE
    # refused the update affects none); SQLAlchemy keeps that sum only when asked to.
    result = conn.execute(upsert_statement(), params, execution_options={"preserve_rowcount": True})
    if result.rowcount == len(params):
        return dict.fromkeys(keys, False)
    stored = {r.request_id: r for r in conn.execute(_STORED_QUERY, {"keys": keys})}
    return {
        p["request_id"]: False
        for p in params
        if all(getattr(stored[p["request_id"]], name) == p[name] for name in _CHECKED)
    }


Event = MisuseVerdict | ScoredRecord


def _row(event: Event) -> dict[str, Any]:
    if isinstance(event, ScoredRecord):
        return verdict_row(event.verdict, event.position)
    return verdict_row(event)


def dedupe_by_request_id(verdicts: Iterable[Event]) -> list[dict[str, Any]]:
    """The batch's rows, a later row replacing an earlier one of the same record, in first-seen order.

    One INSERT ... ON CONFLICT DO UPDATE may not touch the same row twice, and a batch can hold
    a duplicate when a gateway retried a request. Rows that share a request_id but are not the
    same record (:func:`same_record_clause`) are all kept.
    """
    rows: list[dict[str, Any]] = []
    by_id: dict[str, list[int]] = {}
    for row in map(_row, verdicts):
        same_id = by_id.setdefault(row["request_id"], [])
        match = next((i for i in same_id if _same_record(rows[i], row)), None)
        if match is None:
            same_id.append(len(rows))
            rows.append(row)
        else:
            rows[match] = row
    return rows


def _identity_text(value: Any) -> str | None:
    # One instant, one text: PostgreSQL compares timestamptz as instants, whatever the offset.
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return None if value is None else str(value)


def conflict_key(row: dict[str, Any], attempt: int) -> str:
    """The key tried for ``row`` at ``attempt`` (0: its own request_id).

    Derived from the request's identity, so a replay of a record that was refused its id
    lands on the same suffixed row and updates it.
    """
    rid = row["request_id"]
    if attempt == 0:
        return rid
    if attempt < MAX_KEY_ATTEMPTS:
        identity = json.dumps([_identity_text(row[k]) for k in IDENTITY_COLUMNS])
        digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
        return f"{rid}#{digest}" if attempt == 1 else f"{rid}#{digest}.{attempt}"
    # Those keys are the sender's to compute (its own id, timestamp and names): 16 rows planted
    # under them stopped the sink, and the stream with it, at every restart (a hostile review,
    # 2026-12-07). Then the record's place in Kafka (a stream replay lands there again), then a
    # random key.
    position = [row.get(k) for k in ("source_topic", "source_partition", "source_offset")]
    if attempt == MAX_KEY_ATTEMPTS and None not in position:
        return f"{rid}#at-{position[0]}-{position[1]}-{position[2]}"
    return f"{rid}#{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class UpsertResult:
    written: int
    conflicts: int  # new rows kept under a suffixed key because their request_id held a different record


def upsert_verdicts(engine: sa.Engine, verdicts: Sequence[Event]) -> UpsertResult:
    """Insert or update rows by request_id in one transaction, keeping every record.

    A row refused its key (a different record holds it) is retried under :func:`conflict_key`
    until it is written; conflicts are logged (a count, never values) and returned.
    """
    pending = [(row, 0) for row in dedupe_by_request_id(verdicts)]
    if not pending:
        return UpsertResult(0, 0)
    written = conflicts = 0
    with engine.begin() as conn:
        while pending:
            # One statement may touch a key once: a row whose key is already in this round waits.
            this_round: dict[str, tuple[dict[str, Any], int]] = {}
            waiting: list[tuple[dict[str, Any], int]] = []
            for row, attempt in pending:
                key = conflict_key(row, attempt)
                if attempt >= MAX_KEY_ATTEMPTS + 4:  # random keys taken: not a sender, a broken table
                    raise EventStoreError(f"a verdict found no free key in {TABLE_NAME} after {attempt} tries")
                if key in this_round:
                    waiting.append((row, attempt))
                else:
                    this_round[key] = (row, attempt)
            params = [
                {**row, "request_id": key, "conflict_of": row["request_id"] if attempt else None}
                for key, (row, attempt) in this_round.items()
            ]
            accepted = _write_round(conn, params, conflict_round=any(attempt for _, attempt in this_round.values()))
            for key, (row, attempt) in this_round.items():
                if key in accepted:
                    written += 1
                    conflicts += bool(attempt and accepted[key])
                else:
                    waiting.append((row, attempt + 1))
            pending = waiting
    if conflicts:
        log.warning(
            "%s: %d verdicts had a request_id already holding a different record; kept under suffixed keys (conflict_of set)",
            TABLE_NAME, conflicts,
        )
    return UpsertResult(written, conflicts)


def upsert_with_retry(engine: sa.Engine, verdicts: Sequence[Event], attempts: int) -> UpsertResult:
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


def has_events_table(engine: sa.Engine) -> bool:
    """Whether the events table exists (in the connection's search path); ForeignTableError
    when a table of that name is someone else's."""
    with engine.connect() as conn:
        _require_our_table(conn)
        return sa.inspect(conn).has_table(TABLE_NAME)


def delete_older_than(engine: sa.Engine, days: int, *, now: datetime | None = None, batch: int = 10_000) -> int:
    """Delete rows whose request time or write time is more than ``days`` old; returns rows deleted.

    ``ts`` is what the sender claims: a row dated in the future would otherwise outlive the
    retention period by as much, so a row also goes once ``days`` passed since it was written
    (``ingested_at``). A row is kept ``days`` after the earlier of the two at most.

    Deletes in batches (one short transaction each) so retention never holds long locks on a
    table the stream is writing to.
    """
    if days < 0:
        raise ValueError("days must be >= 0")
    cutoff = (now or datetime.now(UTC)) - timedelta(days=days)
    victims = sa.select(events.c.request_id).where(sa.or_(events.c.ts < cutoff, events.c.ingested_at < cutoff)).limit(batch).scalar_subquery()
    total = 0
    while True:
        with engine.begin() as conn:
            deleted = conn.execute(sa.delete(events).where(events.c.request_id.in_(victims))).rowcount
        total += deleted
        if deleted < batch:
            return total
