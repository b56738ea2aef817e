"""Prometheus rules: valid for promtool and behaving as the unit tests in the rules folder pin."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import dashboards

RULES_DIR = Path(dashboards.__file__).parent / "rules"
RULES = RULES_DIR / "misuse-monitor.rules.yml"
RULE_TESTS = RULES_DIR / "misuse-monitor.rules.test.yml"

pytestmark = pytest.mark.prometheus


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    assert binary, "promtool not found: apt-get install prometheus"
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=RULES_DIR, timeout=120, check=False)


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_unit_test() -> None:
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    assert {"MisuseSpike", "MisuseConsumerLagHigh", "MisuseDeadLetterSurge", "MisuseAlertDeliveryFailing", "MisuseStreamDown",
            "MisuseStreamAbsent", "MisuseStreamStalled", "MisuseAlertBacklog"} <= alerts
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == fired, f"alerts without a test that makes them fire: {alerts - fired}"
