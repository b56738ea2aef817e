"""The alert database: one schema for SQLite (default) and PostgreSQL (SQLAlchemy 2 Core).

Holds everything that must survive a restart: alerts, rule state (window buckets, risk scores,
model-hopping sightings), the direct notifier's groups and delivery outbox. Times are Unix
seconds (double precision) so both back ends compare them the same way.

Every alert and every row of rule state carries the input ``partition`` that owns it: stream
replicas sharing one database each load, write and release only the partitions Kafka assigned
to them, so they never overwrite each other (docs/alerting.md, "Scaling out").
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url

metadata = sa.MetaData()

alerts = sa.Table(
    "mm_alerts",
    metadata,
    sa.Column("fingerprint", sa.String(32), primary_key=True),
    sa.Column("rule", sa.String(64), nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("annotations", sa.JSON, nullable=False),
    sa.Column("evidence", sa.JSON, nullable=False),
    sa.Column("receivers", sa.JSON, nullable=False),
    sa.Column("starts_at", sa.Double, nullable=False),
    sa.Column("ends_at", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False, index=True),
    sa.Column("partition", sa.Integer, nullable=False, index=True),
)

# (partition, rule, key, bucket start) -> flagged and total verdict counts of that partition;
# a rate rule's window is the sum over partitions. ``key`` is a fixed-length hash of the rate key
# (rate_key_hash) and ``key_values`` the key itself: a key joins up to three identifiers of 256
# characters, JSON-escaped, which overflowed the old varchar(1024) key on PostgreSQL and stopped
# the stream on every replay (a hostile review, 2026-12); no key column or index entry is bounded
# by the verdict's identifiers now.
rate_buckets = sa.Table(
    "mm_alert_rate_buckets",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("key_values", sa.Text, nullable=False),
    sa.Column("bucket", sa.Double, primary_key=True),
    sa.Column("flagged", sa.Integer, nullable=False),
    sa.Column("total", sa.Integer, nullable=False),
)

risk_scores = sa.Table(
    "mm_alert_risk_scores",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("score", sa.Double, nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Column("context", sa.JSON, nullable=False),
)

hop_sightings = sa.Table(
    "mm_alert_hop_sightings",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("rule", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.String(256), primary_key=True),
    sa.Column("target", sa.String(256), primary_key=True),
    sa.Column("last_seen", sa.Double, nullable=False),
    sa.Column("tenant", sa.String(256), nullable=True),
)

groups = sa.Table(
    "mm_alert_groups",
    metadata,
    sa.Column("receiver", sa.String(64), primary_key=True),
    sa.Column("group_key", sa.String(64), primary_key=True),
    sa.Column("group_labels", sa.JSON, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("next_flush_at", sa.Double, nullable=False, index=True),
    sa.Column("last_notified_at", sa.Double, nullable=True),
    # Fingerprints that were firing in the last notification: the dedup state.
    sa.Column("notified_firing", sa.JSON, nullable=False),
    sa.Column("seq", sa.Integer, nullable=False),
)

outbox = sa.Table(
    "mm_alert_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    # One key per (receiver, notification); unique so two deciders can never enqueue it twice.
    sa.Column("idempotency_key", sa.String(64), nullable=False, unique=True),
    sa.Column("receiver", sa.String(64), nullable=False),
    sa.Column("group_key", sa.String(64), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", sa.Double, nullable=False),
    sa.Column("claimed_until", sa.Double, nullable=True),
    sa.Column("delivered_at", sa.Double, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Index("ix_mm_alert_outbox_due", "state", "next_attempt_at"),
)


# Highest input offset whose verdict is reflected in the rule state, per partition: written in
# the same transaction as that state, so a batch replayed after a crash is not counted twice.
source_offsets = sa.Table(
    "mm_alert_source_offsets",
    metadata,
    sa.Column("topic", sa.String(256), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("offset", sa.BigInteger, nullable=False),
)


# Who may write a partition's state: every assignment bumps the epoch; a replica writes only
# while the epoch it took is still the current one (fencing a replica the group has already
# replaced, e.g. one that missed its heartbeats under load and still flushes a batch).
partition_owners = sa.Table(
    "mm_alert_partition_owners",
    metadata,
    sa.Column("topic", sa.String(256), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("epoch", sa.BigInteger, nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("updated_at", sa.Double, nullable=False),
)


class AlertStoreError(RuntimeError):
    """The alert database could not be opened or written."""


def rate_key_hash(key: str) -> str:
    """The stored ``mm_alert_rate_buckets.key`` of rate key ``key`` (hex SHA-256, 64 chars)."""
    return hashlib.sha256(key.encode()).hexdigest()


def shown_db_url(url: str | sa.URL) -> str:
    """The alert database's URL as messages and logs may show it: no user, password or query
    (libpq and SQLAlchemy also take the password as ``?password=``, which cutting at the last
    ``@`` printed; a hostile review, 2026-12-06)."""
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - an unreadable URL is shown as such, never echoed
        return "<an unreadable database URL>"
    if "@" in (parsed.host or ""):  # a password with an unquoted "@": the host holds part of it
        return "<an unreadable database URL>"
    return sa.URL.create(parsed.drivername, host=parsed.host, port=parsed.port, database=parsed.database).render_as_string()


def create_db_engine(url: str, *, must_exist: bool = False) -> Engine:
    """Open (and create) the alert database; SQLite gets WAL and a busy timeout.

    WAL lets the stream's sink and a standalone dispatcher write the same file; synchronous=FULL
    makes a committed outbox row survive a kill -9 or a power cut.

    A SQLite file's directory is created one level deep at most (``data/`` of the default URL), so
    a mistyped path is an error, not a new directory tree: ``--db-url sqlite:////nonexistent/a.db``
    created ``/nonexistent`` and showed an empty list (a careless-newcomer check, 2026-12-02).
    ``must_exist`` (``alerts list`` and ``requeue``, which only read or fix what is there) refuses
    a SQLite file that does not exist.
    """
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError) as exc:  # not a URL at all: a config error (exit 3), not a crash
        raise AlertStoreError(
            f"alert database URL is not a database URL ({exc}); expected e.g. sqlite:///data/alerts.db or "
            "postgresql+psycopg://user:password@host:5432/db (check --db-url or alerts.db_url)"
        ) from exc
    # hide_parameters: an outbox row holds alert payloads (evidence); a database error must not
    # copy them into the log (docs/privacy.md).
    kwargs: dict[str, Any] = {"future": True, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _sqlite_file(Path(parsed.database), must_exist)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    try:
        engine = sa.create_engine(url, **kwargs)
    except Exception as exc:  # noqa: BLE001 - bad URL or missing driver, re-raised typed
        raise AlertStoreError(f"cannot open alert database {shown_db_url(parsed)}: {exc}") from exc
    if parsed.get_backend_name() == "sqlite":
        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        # pysqlite's own transaction handling defers BEGIN; emit it ourselves so a read-then-write
        # transaction takes the write lock up front (BEGIN IMMEDIATE) and never deadlocks.
        @sa.event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def _begin_immediate(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        if must_exist and parsed.get_backend_name() != "sqlite" and not sa.inspect(engine).has_table(alerts.name):
            raise AlertStoreError(
                f"{shown_db_url(parsed)} is not an alert database (no {alerts.name} table; "
                "check --db-url or alerts.db_url)"
            )
        metadata.create_all(engine)
        columns = {c["name"] for c in sa.inspect(engine).get_columns(alerts.name)}
    except sa.exc.OperationalError:
        raise  # the database did not answer: exit 6, not a problem with the store
    except sa.exc.SQLAlchemyError as exc:
        raise AlertStoreError(f"cannot create alert tables: {exc}") from exc
    if "partition" not in columns:
        raise AlertStoreError(
            f"alert database {shown_db_url(parsed)} predates per-partition rule state "
            "(no mm_alerts.partition column): start from a new database"
        )
    if "key_values" not in {c["name"] for c in sa.inspect(engine).get_columns(rate_buckets.name)}:
        _upgrade_rate_keys(engine)
    return engine


def _upgrade_rate_keys(engine: Engine) -> None:
    """Move a database from raw rate keys to hashed ones (``key_values`` added), in place.

    One transaction; replicas starting together are serialised by the DDL lock (PostgreSQL) or
    BEGIN IMMEDIATE (SQLite), and the later ones find nothing left to convert. Replicas of the
    previous version must not run at the same time (they would write raw keys again)."""
    t = rate_buckets
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"ALTER TABLE {t.name} ADD COLUMN IF NOT EXISTS key_values TEXT")
        elif "key_values" not in {c["name"] for c in sa.inspect(conn).get_columns(t.name)}:
            conn.exec_driver_sql(f"ALTER TABLE {t.name} ADD COLUMN key_values TEXT")
        legacy = [r[0] for r in conn.execute(sa.select(t.c.key).where(t.c.key_values.is_(None)).distinct())]
        for key in legacy:
            conn.execute(sa.update(t).where(t.c.key == key, t.c.key_values.is_(None)).values(key=rate_key_hash(key), key_values=key))


def _sqlite_file(path: Path, must_exist: bool) -> None:
    if must_exist and not path.is_file():
        raise AlertStoreError(f"no alert database at {path} (check --db-url or alerts.db_url)")
    if must_exist and not _holds_alert_tables(path):
        # Opened through the engine, another program's file got our eight tables and WAL journal
        # mode from `alerts list` (an on-call review, 2026-12-06): looked at read-only first.
        raise AlertStoreError(f"{path} is not an alert database (no {alerts.name} table; check --db-url or alerts.db_url)")
    if not path.parent.parent.is_dir():
        raise AlertStoreError(
            f"cannot create the alert database {path}: {path.parent.parent} does not exist "
            "(check --db-url or alerts.db_url)"
        )
    try:
        path.parent.mkdir(exist_ok=True)
    except OSError as exc:
        raise AlertStoreError(f"cannot create the directory of the alert database {path}: {exc.strerror}") from exc


def _holds_alert_tables(path: Path) -> bool:
    """Does the SQLite file at ``path`` have the alerts table? Read-only: changes nothing. A file
    that is not a database at all answers True, so that opening it gives SQLite's own error."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)) as conn:
            return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (alerts.name,)).fetchone() is not None
    except sqlite3.DatabaseError:
        return True


def upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Insert or update ``rows`` on primary key ``keys`` (ON CONFLICT, SQLite and PostgreSQL)."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    update_cols = {c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys}
    conn.execute(stmt.on_conflict_do_update(index_elements=keys, set_=update_cols), rows)


def insert_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> int:
    """Insert rows whose unique ``keys`` are new; returns how many were inserted."""
    if not rows:
        return 0
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    inserted = 0
    for row in rows:  # per row: rowcount of executemany with ON CONFLICT is not portable
        result = conn.execute(insert(table).on_conflict_do_nothing(index_elements=keys), row)
        inserted += max(result.rowcount or 0, 0)
    return inserted


def insert_many_ignore(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """Insert rows in one executemany, skipping those whose unique ``keys`` already exist."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(table).on_conflict_do_nothing(index_elements=keys), rows)
