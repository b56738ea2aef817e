"""`python -m pipeline.localinfra.<service> up|status|down`: what a developer types."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline

pytestmark = [pytest.mark.prometheus, pytest.mark.alertmanager]
ROOT = Path(pipeline.__file__).parents[1]


def _cli(service: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", f"pipeline.localinfra.{service}", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=120,
    )


@pytest.mark.parametrize(
    ("service", "up_args"), [("prometheus", ["--port", "0"]), ("alertmanager", ["--webhook", "http://127.0.0.1:9/x"])]
)
def test_up_status_down(service: str, up_args: list[str], tmp_path: Path) -> None:
    assert _cli(service, "status", cwd=tmp_path).returncode == 1
    up = _cli(service, "up", *up_args, cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    url = up.stdout.strip().splitlines()[-1]
    try:
        again = _cli(service, "up", *up_args, cwd=tmp_path)  # already running: same address, no second process
        assert again.stdout.strip().splitlines()[-1] == url
        status = _cli(service, "status", cwd=tmp_path)
        assert status.returncode == 0 and url in status.stdout
    finally:
        assert _cli(service, "down", cwd=tmp_path).returncode == 0
    assert _cli(service, "status", cwd=tmp_path).returncode == 1
