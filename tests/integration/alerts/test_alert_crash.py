"""kill -9 of a dispatcher with alerts in the outbox loses none: after a restart every
notification reaches the receiver, once per idempotency key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from pipeline.alerts import state as db
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

from .conftest import SECRET, AlertingFactory, critical_verdict, fast_delivery, webhook

REPO = Path(__file__).resolve().parents[3]
RULES = """
route: {group_by: [user], group_wait: 0s, group_interval: 1h, repeat_interval: 4h}
rules:
  - {name: crit, kind: verdict, severity: critical, match: {min_severity: critical}}
"""


def start_dispatcher(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.alerts.cli", "--alerts-config", str(config), "dispatch"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
        )


@pytest.mark.slow
def test_kill_9_with_alerts_in_the_outbox_loses_none(
    receiver: WebhookReceiverServer, build_alerting: AlertingFactory, tmp_path: Path
) -> None:
    db_url = f"sqlite:///{tmp_path / 'alerts.db'}"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(RULES)
    alerting = build_alerting(RULES, [webhook(receiver.url)], db_url=db_url)
    alerting.observe([critical_verdict(f"u_{i:02d}") for i in range(30)])
    alerting.commit()
    alerting.notifier.tick()
    with alerting.db.connect() as conn:
        keys = {r[0] for r in conn.execute(sa.select(db.outbox.c.idempotency_key))}
    assert len(keys) == 30

    config = tmp_path / "alerts.yaml"
    settings = {
        "rules_file": str(rules_file),
        "db_url": db_url,
        "notify": "direct",
        "receivers": [{"name": "hook", "type": "webhook", "url": receiver.url, "secret": SECRET}],
        "delivery": fast_delivery(claim_ttl_s=1.0, concurrency=2).model_dump(),
    }
    config.write_text(yaml.safe_dump(settings))
    receiver.hold_s = 0.25  # slow receiver: the kill lands while requests are in flight
    log = tmp_path / "dispatcher.log"

    first = start_dispatcher(config, log)
    try:
        assert receiver.wait_for(lambda r: len(r.accepted) >= 6 and r.in_flight >= 1, timeout_s=60), log.read_text()
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    time.sleep(receiver.hold_s + 0.2)  # let the orphaned in-flight requests finish at the receiver

    with alerting.db.connect() as conn:
        rows = {r[0]: r[1] for r in conn.execute(sa.select(db.outbox.c.idempotency_key, db.outbox.c.state))}
    delivered = {k for k, s in rows.items() if s == "delivered"}
    pending = {k for k, s in rows.items() if s == "pending"}
    assert pending, "the kill should leave work in the outbox"
    # Never marked delivered before the receiver's 2xx.
    assert delivered <= set(receiver.accepted)
    # Received but not recorded as delivered: the sender died between the receiver's 2xx and
    # its own commit; these come again after the restart and the receiver drops them by key.
    unconfirmed = set(receiver.accepted) & pending

    second = start_dispatcher(config, log)
    try:
        assert receiver.wait_for(lambda r: set(r.accepted) == keys, timeout_s=60), log.read_text()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with alerting.db.connect() as conn:
                states = {r[0] for r in conn.execute(sa.select(db.outbox.c.state))}
            if states == {"delivered"}:
                break
            time.sleep(0.1)
        assert states == {"delivered"}
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(15)

    assert set(receiver.accepted) == keys  # every alert, once per key
    assert all(r.signature_ok for r in receiver.requests)
    duplicates = [r for r in receiver.requests if r.duplicate]
    resent_keys = {r.headers["Idempotency-Key"] for r in duplicates}
    print(f"killed with {len(pending)} pending, {len(unconfirmed)} received-but-unconfirmed, {len(duplicates)} duplicate requests dropped")
    assert unconfirmed <= resent_keys
