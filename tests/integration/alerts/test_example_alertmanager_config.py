"""examples/alertmanager.yml, the config docs/alerting.md tells users to start from: valid for the
real ``amtool check-config``, loaded by a real Alertmanager, and its inhibit rule mutes what it says."""

from __future__ import annotations

import shutil
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from pipeline.localinfra.alertmanager import get_alerts, start_alertmanager

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "alertmanager.yml"

pytestmark = pytest.mark.alertmanager


@pytest.mark.skipif(shutil.which("amtool") is None, reason="amtool (prometheus-alertmanager) not installed")
def test_amtool_check_config_accepts_the_example() -> None:
    done = subprocess.run(["amtool", "check-config", str(EXAMPLE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    example = yaml.safe_load(EXAMPLE.read_text())
    assert "SUCCESS" in done.stdout
    assert f"{len(example['inhibit_rules'])} inhibit rules" in done.stdout
    assert f"{len(example['receivers'])} receivers" in done.stdout


@pytest.mark.slow
def test_alertmanager_loads_the_example_and_its_inhibit_rule_mutes_warnings(tmp_path: Path) -> None:
    example = yaml.safe_load(EXAMPLE.read_text())
    with start_alertmanager(tmp_path / "am", config_file=EXAMPLE) as am:
        status = httpx.get(f"{am.url}/api/v2/status", timeout=5.0).json()
        loaded = yaml.safe_load(status["config"]["original"])
        assert loaded["route"]["receiver"] == example["route"]["receiver"]
        assert [r["receiver"] for r in loaded["route"]["routes"]] == [r["receiver"] for r in example["route"]["routes"]]
        assert sorted(r["name"] for r in loaded["receivers"]) == sorted(r["name"] for r in example["receivers"])
        assert [(r["source_matchers"], r["target_matchers"], r.get("equal")) for r in loaded["inhibit_rules"]] == [
            (r["source_matchers"], r["target_matchers"], r.get("equal")) for r in example["inhibit_rules"]
        ]

        # The first inhibit rule: a critical alert about a user mutes that user's warnings in the
        # same tenant, and nobody else's.
        now = datetime.now(UTC)
        window = {"startsAt": now.isoformat(), "endsAt": (now + timedelta(minutes=5)).isoformat()}

        def alert(name: str, severity: str, user: str) -> dict:
            labels = {"alertname": name, "severity": severity, "tenant": "acme", "user": user}
            return {"labels": {k: v for k, v in labels.items() if v}, **window}

        # A request without a user gives alerts without a user label. Alertmanager takes a label
        # missing on both sides as equal: one anonymous critical alert muted every user-less
        # warning of its tenant (a hostile review, 2026-12-07).
        posted = [
            alert("MisuseCritical", "critical", "u_1"),
            alert("MisuseRepeatOffender", "warning", "u_1"),
            alert("MisuseRepeatOffender", "warning", "u_2"),
            alert("MisuseAnonymousCritical", "critical", ""),
            alert("MisuseJailbreakShare", "warning", ""),
        ]
        httpx.post(f"{am.url}/api/v2/alerts", json=posted, timeout=5.0).raise_for_status()

        def states() -> dict[tuple[str, str], str]:
            return {(a["labels"]["alertname"], a["labels"].get("user", "")): a["status"]["state"] for a in get_alerts(am.url)}

        deadline = time.monotonic() + 15
        while states().get(("MisuseRepeatOffender", "u_1")) != "suppressed" and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(1.0)  # inhibitions are evaluated together; a wrong one would show by now
        assert states() == {
            ("MisuseCritical", "u_1"): "active",
            ("MisuseRepeatOffender", "u_1"): "suppressed",
            ("MisuseRepeatOffender", "u_2"): "active",
            ("MisuseAnonymousCritical", ""): "active",
            ("MisuseJailbreakShare", ""): "active",
        }
        muted = next(a for a in get_alerts(am.url) if a["labels"].get("user") == "u_1" and a["labels"]["severity"] == "warning")
        critical = next(a for a in get_alerts(am.url) if a["labels"].get("user") == "u_1" and a["labels"]["severity"] == "critical")
        assert muted["status"]["inhibitedBy"] == [critical["fingerprint"]]
