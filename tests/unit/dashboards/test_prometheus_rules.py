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


@pytest.mark.parametrize(
    ("consumed", "dead_letters", "share"),
    [
        pytest.param("100x30", "0x30", 0, id="idle-stream-reads-0-not-NaN"),
        pytest.param(None, None, 0, id="no-stream-yet-reads-0-not-no-data"),
        pytest.param("0+60x30", "0+6x30", 0.1, id="busy-stream-reads-its-share"),
    ],
)
def test_the_dead_letter_share_panel_reads_0_when_idle(
    tmp_path: Path, consumed: str | None, dead_letters: str | None, share: float
) -> None:
    """A review of the dashboards (2026-12-07): the panel divided two rates, so an idle stream
    read NaN (0/0) and a page with no stream read "No data". The panel's own query, as Grafana
    sends it, evaluated by promtool over the series of each case."""
    from dashboards.pipeline_health import pipeline_health
    from dashboards.queries import render_promql

    [panel] = [p for p in pipeline_health()["panels"] if p.get("title") == "Dead-letter share"]
    expr = render_promql(panel["targets"][0]["expr"], rate_interval="5m")
    series = [
        {"series": f'{name}{{job="stream", instance="a:1", reason="decode", topic="t"}}', "values": values}
        for name, values in (("mm_records_consumed_total", consumed), ("mm_dead_letters_total", dead_letters))
        if values is not None
    ]
    test_file = tmp_path / "share.test.yml"
    test_file.write_text(yaml.safe_dump({
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [{"expr": expr, "eval_time": "20m", "exp_samples": [{"labels": "{}", "value": share}]}],
        }],
    }))
    result = promtool("test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr
