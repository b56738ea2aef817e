"""`misuse-monitor report --alerts-db`: the "Alerts" section counts what the alerting stack
really wrote. The database is built by the engine, the direct notifier and the dispatcher
(the same code the stream's alerts sink runs), delivering over HTTP to real local receivers:
one that accepts, one that rejects the signature (dead letters), one that is down (pending)."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.alerts import state as db
from pipeline.alerts.receivers.webhook import IDEMPOTENCY_HEADER
from pipeline.cli import main
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer
from pipeline.schemas import Category, Finding, MisuseVerdict, Severity, Side
from tests.unit.test_report import _aggregates_output

from .conftest import AlertingFactory, critical_verdict, webhook

RULES = """
route: {group_by: [user], group_wait: 0s, group_interval: 1h, repeat_interval: 4h}
rules:
  - {name: crit_cyber, kind: verdict, severity: critical, match: {min_severity: critical}}
  - {name: brief_jailbreak, kind: verdict, severity: warning, resolve_after: 1s,
     match: {categories: [jailbreak]}, receivers: [oncall]}
"""
CRITICAL_USERS = ["u_1", "u_2", "u_3"]


def _key(headers: dict[str, str]) -> str:
    return {k.lower(): v for k, v in headers.items()}[IDEMPOTENCY_HEADER.lower()]


def _jailbreak(user: str) -> MisuseVerdict:
    return MisuseVerdict(
        request_id=f"req-jb-{user}", timestamp=datetime.now(UTC), model="qwen3-coder", deployment="prod",
        tenant_id="acme", user_id=user, flagged=True, severity=Severity.HIGH, categories=[Category.JAILBREAK],
        complied=False,
        findings=[Finding(category=Category.JAILBREAK, side=Side.PROMPT, score=0.91, detector="rules",
                          detector_version="1", evidence="ignore all previous instructions")],
    )


def test_report_shows_the_alerts_fired_and_their_deliveries(
    receiver: WebhookReceiverServer, build_alerting: AlertingFactory, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    with WebhookReceiverServer() as down:
        down.down = True
        alerting = build_alerting(RULES, [
            webhook(receiver.url + "/oncall", "oncall"),
            webhook(receiver.url + "/stale", "stale-key", secret="not-the-receivers-secret"),
            webhook(down.url + "/paused", "paused"),
        ], db_url=url)
        verdicts = [critical_verdict(u) for u in CRITICAL_USERS] + [_jailbreak("u_9")]
        alerting.observe(verdicts)
        alerting.commit()
        # Deliver until every row of the two reachable receivers is settled and the down one was tried.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            alerting.dispatcher.run_once()
            with alerting.db.connect() as conn:
                rows = conn.execute(sa.select(db.outbox.c.receiver, db.outbox.c.state, db.outbox.c.attempts)).all()
            if rows and all(
                (state != "pending") if name != "paused" else attempts >= 1 for name, state, attempts in rows
            ):
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"outbox did not settle: {rows}")
        paused_keys = {_key(r.headers) for r in down.requests}

    # What the receivers saw over HTTP, per receiver path.
    delivered = {k for k, r in receiver.accepted.items() if r.path == "/oncall"}
    rejected = [r for r in receiver.requests if r.path == "/stale" and r.signature_ok is False]
    assert delivered and rejected and paused_keys
    # One notification per user group: 3 critical users + the jailbreak user for oncall, only the
    # 3 critical users for the receivers the jailbreak rule does not route to.
    assert len(delivered) == len(CRITICAL_USERS) + 1
    assert len(rejected) == len(paused_keys) == len(CRITICAL_USERS)

    # The jailbreak alert resolves 1 s after its verdict; the critical ones fire for 10 minutes.
    with alerting.db.connect() as conn:
        ends = {r[0]["alertname"]: r[1] for r in conn.execute(sa.select(db.alerts.c.labels, db.alerts.c.ends_at))}
    time.sleep(max(0.0, ends["brief_jailbreak"] - time.time() + 0.2))

    jobs = _aggregates_output(tmp_path / "jobs")  # the report needs some job output next to the database
    target = tmp_path / "report.html"
    code = main(["report", str(jobs), "--alerts-db", url, "-o", str(target)])
    assert code == 0, capsys.readouterr().err
    html = target.read_text(encoding="utf-8")
    section = html.split("<h2>Alerts</h2>", 1)[1].split("<h2>", 1)[0]

    def row(*cells: object) -> str:
        return "<tr>" + "".join(f"<td>{c}</td>" for c in cells[:-1]) + f'<td class="num">{cells[-1]}</td></tr>'

    assert row("crit_cyber", "firing", len(CRITICAL_USERS)) in section
    assert row("brief_jailbreak", "resolved", 1) in section
    assert row("oncall", "delivered", len(delivered)) in section
    assert row("stale-key", "dead", len(rejected)) in section
    assert row("paused", "pending", len(paused_keys)) in section
    # Nothing else: exactly these alert and delivery rows.
    assert len(re.findall(r"<tr><td>", section)) == 5
    assert "No alert is firing" not in section and "No alert database given" not in section
    # What the table can hold, said on the page: resolved alerts leave the database minutes later.
    assert "mm_alerts_fired_total" in section
