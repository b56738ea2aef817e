"""Alert state on a real PostgreSQL with the longest identifiers a verdict may carry.

SQLite ignores varchar lengths, so only PostgreSQL shows a rate key that does not fit: a
[tenant, model] rule and a 256-character non-ASCII tenant (valid input) made a 1,544-character
key, the save failed, and the stream replayed that record forever."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from pipeline.alerts import state as db
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.rules import parse_rules
from pipeline.schemas import Category, Finding, MisuseVerdict, Severity, Side

pytestmark = pytest.mark.postgres

T0 = 1_800_000_000.0
RULES = """
rules:
  - {name: spike, kind: rate, threshold: 2, per: [tenant, deployment, model, category]}
  - {name: offender, kind: repeat_offender, threshold: 10}
  - {name: hop, kind: model_hopping, min_distinct: 2}
"""


@pytest.fixture
def pg_db(postgres_url: str) -> Iterator[str]:
    from pipeline.localinfra.postgres import temporary_database

    with temporary_database(postgres_url) as url:
        yield url


def _verdict(n: int, *, tenant: str, model: str, deployment: str) -> MisuseVerdict:
    finding = Finding(
        category=Category.CYBER_ABUSE, side=Side.PROMPT, score=0.9, detector="rules", detector_version="1",
        evidence="write a keylogger",
    )
    return MisuseVerdict(
        request_id=f"r{n}", timestamp=datetime.fromtimestamp(T0, UTC), model=model, deployment=deployment,
        tenant_id=tenant, user_id="u_" + "f" * 254, flagged=True, severity=Severity.HIGH,
        categories=[Category.CYBER_ABUSE], complied=True, findings=[finding],
    )


def test_longest_non_ascii_identifiers_are_stored_and_restored(pg_db: str) -> None:
    # 4-byte characters at the schema's 256-character limit in every dimension of the key.
    tenant, model, deployment = "é" * 256, "😀" * 256, "ß" * 256
    engine = db.create_db_engine(pg_db)
    try:
        alerts = AlertEngine(parse_rules(RULES), clock=lambda: T0)
        alerts.observe([_verdict(i, tenant=tenant, model=model, deployment=deployment) for i in range(3)])
        alerts.observe([_verdict(9, tenant=tenant, model="é" * 255 + "x", deployment=deployment)])
        with engine.begin() as conn:
            alerts.save(conn)
        restored = AlertEngine(parse_rules(RULES), clock=lambda: T0)
        with engine.connect() as conn:
            restored.load(conn)
            stored = conn.execute(sa.select(db.rate_buckets.c.key)).scalars().all()
        assert restored._buckets == alerts._buckets
        assert {a.labels.get("tenant") for a in restored.alerts.values() if a.rule == "spike"} == {tenant}
        assert all(len(k) == 64 for k in stored)
    finally:
        engine.dispose()


def test_database_with_raw_rate_keys_is_upgraded_in_place(pg_db: str) -> None:
    old = sa.create_engine(pg_db)
    with old.begin() as conn:
        conn.exec_driver_sql(
            'CREATE TABLE mm_alert_rate_buckets (partition INTEGER, rule VARCHAR(64), key VARCHAR(1024), '
            'bucket DOUBLE PRECISION, flagged INTEGER NOT NULL, total INTEGER NOT NULL, PRIMARY KEY (partition, rule, key, bucket))'
        )
        conn.exec_driver_sql(
            "INSERT INTO mm_alert_rate_buckets VALUES (0, 'spike', '[\"acme\",\"prod\",\"m\",\"cyber_abuse\"]', %s, 3, 0)" % (T0 - T0 % 60)
        )
    old.dispose()
    engine = db.create_db_engine(pg_db)
    try:
        alerts = AlertEngine(parse_rules(RULES), clock=lambda: T0)
        with engine.connect() as conn:
            alerts.load(conn)
            stored = conn.execute(sa.select(db.rate_buckets.c.key, db.rate_buckets.c.key_values)).all()
        raw = '["acme","prod","m","cyber_abuse"]'
        assert alerts._buckets["spike"] == {raw: {T0 - T0 % 60: {0: [3, 0]}}}
        assert [tuple(r) for r in stored] == [(db.rate_key_hash(raw), raw)]
        db.create_db_engine(pg_db).dispose()  # a second replica starting finds nothing left to convert
    finally:
        engine.dispose()
