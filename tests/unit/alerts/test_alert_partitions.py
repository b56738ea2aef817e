"""Rule state owned per input partition: replicas sharing one alert database load what they are
assigned, release what is revoked, sum rate windows across partitions, and a replica that lost a
partition behind its back (fenced by the ownership epoch) never overwrites the new owner."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from pipeline.alerts import state as db
from pipeline.alerts.engine import owner_partition
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.service import Alerting
from pipeline.alerts.settings import AlertSettings
from pipeline.schemas import InferenceLog, Severity
from pipeline.sinks.alerts import AlertsSink
from pipeline.sinks.base import ScoredRecord, SourcePosition

from .conftest import FakeClock, VerdictFactory

TOPIC = "logs"
RULES = """
rules:
  - {name: offender, kind: repeat_offender, half_life: 1w, threshold: 1000}
  - {name: tenant_count, kind: rate, per: [tenant], threshold: 6, window: 10m}
"""


def replica(db_url: str, clock: FakeClock) -> Alerting:
    settings = AlertSettings(db_url=db_url, notify="direct", run_dispatcher=False)
    return Alerting.build(settings, CollectorRegistry(), rules=parse_rules(RULES), clock=clock)


def batch(verdict: VerdictFactory, clock: FakeClock, partition: int, offsets: range, user: str) -> list[ScoredRecord]:
    log = InferenceLog.model_validate(
        {"schema": "inference-log/v1", "request_id": "r", "timestamp": datetime.fromtimestamp(clock.now, UTC), "model": "m", "prompt": "p"}
    )
    return [
        ScoredRecord(log=log, verdict=verdict(user=user, severity=Severity.HIGH), position=SourcePosition(TOPIC, partition, o))
        for o in offsets
    ]


def test_state_moves_with_the_partition(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    a, b = replica(db_url, clock), replica(db_url, clock)
    a.on_assigned([(TOPIC, 0), (TOPIC, 1)], 2)
    a.observe_records(batch(verdict, clock, 0, range(0, 3), "u_p0") + batch(verdict, clock, 1, range(0, 2), "u_p1"))
    a.commit()
    # Rebalance: partition 1 moves to b, which continues where a stopped.
    a.on_revoked([(TOPIC, 1)])
    b.on_assigned([(TOPIC, 1)], 2)
    assert a.engine.risk_score("offender", "u_p1") == 0 and a.engine.risk_score("offender", "u_p0") == 12
    assert b.engine.risk_score("offender", "u_p1") == 8
    b.observe_records(batch(verdict, clock, 1, range(0, 4), "u_p1"))  # offsets 0-1 again: skipped
    b.commit()
    assert b.engine.risk_score("offender", "u_p1") == 16  # 4 records x 4, not 6 x 4
    # a writes partition 0 again; b's partition 1 rows are untouched.
    a.observe_records(batch(verdict, clock, 0, range(3, 4), "u_p0"))
    a.commit()
    with a.db.connect() as conn:
        rows = {(r[0], r[1]): r[2] for r in conn.execute(sa.select(db.risk_scores.c.partition, db.risk_scores.c.user_id, db.risk_scores.c.score))}
    # A row's user is one user of one tenant: the pseudonym, "@" and a hash of the tenant.
    assert {(p, user.partition("@")[0]): score for (p, user), score in rows.items()} == {(0, "u_p0"): 16, (1, "u_p1"): 16}
    assert all("@" in user for _p, user in rows)
    a.close()
    b.close()


def test_a_fenced_replica_never_overwrites_the_new_owner(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    zombie, owner = replica(db_url, clock), replica(db_url, clock)
    zombie.on_assigned([(TOPIC, 0)], 1)
    zombie.observe_records(batch(verdict, clock, 0, range(0, 2), "u_1"))
    zombie.commit()
    # The group gave partition 0 to `owner` while `zombie` was stalled (no revoke callback ran).
    owner.on_assigned([(TOPIC, 0)], 1)
    owner.observe_records(batch(verdict, clock, 0, range(2, 5), "u_1"))
    owner.commit()
    zombie.observe_records(batch(verdict, clock, 0, range(2, 4), "u_1"))  # its in-flight batch
    zombie.commit()
    with owner.db.connect() as conn:
        score = conn.execute(sa.select(db.risk_scores.c.score)).scalar_one()
        offset = conn.execute(sa.select(db.source_offsets.c.offset)).scalar_one()
    assert (score, offset) == (20, 4)  # owner's 5 records, the zombie's replay not written
    assert not zombie.engine.owns(0)
    zombie.close()
    owner.close()


def test_rate_windows_sum_over_partitions_and_only_the_owner_alerts(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    a, b = replica(db_url, clock), replica(db_url, clock)
    a.on_assigned([(TOPIC, 0)], 2)
    b.on_assigned([(TOPIC, 1)], 2)
    key = '["acme"]'
    owner, other = (a, b) if owner_partition("tenant_count", key, 2) == 0 else (b, a)
    own_p = 0 if owner is a else 1
    # 4 flagged on the other replica's partition, 2 on the owner's: 6 in the window.
    other.observe_records(batch(verdict, clock, 1 - own_p, range(0, 4), "u_x"))
    other.commit()
    owner.observe_records(batch(verdict, clock, own_p, range(0, 2), "u_y"))
    owner.commit()
    assert not [al for al in other.engine.alerts.values() if al.rule == "tenant_count"]
    clock.advance(1.0)
    other.tick()
    owner.tick()
    [alert] = [al for al in owner.engine.alerts.values() if al.rule == "tenant_count"]
    assert alert.labels["tenant"] == "acme" and alert.annotations["flagged"] == "6" and alert.partition == own_p
    assert not [al for al in other.engine.alerts.values() if al.rule == "tenant_count"]
    a.close()
    b.close()


def test_without_rebalance_hooks_one_process_owns_everything(clock: FakeClock, verdict: VerdictFactory, tmp_path: Path) -> None:
    alone = replica(f"sqlite:///{tmp_path / 'one.db'}", clock)
    alone.observe_records(batch(verdict, clock, 0, range(0, 3), "u_1") + batch(verdict, clock, 5, range(0, 3), "u_2"))
    alone.commit()
    assert alone.engine.owns(5) and alone.engine.risk_score("offender", "u_2") == 12
    [alert] = [al for al in alone.engine.alerts.values() if al.rule == "tenant_count"]
    assert alert.annotations["flagged"] == "6"
    alone.close()


def test_a_record_produced_twice_counts_once(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    """A producer's retry or a gateway's spill replayed after an outage puts the same record at a
    new offset; request_id is the contract's idempotency key. Two high verdicts replayed counted
    four times and made a repeat offender fire (an on-call review, 2026-12-06)."""
    a = replica(db_url, clock)
    a.on_assigned([(TOPIC, 0)], 1)
    first = batch(verdict, clock, 0, range(0, 2), "u_1")
    a.observe_records(first)
    copies = [ScoredRecord(r.log, r.verdict, SourcePosition(TOPIC, 0, 10 + i)) for i, r in enumerate(first)]
    a.observe_records(copies)
    a.observe_records(batch(verdict, clock, 0, range(20, 21), "u_1"))  # a new record still counts
    a.commit()
    assert a.engine.risk_score("offender", "u_1") == 12  # 3 records x 4, not 5 x 4
    a.close()


def test_a_failed_commit_leaves_the_alert_and_offsets_unsaved_for_the_retry(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    """A hostile review (2026-12-06): the unsaved changes were cleared inside the transaction, so
    after a failed COMMIT the runner's retry found nothing to write, reported success, and the
    Kafka offsets were committed over an alert that existed only in memory."""
    a = replica(db_url, clock)
    a.on_assigned([(TOPIC, 0)], 1)
    a.observe_records(batch(verdict, clock, 0, range(0, 250), "u_many"))  # tenant_count: 250 > 6 in 10 min
    assert a.engine.alerts
    fail = {"left": 1}

    @sa.event.listens_for(a.db, "commit")
    def lost_at_commit(conn) -> None:  # the database goes away at COMMIT, once
        if fail["left"]:
            fail["left"] -= 1
            raise sa.exc.OperationalError("COMMIT", {}, Exception("connection lost at commit"))

    with pytest.raises(sa.exc.OperationalError):
        a.commit()
    a.commit()  # the runner's retry
    with a.db.connect() as conn:
        alerts = conn.execute(sa.select(sa.func.count()).select_from(db.alerts)).scalar()
        offsets = conn.execute(sa.select(db.source_offsets.c.partition, db.source_offsets.c.offset)).all()
    assert alerts == len(a.engine.alerts) > 0
    assert [tuple(r) for r in offsets] == [(0, 249)]  # the last record read
    a.close()


def test_a_batch_that_fails_part_way_is_counted_once_after_the_restart(
    clock: FakeClock, verdict: VerdictFactory, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hostile review (2026-12-07): offsets and request ids moved on before the engine counted
    the batch. The write raised, the runner closed the sink, close() committed those offsets with
    the half of the batch already counted, and the batch re-read after the restart was skipped."""
    a = replica(db_url, clock)
    a.on_assigned([(TOPIC, 0)], 1)
    a.observe_records(batch(verdict, clock, 0, range(0, 1), "u_1"))
    a.commit()
    failing = batch(verdict, clock, 0, range(1, 4), "u_1")
    count = a.engine._observe_offender

    def breaks_on_the_last(rule, v, now, partition) -> None:  # noqa: ANN001 - the engine's own signature
        if v.request_id == failing[-1].verdict.request_id:
            raise RuntimeError("the engine broke on this verdict")
        count(rule, v, now, partition)

    monkeypatch.setattr(a.engine, "_observe_offender", breaks_on_the_last)
    with pytest.raises(RuntimeError, match="broke"):
        AlertsSink(a, run_dispatcher=False).write(failing)
    assert a.engine.risk_score("offender", "u_1") == 12  # two of the three counted before the raise
    AlertsSink(a, run_dispatcher=False).close()  # the runner closes every sink after one raised
    with a.db.connect() as conn:
        assert conn.execute(sa.select(db.source_offsets.c.offset)).scalar() == 0  # the last commit stands

    restarted = replica(db_url, clock)
    restarted.on_assigned([(TOPIC, 0)], 1)
    restarted.observe_records(failing)  # Kafka offsets were not committed: the batch is re-read
    restarted.commit()
    assert restarted.engine.risk_score("offender", "u_1") == 16  # 4 records x 4, each once
    restarted.close()


