"""Rule evaluation: which verdicts fire which alerts, windows, decay, and state across restarts."""

from __future__ import annotations

import pytest

from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.state import create_db_engine
from pipeline.schemas import Category, Severity

from .conftest import FakeClock, VerdictFactory


def firing(engine: AlertEngine, clock: FakeClock, rule: str) -> list[dict[str, str]]:
    return [a.labels for a in engine.alerts.values() if a.rule == rule and a.firing(clock.now)]


def make(yaml_text: str, clock: FakeClock) -> AlertEngine:
    return AlertEngine(parse_rules(yaml_text), clock=clock)


CRITICAL_CYBER = """
rules:
  - {name: crit_cyber, kind: verdict, severity: critical, resolve_after: 10m,
     match: {categories: [cyber_abuse], min_severity: critical, complied: true}}
"""


def test_verdict_rule_fires_only_for_matching_category_severity_and_compliance(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make(CRITICAL_CYBER, clock)
    engine.observe(
        [
            verdict(severity=Severity.HIGH),  # below minimum severity
            verdict(severity=Severity.CRITICAL, complied=False),  # refused
            verdict(severity=Severity.CRITICAL, categories=(Category.MISINFORMATION,)),  # other category
            verdict(flagged=False),
        ]
    )
    assert firing(engine, clock, "crit_cyber") == []
    engine.observe([verdict(severity=Severity.CRITICAL, user="u_bob")])
    [labels] = firing(engine, clock, "crit_cyber")
    assert labels["user"] == "u_bob" and labels["category"] == "cyber_abuse" and labels["severity"] == "critical"


def test_repeated_verdicts_are_one_alert_that_resolves_after_quiet_period(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make(CRITICAL_CYBER, clock)
    for _ in range(3):
        engine.observe([verdict(severity=Severity.CRITICAL)])
        clock.advance(60)
    [alert] = engine.alerts.values()
    assert alert.annotations["count"] == "3"
    clock.advance(9 * 60 - 1)
    assert alert.firing(clock.now)
    clock.advance(2)
    assert not alert.firing(clock.now)


def test_alert_evidence_is_redacted_and_short(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make(CRITICAL_CYBER, clock)
    engine.observe([verdict(severity=Severity.CRITICAL, evidence="mail ceo@corp.example from 10.1.2.3 card 4111 1111 1111 1111")])
    [alert] = engine.alerts.values()
    snippet = str(alert.evidence[0]["snippet"])
    assert "ceo@corp.example" not in snippet and "10.1.2.3" not in snippet and "4111" not in snippet
    assert "<EMAIL>" in snippet and "<IP>" in snippet


def test_rate_count_over_sliding_window(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make(
        "rules: [{name: burst, kind: rate, per: [tenant], window: 10m, threshold: 5, match: {categories: [jailbreak]}}]",
        clock,
    )
    jb = (Category.JAILBREAK,)
    for _ in range(4):
        engine.observe([verdict(categories=jb), verdict(flagged=False)])
        clock.advance(60)
    assert firing(engine, clock, "burst") == []
    engine.observe([verdict(categories=jb, tenant="other")])  # another key
    assert firing(engine, clock, "burst") == []
    engine.observe([verdict(categories=jb)])
    assert [lbl["tenant"] for lbl in firing(engine, clock, "burst")] == ["acme"]
    # Nothing new: once the first bucket leaves the window, 4 < 5 and the alert resolves by itself.
    clock.advance(5 * 60)
    assert firing(engine, clock, "burst")
    clock.advance(2 * 60)
    assert firing(engine, clock, "burst") == []
    # A new burst later: its end is computed from the current window only, not stale buckets.
    clock.advance(60)
    engine.observe([verdict(categories=jb) for _ in range(5)])
    [alert] = [a for a in engine.alerts.values() if a.firing(clock.now)]
    assert alert.ends_at == clock.now - clock.now % 60 + 600


def test_rate_share_needs_min_total_and_threshold(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make(
        "rules: [{name: share, kind: rate, per: [deployment], window: 5m, measure: share, threshold: 0.3, min_total: 10,"
        " match: {categories: [jailbreak]}}]",
        clock,
    )
    jb = (Category.JAILBREAK,)
    engine.observe([verdict(categories=jb)] * 3)  # 100 % but only 3 verdicts
    assert firing(engine, clock, "share") == []
    engine.observe([verdict(flagged=False)] * 17)  # 3 / 20 = 15 %
    assert firing(engine, clock, "share") == []
    engine.observe([verdict(categories=jb)] * 5)  # 8 / 25 = 32 %
    assert firing(engine, clock, "share")
    engine.observe([verdict(flagged=False)] * 10)  # 8 / 35 = 23 %
    assert firing(engine, clock, "share") == []


def test_spike_against_own_baseline_per_model_and_category(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make(
        "rules: [{name: spike, kind: rate, per: [model, category], window: 1m,"
        " baseline: {windows: 5, factor: 3, min_count: 5}}]",
        clock,
    )
    for _ in range(5):  # steady 4 per minute
        engine.observe([verdict(model="coder")] * 4)
        clock.advance(60)
    engine.observe([verdict(model="coder")] * 8)  # 2x baseline: not a spike
    assert firing(engine, clock, "spike") == []
    clock.advance(60)
    engine.observe([verdict(model="coder")] * 16)  # > 3x the baseline mean (4.8)
    [labels] = firing(engine, clock, "spike")
    assert labels["model"] == "coder" and labels["category"] == "cyber_abuse"
    clock.advance(90)
    engine.tick()  # quiet minute: below the baseline again
    assert firing(engine, clock, "spike") == []


def test_repeat_offender_score_adds_up_and_decays(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make(
        "rules: [{name: offender, kind: repeat_offender, half_life: 1h, threshold: 10,"
        " weights: {low: 1, medium: 2, high: 4, critical: 8}}]",
        clock,
    )
    engine.observe([verdict(severity=Severity.HIGH), verdict(severity=Severity.HIGH)])
    assert firing(engine, clock, "offender") == []
    clock.advance(3600)  # 8 -> 4
    engine.observe([verdict(severity=Severity.HIGH)])
    assert firing(engine, clock, "offender") == []  # 4 + 4 = 8 < 10
    engine.observe([verdict(severity=Severity.MEDIUM)])  # 10
    [labels] = firing(engine, clock, "offender")
    assert labels["user"] == "u_alice"
    clock.advance(600)  # decays below 10 and resolves by itself
    assert firing(engine, clock, "offender") == []
    assert 8 < engine.risk_score("offender", "u_alice") < 10


def test_model_hopping_counts_distinct_models_in_window(clock: FakeClock, verdict: VerdictFactory) -> None:
    engine = make("rules: [{name: hop, kind: model_hopping, min_distinct: 3, window: 30m}]", clock)
    engine.observe([verdict(model="coder"), verdict(model="coder")])
    clock.advance(20 * 60)
    engine.observe([verdict(model="reasoner")])
    clock.advance(15 * 60)  # 'coder' left the window
    engine.observe([verdict(model="translator")])
    assert firing(engine, clock, "hop") == []
    engine.observe([verdict(model="coder"), verdict(model="other-user-model", user="u_bob")])
    [alert] = [a for a in engine.alerts.values() if a.firing(clock.now)]
    assert alert.labels["user"] == "u_alice"
    assert alert.annotations["models"] == "coder,reasoner,translator"


def test_windows_scores_and_alerts_survive_a_restart(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    text = """
rules:
  - {name: burst, kind: rate, per: [tenant], window: 10m, threshold: 4}
  - {name: offender, kind: repeat_offender, half_life: 1h, threshold: 10}
  - {name: hop, kind: model_hopping, min_distinct: 2, window: 1h}
"""
    db = create_db_engine(db_url)
    first = make(text, clock)
    first.observe([verdict(model="coder"), verdict(model="coder"), verdict(model="coder", severity=Severity.CRITICAL)])
    with db.begin() as conn:
        first.save(conn)
    assert firing(first, clock, "burst") == [] and firing(first, clock, "hop") == []

    clock.advance(60)
    second = make(text, clock)
    with db.connect() as conn:
        second.load(conn)
    second.observe([verdict(model="reasoner")])  # 4th in the window, 2nd model, score 2+2+8+2*... >= 10
    assert firing(second, clock, "burst") and firing(second, clock, "hop") and firing(second, clock, "offender")


OFFENDER_AND_HOP = """
rules:
  - {name: offender, kind: repeat_offender, half_life: 1h, threshold: 10, weights: {high: 4}}
  - {name: hop, kind: model_hopping, min_distinct: 3, window: 30m}
"""


def test_one_user_id_in_two_tenants_is_two_users(clock: FakeClock, verdict: VerdictFactory) -> None:
    """User ids are the tenant's own (a request's ``user`` field), so "1042" of acme and "1042" of
    globex share a pseudonym. Keyed on it alone, their risk scores and model sightings added up,
    and one alert showed both tenants' evidence under the tenant seen last (a hostile review,
    2026-12-07)."""
    engine = make(OFFENDER_AND_HOP, clock)
    engine.observe([verdict(tenant="acme", model="coder", evidence="acme's prompt") for _ in range(2)])
    engine.observe([verdict(tenant="globex", model=m, evidence="globex's prompt") for m in ("reasoner", "translator")])
    assert firing(engine, clock, "offender") == [] and firing(engine, clock, "hop") == []  # 8 and 8, 1 and 2 models
    assert engine.risk_score("offender", "u_alice", "acme") == 8 and engine.risk_score("offender", "u_alice", "globex") == 8
    assert engine.risk_score("offender", "u_alice") == 16  # summed over tenants when none is named

    engine.observe([verdict(tenant="globex", model="coder", evidence="globex again")])
    [labels] = firing(engine, clock, "offender")
    assert labels["tenant"] == "globex" and labels["user"] == "u_alice"
    [hop] = firing(engine, clock, "hop")
    assert hop["tenant"] == "globex"
    engine.observe([verdict(tenant="acme", model="coder", evidence="acme again")])
    by_tenant = {(a.rule, a.labels["tenant"]): a for a in engine.alerts.values() if a.firing(clock.now)}
    assert set(by_tenant) == {("offender", "globex"), ("offender", "acme"), ("hop", "globex")}
    assert all("globex" not in e["snippet"] for e in by_tenant[("offender", "acme")].evidence)
    assert all("acme" not in e["snippet"] for e in by_tenant[("offender", "globex")].evidence)


def test_model_hopping_names_a_bounded_number_of_models(clock: FakeClock, verdict: VerdictFactory, db_url: str) -> None:
    """2,000 distinct model names made one alert of about 500 KB, rewritten at every flush and
    re-sent to Alertmanager every minute (a hostile review, 2026-12-07)."""
    from pipeline.alerts.engine import MAX_NAMED_TARGETS, MAX_SIGHTINGS

    engine = make("rules: [{name: hop, kind: model_hopping, min_distinct: 3, window: 30m}]", clock)
    for i in range(500):
        engine.observe([verdict(model=f"m{i:04d}-" + "x" * 200)])
        clock.advance(1)
    [alert] = [a for a in engine.alerts.values() if a.firing(clock.now)]
    named = alert.annotations["models"].split(",")
    assert len(named) == MAX_NAMED_TARGETS + 1 and named[-1] == f"... {3 + MAX_SIGHTINGS - MAX_NAMED_TARGETS} more"
    assert named[0].startswith("m0490-") and named[MAX_NAMED_TARGETS - 1].startswith("m0499-")  # the newest
    assert alert.annotations["distinct"] == str(3 + MAX_SIGHTINGS)
    with create_db_engine(db_url).begin() as conn:
        engine.save(conn)
        stored = conn.exec_driver_sql("SELECT count(*) FROM mm_alert_hop_sightings").scalar()
    assert stored == 3 + MAX_SIGHTINGS


@pytest.mark.parametrize("new_row", ["none", "before", "after"])
def test_state_written_before_users_were_keyed_by_tenant_carries_over(
    new_row: str, clock: FakeClock, verdict: VerdictFactory, db_url: str
) -> None:
    """Rows of the release before hold the pseudonym alone. Read as they were, an upgrade reset
    every score and sighting to zero under the new keys (a review of 2026-12-07): they move to the
    key of the tenant they name, and the old rows go. A row a replica of this release already
    wrote under the new key adds up with it, whichever comes first (the first version kept only
    the later one)."""
    import sqlalchemy as sa

    from pipeline.alerts import state as db
    from pipeline.alerts.engine import _subject

    engine = create_db_engine(db_url)
    old = {"partition": 0, "rule": "offender", "user_id": "u_alice", "score": 8.0, "updated_at": clock.now,
           "context": {"tenant": "acme", "last_request_id": "r"}}
    newer = {**old, "user_id": _subject("u_alice", "acme"), "score": 0.0 if new_row == "none" else 2.0}
    with engine.begin() as conn:
        for row in {"none": [old], "before": [newer, old], "after": [old, newer]}[new_row]:
            conn.execute(sa.insert(db.risk_scores), [row])
        conn.execute(sa.insert(db.hop_sightings), [{"partition": 0, "rule": "hop", "user_id": "u_alice", "target": m,
                                                    "last_seen": clock.now, "tenant": "acme"} for m in ("coder", "reasoner")])
    upgraded = make(OFFENDER_AND_HOP, clock)
    with engine.begin() as conn:
        upgraded.load(conn)
    extra = 0 if new_row == "none" else 2
    assert upgraded.risk_score("offender", "u_alice", "acme") == 8 + extra
    upgraded.observe([verdict(tenant="acme", model="translator")], [0])
    assert upgraded.risk_score("offender", "u_alice", "acme") == 12 + extra
    assert [a["tenant"] for a in firing(upgraded, clock, "offender")] == ["acme"]
    assert [a["tenant"] for a in firing(upgraded, clock, "hop")] == ["acme"]  # coder, reasoner, translator
    with engine.begin() as conn:
        upgraded.save(conn)
        users = {r[0] for r in conn.execute(sa.select(db.risk_scores.c.user_id))} | {
            r[0] for r in conn.execute(sa.select(db.hop_sightings.c.user_id))}
    assert len(users) == 1 and users.pop().startswith("u_alice@")


def test_a_clock_stepped_back_does_not_grow_a_score(clock: FakeClock, verdict: VerdictFactory) -> None:
    """A hostile review (2026-12-07): the score was decayed by now minus the time it was held as
    of, which is negative once the host's clock steps back (NTP, a VM restored): 8 + 2 became 13
    and a repeat offender alert fired for a user under the threshold."""
    engine = make(
        "rules: [{name: offender, kind: repeat_offender, half_life: 6h, threshold: 12, weights: {medium: 2, high: 4}}]", clock
    )
    engine.observe([verdict(severity=Severity.HIGH), verdict(severity=Severity.HIGH)])  # 8
    clock.advance(-3 * 3600)
    engine.observe([verdict(severity=Severity.MEDIUM)])  # 10 at most, under 12
    assert firing(engine, clock, "offender") == []
    assert engine.risk_score("offender", "u_alice") == 10


def test_a_big_clock_step_back_neither_raises_nor_keeps_the_future_time(
    clock: FakeClock, verdict: VerdictFactory, db_url: str
) -> None:
    """0.5 ** -1440 (a day back, a half-life of a minute) raised OverflowError out of observe, and
    out of every flush after it from the pruning pass: the stream crashed in a loop. A score saved
    before the step is held as of now when it is loaded."""
    import sqlalchemy as sa

    from pipeline.alerts import state as db

    text = "rules: [{name: offender, kind: repeat_offender, half_life: 1m, threshold: 10, weights: {high: 4}}]"
    store = create_db_engine(db_url)
    first = make(text, clock)
    first.observe([verdict(severity=Severity.HIGH)])
    with store.begin() as conn:
        first.save(conn)
    clock.advance(-86400)
    first.observe([verdict(severity=Severity.HIGH)])
    first.tick()  # prunes
    assert firing(first, clock, "offender") == [] and first.risk_score("offender", "u_alice") == 8

    restarted = make(text, clock)
    with store.connect() as conn:
        restarted.load(conn)
    restarted.tick()
    restarted.observe([verdict(severity=Severity.HIGH)])
    assert restarted.risk_score("offender", "u_alice") == 8
    with store.begin() as conn:
        restarted.save(conn)
        assert conn.execute(sa.select(db.risk_scores.c.updated_at)).scalar() == clock.now
