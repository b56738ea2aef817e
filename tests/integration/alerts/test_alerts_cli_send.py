"""`alerts test --send` delivers a signed test notification to a real local receiver."""

from __future__ import annotations

from pathlib import Path

import yaml
from typer.testing import CliRunner

from pipeline.alerts.cli import app
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

from .conftest import SECRET

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "alert-rules.yaml"


def test_send_reports_delivered_and_failed_receivers(receiver: WebhookReceiverServer, tmp_path: Path) -> None:
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
    result = CliRunner().invoke(app, ["--alerts-config", str(config), "test", "--send", "--timeout-s", "10"])
    assert result.exit_code == 1, result.output
    assert "good: delivered" in result.output
    assert "wrong-secret: dead" in result.output and "401" in result.output
    [accepted] = receiver.accepted.values()
    assert accepted.json()["alerts"][0]["labels"]["alertname"] == "mm_test_alert"
