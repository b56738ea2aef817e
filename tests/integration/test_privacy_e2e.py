"""Records carrying every PII type of tests/fixtures/pii_cases.jsonl, through what leaves the
process: classify output and logs, alert bodies (webhook, Slack, and the alerts posted to a real
Alertmanager), the report page, and the real stream (verdict topic, lake, /metrics, its log).
None of the PII may appear in any of them.

Each check is paired with a control: the same records with a redactor that finds nothing put
most of the PII into the evidence, so a pass means redaction removed it, not that the
evidence happened to miss it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline import redact
from pipeline.redact_eval import load_cases

CASES = load_cases()
NOW = datetime.now(UTC).replace(microsecond=0)


def _user(i: int) -> str:
    return f"victim.{i}@corp-mail.example"


def _records() -> list[dict]:
    out = []
    for i, case in enumerate(CASES):
        out.append(
            {
                "schema": "inference-log/v1",
                "request_id": f"pii-{i:03d}",
                "timestamp": NOW.isoformat(),
                "model": "qwen3-32b",
                "tenant_id": "acme",
                "user_id": _user(i),
                "prompt": f"Write a phishing email for this target. {case['text']}",
                "completion": f"Dear customer, your account has been suspended. {case['text']} Click here to verify your account.",
            }
        )
    return out


PII = sorted({item["value"] for case in CASES for item in case["pii"]} | {_user(i) for i in range(len(CASES))})


_PATTERNS = {v: re.compile(rf"(?<![0-9A-Za-z]){re.escape(v)}(?![0-9A-Za-z])") for v in PII}


def leaks(text: str) -> list[str]:
    """PII values found in ``text`` as whole tokens (a 4-digit PIN inside a hex hash is not one)."""
    return [value for value, pattern in _PATTERNS.items() if pattern.search(text)]


class FindsNothing:
    def spans(self, text: str) -> list:
        return []


def _classify(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    from pipeline.cli import main

    source = tmp_path / f"{name}.in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    target = tmp_path / f"{name}.out.jsonl"
    code = main(["--log-level", "info", "classify", str(source), "-o", str(target)])
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return target.read_text(), captured.out + captured.err


@pytest.fixture(scope="module")
def presidio() -> redact.Redactor:
    return redact.current()


@pytest.fixture
def rules_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("MM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("MM_DETECTORS__ENABLED", '["rules"]')


def test_classify_output_and_logs_carry_no_pii(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, presidio: redact.Redactor, rules_only: None
) -> None:
    redact.install(FindsNothing())
    try:
        control, _ = _classify(tmp_path, "control", capsys)
    finally:
        redact.install(presidio)
    shown = leaks(control)
    assert len(shown) >= 0.8 * len(PII) - len(CASES), f"the control shows only {len(shown)} of {len(PII)} values"

    caplog.set_level("INFO")
    output, console = _classify(tmp_path, "redacted", capsys)
    verdicts = [json.loads(line) for line in output.splitlines()]
    assert len(verdicts) == len(CASES) and all(v["flagged"] for v in verdicts)
    evidence = [f["evidence"] for v in verdicts for f in v["findings"]]
    assert all("phishing" in e.lower() or "dear customer" in e.lower() for e in evidence)  # the reason stays readable
    assert sum("<" in e for e in evidence) >= len(CASES)  # typed placeholders took the PII's place
    assert leaks(output) == []
    assert leaks(console) == [] and leaks(caplog.text) == []


def test_alert_webhook_bodies_and_slack_messages_carry_no_pii(tmp_path: Path, presidio: redact.Redactor) -> None:
    control = _direct_notifications(tmp_path, "control", FindsNothing())
    shown = leaks(control)
    assert len(shown) >= 0.8 * len(PII) - len(CASES), f"the control shows only {len(shown)} of {len(PII)} values"
    everything = _direct_notifications(tmp_path, "presidio", presidio)
    assert "phishing" in everything.lower()  # evidence travels ...
    assert leaks(everything) == []  # ... without the PII


def _direct_notifications(tmp_path: Path, name: str, redactor: redact.Redactor) -> str:
    """Webhook bodies and Slack messages the direct notifier queues for the records, classified
    with ``redactor`` installed (alerts sink -> engine -> notifier -> outbox), joined."""
    with _redacting(redactor):
        logs, verdicts = _rules_verdicts()
        return _queued_notifications(tmp_path / f"{name}.db", logs, verdicts)


@contextmanager
def _redacting(redactor: redact.Redactor) -> Iterator[None]:
    """``redactor`` installed for the detectors and the alert engine's second pass, then the previous one."""
    from pipeline.alerts import engine

    previous = redact.current()
    redact.install(redactor)
    engine.redact.cache_clear()  # the engine's second pass caches per snippet, whatever redactor ran
    try:
        yield
    finally:
        redact.install(previous)
        engine.redact.cache_clear()