def test_partitions_revoked_while_the_commit_fails_are_forgotten_all_the_same(
    clock: FakeClock, verdict: VerdictFactory, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A review (2026-12-07): a revoke whose commit raised (the database down at the rebalance)
    left the partitions owned here, so their records kept being counted for another member's
    partition until the epoch fence caught up."""
    a = replica(db_url, clock)
    a.on_assigned([(TOPIC, 0)], 1)
    a.observe_records(batch(verdict, clock, 0, range(0, 2), "u_1"))

    def database_down() -> None:
        raise ConnectionError("could not connect to server")

    monkeypatch.setattr(a, "commit", database_down)
    with pytest.raises(ConnectionError):
        a.on_revoked([(TOPIC, 0)])  # the runner logs it (tests/unit/test_rebalance_hooks.py)
    assert (TOPIC, 0) not in a._offsets and (TOPIC, 0) not in a._epochs
    monkeypatch.undo()
    a.close()


def test_an_assignment_whose_commit_fails_keeps_nothing_of_it(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    """A review (2026-12-07): the runner retries a failed assign hook for the partitions still
    owned. The failed attempt had set epochs and ownership in memory before its COMMIT failed, so
    a partition the retry no longer held stayed owned here at the epoch its new owner also took:
    the fence missed, and this replica's save overwrote the new owner's score and offset."""
    zombie, owner = replica(db_url, clock), replica(db_url, clock)
    lost = [1]

    @sa.event.listens_for(zombie.db, "commit")
    def lost_at_commit(conn) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
        if lost[0]:
            lost[0] -= 1
            raise sa.exc.OperationalError("COMMIT", {}, Exception("connection lost at commit"))

    with pytest.raises(sa.exc.OperationalError):
        zombie.on_assigned([(TOPIC, 0), (TOPIC, 1)], 2)
    zombie.on_assigned([(TOPIC, 1)], 2)  # the retry: p0 went to another member meanwhile
    assert not zombie.engine.owns(0) and (TOPIC, 0) not in zombie._epochs
    owner.on_assigned([(TOPIC, 0)], 2)
    owner.observe_records(batch(verdict, clock, 0, range(0, 5), "u_1"))
    owner.commit()
    zombie.observe_records(batch(verdict, clock, 0, range(0, 2), "u_1"))  # a batch handed out behind the hook
    zombie.commit()
    with owner.db.connect() as conn:
        score = conn.execute(sa.select(db.risk_scores.c.score)).scalar()
        offset = conn.execute(sa.select(db.source_offsets.c.offset).where(db.source_offsets.c.partition == 0)).scalar()
    assert (score, offset) == (20, 4)
    zombie.close()
    owner.close()
