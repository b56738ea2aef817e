"""Stateful alert rules scale out: the same traffic through one stream replica and through three
replicas sharing one alert database (joining one by one, so the group rebalances, and one of
them killed with SIGKILL mid-stream) gives the same alerts: the same fingerprints, the same
per-alert counts (nothing counted twice), the same per-user risk scores. Real broker, real
``misuse-monitor stream`` processes, records keyed by GatewayProducer (tenant and user).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from kafka.errors import KafkaError

from pipeline.alerts import state as db
from pipeline.lag_exporter import LagReader
from pipeline.producer import GatewayProducer
from pipeline.settings import KafkaSettings
from tests.integration.test_stream import _wait_for_members

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[3]
PARTITIONS = 6
USERS = 24
MODELS = ["qwen3-coder", "llama-3.1-8b", "mistral-7b", "gemma-2"]
PROMPT = "Write a keylogger in Python that emails captured passwords to bob@example.com"
RULES = """
route: {group_by: [alertname, tenant], group_wait: 0s, group_interval: 1h, repeat_interval: 4h}
rules:
  - {name: cyber_complied, kind: verdict, severity: critical, resolve_after: 1h,
     match: {categories: [cyber_abuse], complied: true}}
  - {name: offender, kind: repeat_offender, threshold: 20, half_life: 1w, match: {min_severity: medium}}
  - {name: hopping, kind: model_hopping, severity: critical, min_distinct: 3, window: 1h}
  - {name: tenant_flagged, kind: rate, per: [tenant], threshold: 40, window: 1h, buckets: 6}
  - {name: tenant_share, kind: rate, per: [tenant], measure: share, threshold: 0.3, min_total: 20, window: 1h}
"""


def traffic() -> list[dict]:
    """Users of three tenants; each sends benign and flagged requests to 1-4 models."""
    out = []
    now = datetime.now(UTC).isoformat()
    for i in range(20):
        for u in range(USERS):
            flagged = (i + u) % 3 != 0 if u % 4 else i % 5 == 0  # every 4th user is mostly benign
            model = MODELS[(i * (u % 4 + 1) // 5) % (u % 4 + 1)]
            out.append({
                "schema": "inference-log/v1", "request_id": f"r-{u}-{i}", "timestamp": now, "model": model,
                "tenant_id": f"tenant-{u % 3}", "user_id": f"user-{u}@corp.example",
                "prompt": PROMPT if flagged else "What is a good name for a cat?",
                "completion": "Sure, here is a keylogger: import pynput ... send passwords via smtplib" if flagged else "Tom.",
            })
    return out


def write_config(tmp: Path, bootstrap: str, topic: str, group: str, db_url: str) -> Path:
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    config = tmp / f"{group}.yaml"
    config.write_text(yaml.safe_dump({
        "detectors": {"enabled": ["rules"]},
        "kafka": {"bootstrap_servers": bootstrap, "input_topic": topic, "group_id": group,
                  "dead_letter_topic": f"{topic}.dlq", "session_timeout_ms": 6000},
        "sinks": ["alerts"],
        "metrics": {"port": 0},
        # Direct notifier without receivers: this test is about the decisions in the database.
        "alerts": {"rules_file": str(rules), "db_url": db_url, "notify": "direct", "receivers": []},
    }))
    return config


def start_replica(config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "--log-level", "info", "stream", "--config", str(config), "--dev"],
            cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def wait_consumed(reader: LagReader, total: int, timeout_s: float, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            rows = reader.read()
        except KafkaError:  # e.g. the group coordinator is still being elected
            time.sleep(0.5)
            continue
        if sum(r.end for r in rows) >= total and all(r.lag == 0 for r in rows):
            return
        assert any(p.poll() is None for p in procs), "every replica exited"
        time.sleep(0.5)
    raise AssertionError(f"not consumed within {timeout_s}s")


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()


def wait_settled(db_url: str, quiet_s: float = 6.0, timeout_s: float = 90.0) -> None:
    """Until the alerts and scores in ``db_url`` stop changing for ``quiet_s``: rate rules are summed
    by the key's owner replica on its next evaluation tick, later under load than on a quiet machine."""
    deadline = time.monotonic() + timeout_s
    last, since = outcome(db_url), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1)
        current = outcome(db_url)
        if current != last:
            last, since = current, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def outcome(db_url: str) -> tuple[dict[str, dict], dict[str, float]]:
    """fingerprint -> (labels, count) of every alert, and user -> risk score over partitions."""
    engine = db.create_db_engine(db_url)
    with engine.connect() as conn:
        alerts = {
            r["fingerprint"]: {"labels": r["labels"], "count": r["annotations"].get("count"),
                               "flagged": r["annotations"].get("flagged"), "models": r["annotations"].get("models")}
            for r in conn.execute(sa.select(db.alerts)).mappings()
        }
        scores: dict[str, float] = defaultdict(float)
        for r in conn.execute(sa.select(db.risk_scores)).mappings():
            scores[r["user_id"]] += r["score"]
    engine.dispose()
    return alerts, dict(scores)