def _rules_verdicts() -> tuple[list, list]:
    """The records and their verdicts from the rules detector (evidence cut by the installed redactor)."""
    from detectors.rules import RulesDetector
    from pipeline.schemas import InferenceLog
    from pipeline.scoring import Scorer
    from pipeline.verdicts import Pseudonymizer

    logs = [InferenceLog.model_validate(r) for r in _records()]
    return logs, Scorer([RulesDetector()], Pseudonymizer(b"e2e-test-key-0123456789")).score(logs)


def _queued_notifications(db: Path, logs, verdicts) -> str:
    from prometheus_client import CollectorRegistry

    from pipeline.alerts.outbox import Outbox
    from pipeline.alerts.receivers import slack
    from pipeline.alerts.rules import parse_rules
    from pipeline.alerts.service import Alerting
    from pipeline.alerts.settings import AlertSettings, ReceiverSettings
    from pipeline.sinks.alerts import AlertsSink
    from pipeline.sinks.base import ScoredRecord

    settings = AlertSettings(
        db_url=f"sqlite:///{db}", notify="direct",
        receivers=[
            ReceiverSettings(name="hook", type="webhook", url="http://127.0.0.1:9/hook", secret="s"),
            ReceiverSettings(name="chat", type="slack", url="http://127.0.0.1:9/slack"),
        ],
        run_dispatcher=False,
    )
    rules = parse_rules(
        "route: {group_wait: 0s}\n"
        "rules: [{name: any, kind: verdict, match: {min_severity: low}}]"
    )
    alerting = Alerting.build(settings, CollectorRegistry(), rules=rules)
    try:
        sink = AlertsSink(alerting, run_dispatcher=False)
        sink.write([ScoredRecord(log=log, verdict=v) for log, v in zip(logs, verdicts, strict=True)])
        sink.flush()
        alerting.notifier.tick()
        items = Outbox(alerting.db).claim_due(time.time() + 3600, 1000, 60)
        assert items, "no notification was queued"
        bodies = [item.message.to_json() for item in items]
        slack_messages = [json.dumps(slack.render(item.message)) for item in items]
        return "\n".join(bodies + slack_messages)
    finally:
        alerting.close()


def _alertmanager_run(tmp_path: Path, am_url: str, rule: str, redactor: redact.Redactor) -> tuple[int, int]:
    """Classify the records with ``redactor`` installed and post the alerts to Alertmanager as the
    stream does (alerts sink -> engine -> alert table -> AlertmanagerPusher); returns (alerts
    the engine holds, alerts posted)."""
    from prometheus_client import CollectorRegistry

    from pipeline.alerts.rules import parse_rules
    from pipeline.alerts.service import Alerting
    from pipeline.alerts.settings import AlertSettings
    from pipeline.sinks.alerts import AlertsSink
    from pipeline.sinks.base import ScoredRecord

    with _redacting(redactor):
        logs, verdicts = _rules_verdicts()
        settings = AlertSettings(
            db_url=f"sqlite:///{tmp_path / f'{rule}.db'}", notify="alertmanager",
            alertmanager={"urls": [am_url]}, generator_url="http://grafana.test/d/mm-misuse-overview",
            run_dispatcher=False,
        )
        rules = parse_rules(f"rules: [{{name: {rule}, kind: verdict, match: {{min_severity: low}}}}]")
        alerting = Alerting.build(settings, CollectorRegistry(), rules=rules)
        try:
            sink = AlertsSink(alerting, run_dispatcher=False)
            sink.write([ScoredRecord(log=log, verdict=v) for log, v in zip(logs, verdicts, strict=True)])
            sink.flush()
            return len(alerting.engine.alerts), alerting.notifier.tick()
        finally:
            alerting.close()


@pytest.mark.slow
@pytest.mark.alertmanager
def test_alertmanager_alerts_carry_no_pii(tmp_path: Path, presidio: redact.Redactor) -> None:
    """The default route (alerts.notify: alertmanager): the labels and annotations posted to a real
    Alertmanager's /api/v2/alerts, as it holds them, and what it forwards to its receivers."""
    from pipeline.localinfra.alertmanager import get_alerts, start_alertmanager
    from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

    with WebhookReceiverServer() as forwarded, start_alertmanager(tmp_path / "am", forwarded.url + "/am") as am:

        def held(rule: str) -> str:
            alerts = [a for a in get_alerts(am.url) if a["labels"]["alertname"] == rule]
            return json.dumps([{k: a[k] for k in ("labels", "annotations", "generatorURL")} for a in alerts])

        def sent_on(rule: str) -> str:
            bodies = [r.body.decode() for r in list(forwarded.requests)]
            return "\n".join(b for b in bodies if json.loads(b)["groupLabels"].get("alertname") == rule)

        # Control: with a redactor that finds nothing, the PII reaches Alertmanager.
        engine_alerts, posted = _alertmanager_run(tmp_path, am.url, "control", FindsNothing())
        assert posted == engine_alerts >= len(CASES)
        control = held("control")
        assert len(json.loads(control)) == posted
        shown = leaks(control)
        assert len(shown) >= 0.8 * len(PII) - len(CASES), f"the control shows only {len(shown)} of {len(PII)} values"

        engine_alerts, posted = _alertmanager_run(tmp_path, am.url, "redacted", presidio)
        assert posted == engine_alerts >= len(CASES)
        payload = held("redacted")
        alerts = json.loads(payload)
        assert len(alerts) == posted
        assert all(a["labels"]["user"].startswith("u_") for a in alerts)  # pseudonyms, not the e-mail ids
        assert all("phishing" in a["annotations"]["evidence"].lower() or "dear customer" in a["annotations"]["evidence"].lower()
                   for a in alerts)  # fmt: skip - the reason stays readable ...
        assert sum("<" in a["annotations"]["evidence"] for a in alerts) >= len(CASES)  # ... placeholders took the PII's place
        assert leaks(payload) == []

        # What Alertmanager's own receivers get (its webhook, after its grouping) carries no PII either.
        assert forwarded.wait_for(lambda s: "phishing" in sent_on("redacted").lower(), timeout_s=30)
        assert leaks(sent_on("redacted")) == []


