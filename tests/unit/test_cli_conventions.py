"""CLI conventions a script or a newcomer relies on: one-line errors with distinct, documented
exit codes; fail fast on an unreachable broker (before any model loads); did-you-mean for
config keys and MM_* variables; --version, --debug, --log-format json."""

from __future__ import annotations

import json
import logging
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.exits import ExitCode, unknown_env_vars
from pipeline.logs import configure_logging

README = Path(__file__).resolve().parents[2] / "README.md"


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return int(code), out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("misuse-monitor") and "error:" in lines[0]
    return lines[0]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and re.fullmatch(r"misuse-monitor \d+\.\d+\.\d+\S*\n", out)


def test_unknown_config_key_names_it_and_suggests(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "mm.yaml"
    cfg.write_text("kafka:\n  bootstrap_server: broker:9092\nbatch: {max_record: 10}\n")
    code, _, err = _run(capsys, "stream", "--config", str(cfg))
    line = _one_error_line(err)
    assert code == ExitCode.CONFIG
    assert "kafka.bootstrap_server: unknown key; did you mean kafka.bootstrap_servers?" in line
    assert "batch.max_record: unknown key; did you mean batch.max_records?" in line


def test_bad_yaml_and_missing_config_are_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "mm.yaml"
    cfg.write_text("kafka:\n  bootstrap_servers: [a\n")
    code, _, err = _run(capsys, "stream", "--config", str(cfg))
    assert code == ExitCode.CONFIG and f"{cfg}:" in _one_error_line(err)
    code, _, err = _run(capsys, "stream", "--config", str(tmp_path / "absent.yaml"))
    assert code == ExitCode.CONFIG and "config file not found" in _one_error_line(err)


def test_invalid_value_from_environment(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MM_BATCH__MAX_RECORDS", "0")
    code, _, err = _run(capsys, "stream")
    assert code == ExitCode.CONFIG and "batch.max_records" in _one_error_line(err)


@pytest.mark.parametrize("command", ["stream", "produce"])
def test_unreachable_broker_fails_fast_before_models_load(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.runner import Pipeline

    def no_model_load(*_a: object, **_k: object) -> None:
        raise AssertionError("the stream loaded its models before checking the broker")

    monkeypatch.setattr(Pipeline, "from_settings", no_model_load)
    monkeypatch.setenv("MM_KAFKA__CONNECT_TIMEOUT_S", "2")
    address = f"127.0.0.1:{_closed_port()}"
    data = tmp_path / "in.jsonl"
    data.write_text("{}\n")
    args = ["produce", str(data), "--bootstrap", address] if command == "produce" else ["stream", "--bootstrap", address]
    started = time.monotonic()
    code, _, err = _run(capsys, *args)
    assert code == ExitCode.KAFKA_UNREACHABLE
    assert address in _one_error_line(err)
    assert time.monotonic() - started < 5


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "stream", "--no-such-flag")
    assert code == ExitCode.USAGE and "No such option: --no-such-flag" in _one_error_line(err)
    code, _, err = _run(capsys, "--log-level", "loud", "stream")
    assert code == ExitCode.USAGE and "--log-level" in _one_error_line(err)


def test_bad_input_file_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"id": 1}\n')
    code, _, err = _run(capsys, "evaluate", "--labels", str(labels), "--verdicts", str(labels))
    assert code == ExitCode.INPUT and f"{labels}:1" in _one_error_line(err)


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "mm.yaml"
    cfg.write_text("kafka: {bootstrap_server: x}\n")
    code, _, err = _run(capsys, "--debug", "stream", "--config", str(cfg))
    assert code == ExitCode.CONFIG
    assert "Traceback (most recent call last)" in err and err.rstrip().splitlines()[-1].startswith("misuse-monitor: error:")


def test_unknown_mm_variables_are_reported_with_a_suggestion() -> None:
    problems = unknown_env_vars({
        "MM_KAFKA_BOOTSTRAP_SERVERS": "x", "MM_KAFK__GROUP_ID": "g", "MM_KAFKA__GROUP_ID": "ok",
        "MM_CONFIG": "a.yaml", "MM_SINKS": "[]", "MM_TEST_KAFKA_BOOTSTRAP": "t", "PATH": "/bin",
    })
    assert problems == [
        "MM_KAFKA_BOOTSTRAP_SERVERS is not a setting (did you mean MM_KAFKA__BOOTSTRAP_SERVERS?); it is ignored",
        "MM_KAFK__GROUP_ID is not a setting (did you mean MM_KAFKA__GROUP_ID?); it is ignored",
    ]


def test_unknown_mm_variable_warning_reaches_stderr(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MM_KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    code, _, err = _run(capsys, "schemas", "export", "--check")
    assert code == 0
    assert "warning: MM_KAFKA_BOOTSTRAP_SERVERS is not a setting (did you mean MM_KAFKA__BOOTSTRAP_SERVERS?)" in err


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    try:
        logging.getLogger("pipeline.test").info("hello %s", "world")
        logging.getLogger("pipeline.test").debug("hidden")
    finally:
        configure_logging("warning", "text")
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [(r["level"], r["logger"], r["message"]) for r in lines] == [("info", "pipeline.test", "hello world")]
    assert lines[0]["ts"].endswith("+00:00")


def test_every_exit_code_is_documented_in_the_readme() -> None:
    section = README.read_text().split("### Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert documented == {int(c) for c in ExitCode}


def test_entry_points_use_main() -> None:
    """The console script and ``python -m pipeline.cli`` go through main(), not the bare typer
    app (which prints a rich traceback of 100+ lines)."""
    import tomllib

    scripts = tomllib.loads((README.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["misuse-monitor"] == "pipeline.cli:main"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "stream", "--config", "/nonexistent/mm.yaml"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr.strip().count("\n") == 0 and "config file not found" in result.stderr


def test_unreachable_database_is_exit_6(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://misuse:misuse@127.0.0.1:{_closed_port()}/misuse"
    started = time.monotonic()
    code, _, err = _run(capsys, "events", "prune", "--url", url, "--json")
    assert code == ExitCode.DATABASE_UNREACHABLE and "PostgreSQL not reachable" in _one_error_line(err)
    assert time.monotonic() - started < 5
