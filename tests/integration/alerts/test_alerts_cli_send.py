"""`alerts test --send` delivers a signed test notification to a real local receiver."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.cli import main
from pipeline.exits import ExitCode
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

from .conftest import SECRET

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "alert-rules.yaml"


def test_send_reports_delivered_and_failed_receivers(
    receiver: WebhookReceiverServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "alerts.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "rules_file": str(EXAMPLE),
                "db_url": f"sqlite:///{tmp_path / 'a.db'}",
                "notify": "direct",
                "receivers": [
                    {"name": "good", "type": "webhook", "url": receiver.url, "secret": SECRET},
                    {"name": "wrong-secret", "type": "webhook", "url": receiver.url, "secret": "nope"},
                ],
            }
        )
    )
    code = main(["alerts", "--alerts-config", str(config), "test", "--send", "--timeout-s", "10"])
    out, err = capsys.readouterr()
    assert code == ExitCode.SERVICE_UNREACHABLE, err
    assert "good: delivered" in out
    assert "wrong-secret: dead" in out and "401" in out
    [line] = err.strip().splitlines()
    assert line.startswith("misuse-monitor: error: test alert not delivered to 1 of 2: wrong-secret: dead") and "401" in line
    [accepted] = receiver.accepted.values()
    assert accepted.json()["alerts"][0]["labels"]["alertname"] == "mm_test_alert"

    code = main(["alerts", "--alerts-config", str(config), "test", "--send", "--timeout-s", "10", "--json"])
    out, err = capsys.readouterr()
    assert code == ExitCode.SERVICE_UNREACHABLE, err
    sent = {s["target"]: s for s in json.loads(out)["sent"]}
    assert (sent["good"]["delivered"], sent["good"]["state"]) == (True, "delivered")
    assert (sent["wrong-secret"]["delivered"], sent["wrong-secret"]["state"]) == (False, "dead")
    assert "401" in sent["wrong-secret"]["detail"] and len(receiver.accepted) == 2