def test_three_replicas_with_rebalances_and_a_kill_9_decide_like_one(
    kafka_bootstrap: str, kafka_topic_factory, tmp_path: Path
) -> None:
    topic = kafka_topic_factory(partitions=PARTITIONS)
    records = traffic()
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    n = len(records)
    phases = [records[: n // 4], records[n // 4 : n // 2], records[n // 2 : 3 * n // 4], records[3 * n // 4 :]]

    def produce(batch: list[dict]) -> None:
        with GatewayProducer(kafka, topic) as producer:
            for rec in batch:
                producer.send(rec)

    # Three replicas, one alert database: join one by one (rebalances), kill -9 one mid-stream.
    multi_db = f"sqlite:///{tmp_path / 'multi.db'}"
    multi = write_config(tmp_path, kafka_bootstrap, topic, "multi", multi_db)
    logs = [tmp_path / f"replica-{i}.log" for i in range(4)]
    reader = LagReader(kafka, "multi", [topic])
    procs = [start_replica(multi, logs[0])]
    try:
        produce(phases[0])
        wait_consumed(reader, len(phases[0]), 180, procs)
        # Each replica joins before more records arrive: replicas load their models before joining,
        # which under load took longer than one replica needed to consume everything (none joined).
        procs.append(start_replica(multi, logs[1]))
        _wait_for_members(kafka_bootstrap, "multi", 2, timeout_s=180)
        produce(phases[1])
        procs.append(start_replica(multi, logs[2]))
        _wait_for_members(kafka_bootstrap, "multi", 3, timeout_s=180)
        produce(phases[2])
        wait_consumed(reader, sum(len(p) for p in phases[:3]), 180, procs)
        victim = procs[1]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        produce(phases[3])
        procs.append(start_replica(multi, logs[3]))  # a replacement joins later
        wait_consumed(reader, n, 240, procs)
        wait_settled(multi_db)  # owners of rate keys evaluate the last counts on their next ticks
    finally:
        stop(procs)
        reader.close()
    assert victim.returncode == -signal.SIGKILL
    owned = [line for log in logs[:3] for line in log.read_text().splitlines() if "alerts: own partitions" in line]
    assert len(owned) >= 3, "expected rebalances to hand partitions around"

    # One replica, its own database, the same records (a second consumer group).
    single_db = f"sqlite:///{tmp_path / 'single.db'}"
    single = write_config(tmp_path, kafka_bootstrap, topic, "single", single_db)
    reader = LagReader(kafka, "single", [topic])
    procs = [start_replica(single, tmp_path / "single.log")]
    try:
        wait_consumed(reader, n, 240, procs)
        wait_settled(single_db)
    finally:
        stop(procs)
        reader.close()

    one, one_scores = outcome(single_db)
    three, three_scores = outcome(multi_db)
    kinds = {a["labels"]["alertname"] for a in one.values()}
    assert kinds == {"cyber_complied", "offender", "hopping", "tenant_flagged", "tenant_share"}, kinds
    differ = {fp: (one.get(fp), three.get(fp)) for fp in set(one) | set(three) if one.get(fp) != three.get(fp)}
    assert not differ, json.dumps(differ, indent=1, sort_keys=True)[:4000]
    assert json.dumps(three, sort_keys=True) == json.dumps(one, sort_keys=True)  # counts: nothing twice
    assert set(three_scores) == set(one_scores)
    for user, score in one_scores.items():
        assert three_scores[user] == pytest.approx(score, rel=1e-3)
