"""Commands of README.md / docs/*.md run as written: regressions found by running them.

`make demo` (README "Quick start") ends its stream with the summary tables and then, on stderr,
about 30 lines of ``nanobind: leaked 4 instances! ... leaked 64 types! ... leaked 514
functions!`` for ``triton._C.libtriton`` types, which the README does not show and which read
like a crash. Cause: ``pipeline.memory.settle_gc`` calls ``gc.freeze()`` at the end of the
stream's start-up; frozen objects are never collected at interpreter shutdown, so nanobind
(triton's bindings, loaded with torch) reports every one of its objects as leaked.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton (a torch dependency) not installed")
def test_settle_gc_leaves_no_nanobind_leak_report_at_exit() -> None:
    # What the stream does: triton's nanobind module is loaded, then settle_gc() freezes the heap.
    code = "import triton\nfrom pipeline.memory import settle_gc\nassert settle_gc() > 0\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "nanobind: leaked" not in done.stderr, done.stderr[:2000]


def _alerts_test(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    config = tmp_path / "alerts.yaml"
    config.write_text(text)
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "alerts", "--alerts-config", str(config), "test"],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def test_alerts_config_unknown_key_is_a_config_error_naming_the_alerts_key(tmp_path: Path) -> None:
    # docs/alerting.md: `misuse-monitor alerts --alerts-config alerts.yaml ...`; README "Exit codes":
    # an unknown key, in every section, is exit 3 with the closest valid key. Old code: exit 4 and
    # "notfy: unknown key; valid keys: kafka, batch, stream, ..." (the top-level settings' keys).
    done = _alerts_test(tmp_path, "rules_file: examples/alert-rules.yaml\nnotfy: direct\n")
    assert done.returncode == 3, done.stderr
    assert "notify" in done.stderr, done.stderr
    assert "kafka" not in done.stderr, done.stderr


def test_alerts_config_accepts_the_documented_alerts_block(tmp_path: Path) -> None:
    # The block docs/alerting.md shows starts with `alerts:`; pasted whole into the file given to
    # --alerts-config, the old code answered "alerts: unknown key; did you mean alerts?" (exit 4).
    done = _alerts_test(tmp_path, "alerts:\n  rules_file: examples/alert-rules.yaml\n  notify: alertmanager\n")
    assert done.returncode == 0, done.stderr
    assert "6 rule(s) OK" in done.stdout, done.stdout