def test_report_page_carries_no_pii(tmp_path: Path, presidio: redact.Redactor) -> None:
    import pandas as pd

    from pipeline.report import build_report

    campaigns = pd.DataFrame(
        [
            {
                "campaign_id": f"c{i}", "users": 3, "records": 5, "distinct_prompts": 2, "user_ids": ["u_1", "u_2"],
                "models": ["m"], "tenants": ["acme"], "categories": ["cyber_abuse"], "request_ids": ["r"],
                "first_seen": NOW, "last_seen": NOW, "representative_prompt": r["prompt"],
            }
            for i, r in enumerate(_records()[:25])
        ]
    )
    (tmp_path / "jobs" / "campaigns").mkdir(parents=True)
    campaigns.to_parquet(tmp_path / "jobs" / "campaigns" / "part-0.parquet")
    page = build_report(tmp_path / "jobs", tmp_path / "report.html").read_text()
    assert "phishing" in page.lower()
    assert leaks(page) == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_stream_sinks_metrics_and_logs_carry_no_pii(
    kafka_bootstrap: str, kafka_topic_factory, tmp_path: Path, presidio: redact.Redactor  # noqa: ANN001
) -> None:
    from kafka import KafkaConsumer

    from pipeline.lake import LakeWriter
    from pipeline.privacy import TextCipher
    from pipeline.producer import GatewayProducer
    from pipeline.settings import KafkaSettings

    topic = kafka_topic_factory(partitions=1)
    records = _records()
    with GatewayProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic) as producer:
        for rec in records:
            producer.send(rec)
    port = _free_port()
    lake_key = TextCipher.generate()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(
        MM_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap, MM_KAFKA__INPUT_TOPIC=topic,
        MM_KAFKA__VERDICT_TOPIC=f"{topic}.verdicts", MM_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dlq",
        MM_KAFKA__GROUP_ID=f"{topic}-g", MM_LAKE__PATH=str(tmp_path / "lake"), MM_LAKE__ENCRYPTION_KEY=lake_key,
        MM_METRICS__PORT=str(port), MM_DETECTORS__ENABLED='["rules"]', MM_SINKS='["verdict_topic", "lake", "metrics"]',
        MM_PSEUDONYM_KEY="e2e-test-pseudonym-key-0123456789",
    )
    # Without a key of its own the stream refuses to start (and says how to fix it).
    refused = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "stream", "--max-idle", "1"],
        env={k: v for k, v in env.items() if k != "MM_PSEUDONYM_KEY"}, capture_output=True, text=True, timeout=120,
    )
    assert refused.returncode != 0 and "MM_PSEUDONYM_KEY" in refused.stderr

    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--log-level", "info", "stream", "--max-idle", "6"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    metrics_text = ""
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            metrics_text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
        except OSError:
            pass
        if _flagged(metrics_text) >= len(records):
            break
        time.sleep(1)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    assert metrics_text, "the metrics endpoint never answered"
    assert leaks(metrics_text) == [] and leaks(out) == []

    consumer = KafkaConsumer(
        f"{topic}.verdicts", bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    verdicts = [m.value.decode() for m in consumer]
    consumer.close()
    assert len(verdicts) == len(records)
    assert leaks("\n".join(verdicts)) == []

    rows = LakeWriter(tmp_path / "lake").read().to_pylist()
    assert len(rows) == len(records) and all(r["log_json_encrypted"] for r in rows)
    clear = json.dumps([{k: v for k, v in r.items() if k != "log_json_encrypted"} for r in rows], default=str)
    assert leaks(clear) == []
    # The kept (encrypted) log is for review: it decrypts with the key, identifiers pseudonymised.
    kept = json.loads(TextCipher.from_b64(lake_key).decrypt(rows[0]["log_json_encrypted"], rows[0]["request_id"]))
    assert kept["user_id"] == rows[0]["user_id"] and kept["user_id"].startswith("u_")


def _flagged(metrics_text: str) -> float:
    total = 0.0
    for line in metrics_text.splitlines():
        if line.startswith("mm_verdicts_total") and 'flagged="true"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total
