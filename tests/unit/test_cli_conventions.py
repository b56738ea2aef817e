"""CLI conventions a script or a newcomer relies on: one-line errors with distinct, documented
exit codes; fail fast on an unreachable broker (before any model loads); did-you-mean for
config keys and MM_* variables; --version, --debug, --log-format json."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.exits import ExitCode, unknown_env_vars
from pipeline.localinfra.base import free_port
from pipeline.logs import configure_logging
from pipeline.settings import Settings
from tests.fixtures.corpora import needs_corpora

README = Path(__file__).resolve().parents[2] / "README.md"


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return int(code), out, err


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("misuse-monitor") and "error:" in lines[0]
    return lines[0]


def test_the_cli_loads_no_model_and_no_database_library_before_a_command_runs() -> None:
    """Every command's process imports the CLI first (the stream, classify, produce, each alerting
    replica, ``--help``): what its modules import at the top is paid by all of them. The alerts
    commands imported SQLAlchemy at the top (about 80 ms of each start here, a median of 10
    alternated runs, 2026-12-06); now only the commands that use the database import it."""
    heavy = ("sqlalchemy", "torch", "transformers", "spacy", "presidio_analyzer", "pyspark")
    code = f"import sys, pipeline.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


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


def test_a_mistyped_scoring_mode_names_the_allowed_ones(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MM_STREAM__SCORING", "threads")
    code, _, err = _run(capsys, "stream")
    line = _one_error_line(err)
    assert code == ExitCode.CONFIG and "stream.scoring" in line and "'inline' or 'process'" in line


def test_a_journal_folder_that_cannot_be_written_fails_the_start_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The stream writes the offsets it scores to stream.journal_dir (pipeline/scoring_journal.py);
    a folder it cannot write is a config error at start, not a failed first batch after the models
    loaded. (A path under a file: root can write anywhere else.)"""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MM_STREAM__JOURNAL_DIR", str(tmp_path / "a-file" / "journal"))
    code, _, err = _run(capsys, "stream", "--bootstrap", "127.0.0.1:1")
    line = _one_error_line(err)
    assert code == ExitCode.CONFIG and "stream.journal_dir" in line and "MM_STREAM__JOURNAL_DIR" in line
    # The journal is needed in both scoring modes: the hint no longer says process mode avoids it.
    assert "scoring" not in line


@pytest.mark.parametrize("lake", ["a-file", "a-file/lake"])
def test_a_lake_that_cannot_be_written_fails_the_start_in_one_line(
    lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hostile review (2026-12-06): `--lake ./afile` was accepted, retried as an outage until
    the deadline (15 minutes by default), then exit 9, re-sending the batch's verdicts at every
    restart. A config error now, before the broker is even asked."""
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("MM_STREAM__JOURNAL_DIR", str(tmp_path / "journal"))
    code, _, err = _run(capsys, "stream", "--bootstrap", "127.0.0.1:1", "--lake", str(tmp_path / lake))
    line = _one_error_line(err)
    assert code == ExitCode.CONFIG and "lake.path" in line and "cannot write there" in line


@pytest.mark.parametrize("command", ["stream", "produce"])
def test_unreachable_broker_fails_fast_before_models_load(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline.runner import Pipeline

    def no_model_load(*_a: object, **_k: object) -> None:
        raise AssertionError("the stream loaded its models before checking the broker")

    monkeypatch.setattr(Pipeline, "from_settings", no_model_load)
    monkeypatch.setenv("MM_KAFKA__CONNECT_TIMEOUT_S", "2")
    address = f"127.0.0.1:{free_port()}"
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


def test_mm_variables_in_lower_case_are_settings_not_reported_as_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """pydantic-settings reads MM_ names in any case: MM_pseudonym_key keys the pseudonyms. They
    were all reported as "not a setting; it is ignored" while they were applied (a newcomer's
    review, 2026-12-06). A lower-case typo is still reported."""
    names = ("MM_pseudonym_key", "MM_batch__max_records", "mm_kafka__bootstrap_servers", "MM_Lake__Path")
    assert unknown_env_vars(dict.fromkeys(names, "x")) == []
    monkeypatch.setenv("MM_batch__max_records", "7")
    assert Settings().batch.max_records == 7  # what the warning called ignored is read
    assert unknown_env_vars({"mm_kafka_bootstrap_servers": "x"}) == [
        "mm_kafka_bootstrap_servers is not a setting (did you mean MM_KAFKA__BOOTSTRAP_SERVERS?); it is ignored"
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


@pytest.mark.parametrize(
    ("argv", "flag", "bound"),
    [
        (["stream", "--max-idle", "-1"], "--max-idle", "greater than or equal to 0"),
        (["produce", "x.jsonl", "--topic", "t", "--rate", "-2"], "--rate", "greater than or equal to 0"),
        (["simulate", "-o", "x.jsonl", "--records", "-3"], "--records", "greater than or equal to 0"),
        (["spark", "offenders", "--out", "o", "--top", "0"], "--top", "greater than or equal to 1"),
        (["spark", "offenders", "--out", "o", "--half-life-days", "0"], "--half-life-days", "greater than or equal to 0.001"),
        (["spark", "campaigns", "--out", "o", "--max-distance", "1.5"], "--max-distance", "less than or equal to 1"),
        (["spark", "campaigns", "--out", "o", "--min-users", "0"], "--min-users", "greater than or equal to 1"),
    ],
)
def test_out_of_range_numbers_are_usage_errors(capsys: pytest.CaptureFixture[str], argv: list[str], flag: str, bound: str) -> None:
    """Before: a negative --max-idle ended a stream at its first empty poll; a negative --rate sent as fast as possible."""
    code, _, err = _run(capsys, *argv)
    assert code == 2 and f"Invalid value for '{flag}'" in err and bound in err, err


def test_simulate_days_out_of_range_is_a_usage_error_naming_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    # Checked where the span is used (typer has no open bound for "more than 0").
    for days in ("-1", "0"):
        code, _, err = _run(capsys, "simulate", "-o", "x.jsonl", "--days", days)
        assert code == 2 and "Invalid value for --days" in err and "more than 0" in err, err


def test_kafka_clients_own_log_shows_only_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    """kafka-python 3.0.12 logs connections the broker closed at ERROR ("socket disconnected");
    one such line after the demo's finished stream failed a CI run's quick-start check. The
    stream reports outages itself (warnings, /healthz), so the client's log waits for debug."""
    client = logging.getLogger("kafka.net.transport")
    try:
        for level in ("error", "warning", "info"):
            configure_logging(level, "text")
            client.error("<BrokerConnection node_id=1>: socket disconnected")
        configure_logging("debug", "text")
        client.error("<BrokerConnection node_id=1>: shown at debug")
    finally:
        configure_logging("warning", "text")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].endswith("ERROR kafka.net.transport: <BrokerConnection node_id=1>: shown at debug")


def test_the_log_handler_writes_to_the_stderr_of_the_moment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: the handler kept the stderr of the moment logging was configured; once a harness
    closed that stream, a late record (py4j's shutdown message in a CI worker) printed a
    "--- Logging error ---" traceback instead of the line."""
    configured_on = io.StringIO()
    monkeypatch.setattr(sys, "stderr", configured_on)
    configure_logging("info", "text")
    configured_on.close()
    now = io.StringIO()
    monkeypatch.setattr(sys, "stderr", now)
    try:
        logging.getLogger("pipeline.test").info("after the first stream closed")
    finally:
        configure_logging("warning", "text")
    assert now.getvalue().endswith("INFO pipeline.test: after the first stream closed\n"), now.getvalue()
    assert "Logging error" not in now.getvalue()


def test_py4j_connection_chatter_shows_only_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    bridge = logging.getLogger("py4j.clientserver")
    try:
        configure_logging("info", "text")
        bridge.info("Closing down clientserver connection")
        bridge.warning("shown at info")
        configure_logging("debug", "text")
        bridge.info("shown at debug")
    finally:
        configure_logging("warning", "text")
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(" ", 2)[2] for line in lines] == [
        "WARNING py4j.clientserver: shown at info", "INFO py4j.clientserver: shown at debug"
    ]


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


@pytest.mark.parametrize("url", ["sqlite:///events.db", "mysql://misuse:s3cret-pw@127.0.0.1:3306/misuse", "127.0.0.1:5432/misuse"])
def test_an_events_store_url_that_is_not_postgresql_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    """`events prune --url sqlite:///...` was "internal error: TypeError: 'connect_timeout'" (exit 1);
    a MySQL URL asked to install MySQLdb, which would not have helped. Exit 3, as for a database URL
    that cannot be parsed."""
    got, _, err = _run(capsys, "events", "prune", "--url", url)
    assert got == ExitCode.CONFIG and "the events store is PostgreSQL: expected postgresql://" in _one_error_line(err)
    assert "s3cret-pw" not in err
    monkeypatch.setenv("MM_POSTGRES__URL", url)
    got, _, err = _run(capsys, "events", "prune")
    assert got == ExitCode.CONFIG and "postgres.url" in err and "s3cret-pw" not in err


def test_a_postgres_url_is_written_as_sqlalchemy_reads_it() -> None:
    from pipeline.postgres_settings import PostgresSettings, postgres_url

    assert postgres_url("postgres://u:p@h:5432/db") == "postgresql://u:p@h:5432/db"
    assert postgres_url("postgres+psycopg://u@h/db") == "postgresql+psycopg://u@h/db"
    assert PostgresSettings(url="postgres://u@h/db").url.get_secret_value() == "postgresql://u@h/db"


def test_unreachable_database_is_exit_6(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"postgresql+psycopg://misuse:misuse@127.0.0.1:{free_port()}/misuse"
    started = time.monotonic()
    code, _, err = _run(capsys, "events", "prune", "--url", url, "--json")
    assert code == ExitCode.DATABASE_UNREACHABLE and "PostgreSQL not reachable" in _one_error_line(err)
    assert time.monotonic() - started < 5


# --------------------------------------------------------------------------- HTTP services: exit 8

ALERT_RULES = README.parent / "examples" / "alert-rules.yaml"


def _alerts_config(tmp_path: Path, **section: object) -> Path:
    import yaml

    config = tmp_path / "alerts.yaml"
    config.write_text(yaml.safe_dump({"rules_file": str(ALERT_RULES), "db_url": f"sqlite:///{tmp_path / 'a.db'}", **section}))
    return config


def test_alerts_test_send_to_an_unreachable_alertmanager_is_exit_8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    address = f"http://127.0.0.1:{free_port()}"
    config = _alerts_config(tmp_path, alertmanager={"urls": [address], "timeout_s": 2})
    code, out, err = _run(capsys, "alerts", "--alerts-config", str(config), "test", "--send")
    assert code == ExitCode.SERVICE_UNREACHABLE
    assert f"{address}: failed ConnectError" in _one_error_line(err)
    code, out, err = _run(capsys, "alerts", "--alerts-config", str(config), "test", "--send", "--json")
    assert code == ExitCode.SERVICE_UNREACHABLE and address in _one_error_line(err)
    doc = json.loads(out)
    assert doc["valid"] is True and [(s["target"], s["delivered"]) for s in doc["sent"]] == [(address, False)]


def test_alerts_test_send_to_an_unreachable_webhook_is_exit_8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    config = _alerts_config(tmp_path, notify="direct", receivers=[{"name": "ops", "type": "webhook", "url": url, "secret": "s"}])
    started = time.monotonic()
    code, _, err = _run(capsys, "alerts", "--alerts-config", str(config), "test", "--send", "--timeout-s", "2")
    assert code == ExitCode.SERVICE_UNREACHABLE
    assert "not delivered to 1 of 1: ops: dead ConnectError" in _one_error_line(err)
    assert time.monotonic() - started < 15


def test_dashboards_push_to_an_unreachable_grafana_is_exit_8(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    code, out, err = _run(capsys, "dashboards", "push", "--url", f"http://admin:secret@127.0.0.1:{port}")
    line = _one_error_line(err)
    assert code == ExitCode.SERVICE_UNREACHABLE and out == ""
    assert f"Grafana not reachable: [Errno 111] Connection refused (http://127.0.0.1:{port})" in line
    assert "secret" not in line


# --------------------------------------------------------------------------- '-' for stdin and stdout


def _labels_and_verdicts(tmp_path: Path) -> tuple[Path, Path]:
    labels, verdicts = tmp_path / "labels.jsonl", tmp_path / "verdicts.jsonl"
    labels.write_text("".join(json.dumps(row) + "\n" for row in [
        {"request_id": "a", "misuse": True, "categories": ["cyber_abuse"]},
        {"request_id": "b", "misuse": False},
        {"request_id": "c", "misuse": True, "categories": ["jailbreak"]},
        {"request_id": "d", "misuse": False},
    ]))
    verdicts.write_text("".join(json.dumps(row) + "\n" for row in [
        {"request_id": "a", "flagged": True, "categories": ["cyber_abuse"]},
        {"request_id": "b", "flagged": True, "categories": ["jailbreak"]},
        {"request_id": "c", "flagged": False, "categories": []},
        {"request_id": "d", "flagged": False, "categories": []},
    ]))
    return labels, verdicts


@pytest.mark.parametrize("which", ["--labels", "--verdicts"])
def test_evaluate_reads_labels_or_verdicts_from_stdin(
    which: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import io

    labels, verdicts = _labels_and_verdicts(tmp_path)
    code, from_files, _ = _run(capsys, "evaluate", "--labels", str(labels), "--verdicts", str(verdicts), "--json")
    assert code == 0
    piped = labels if which == "--labels" else verdicts
    monkeypatch.setattr("sys.stdin", io.StringIO(piped.read_text()))
    args = {"--labels": str(labels), "--verdicts": str(verdicts), which: "-"}
    code, from_stdin, err = _run(capsys, "evaluate", *(x for kv in args.items() for x in kv), "--json")
    assert code == 0, err
    assert json.loads(from_stdin) == json.loads(from_files)
    assert json.loads(from_stdin)["matched"] == 4


def test_evaluate_refuses_stdin_for_both_inputs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "evaluate", "--labels", "-", "--verdicts", "-")
    assert code == ExitCode.USAGE and out == ""
    assert "only one of them can be '-' (stdin)" in _one_error_line(err)


@needs_corpora
def test_simulate_writes_records_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    truth = tmp_path / "truth.jsonl"
    code, out, err = _run(capsys, "simulate", "-o", "-", "--records", "40", "--truth", str(truth))
    assert code == 0
    records = [json.loads(line) for line in out.splitlines()]
    assert [r["schema"] for r in records] == ["inference-log/v1"] * 40
    assert [r["request_id"] for r in records] == [json.loads(line)["request_id"] for line in truth.read_text().splitlines()]
    assert "Simulated traffic: 40 records" in err  # the summary table goes to stderr, not into the records


@needs_corpora
def test_simulate_writes_the_truth_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "logs.jsonl"
    code, out, err = _run(capsys, "simulate", "-o", str(logs), "--records", "40", "--truth", "-")
    assert code == 0
    labels = [json.loads(line) for line in out.splitlines()]
    assert [lab["request_id"] for lab in labels] == [json.loads(line)["request_id"] for line in logs.read_text().splitlines()]
    assert all(isinstance(lab["misuse"], bool) and isinstance(lab["categories"], list) for lab in labels)
    assert "Simulated traffic: 40 records" in err


def test_simulate_refuses_records_and_truth_both_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "simulate", "-o", "-", "--truth", "-", "--records", "5")
    assert code == ExitCode.USAGE and out == ""
    assert "--truth" in _one_error_line(err)


@needs_corpora
def test_simulate_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs, truth = tmp_path / "logs.jsonl", tmp_path / "truth.jsonl"
    n = 5000  # enough for the progress bar (PROGRESS_THRESHOLD), which must stay off stdout
    code, out, _ = _run(capsys, "simulate", "-o", str(logs), "--truth", str(truth), "--records", str(n), "--json")
    assert code == 0
    assert out.startswith("{") and out.count("\n") == 1  # one JSON document, nothing else
    summary = json.loads(out)
    labels = [json.loads(line) for line in truth.read_text().splitlines()]
    assert summary["records"] == len(logs.read_text().splitlines()) == n
    assert summary["misuse"] == sum(lab["misuse"] for lab in labels)
    assert sum(summary["role"].values()) == n


def test_a_failed_check_has_its_own_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Stale contract files are a check's finding, not a bug (1) or a usage error (2): exit 11."""
    code, _, _ = _run(capsys, "schemas", "export", "--out", str(tmp_path))
    assert code == 0
    first, second = sorted(p.name for p in tmp_path.iterdir())
    (tmp_path / first).write_text("{}\n")
    code, out, err = _run(capsys, "schemas", "export", "--check", "--out", str(tmp_path))
    assert code == ExitCode.CHECK_FAILED == 11
    assert f"stale contract files in {tmp_path}: {first}; run `misuse-monitor schemas export --out {tmp_path}`" in out + err


def test_a_check_names_missing_contract_files_and_the_folder_to_export_to(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`schemas export --check --out typo` said the files were stale and told the user to export to
    the default folder, not the one checked."""
    code, _, _ = _run(capsys, "schemas", "export", "--out", str(tmp_path / "good"))
    assert code == 0
    first, second = sorted(p.name for p in (tmp_path / "good").iterdir())
    (tmp_path / "good" / second).unlink()
    code, out, err = _run(capsys, "schemas", "export", "--check", "--out", str(tmp_path / "good"))
    assert code == ExitCode.CHECK_FAILED
    assert f"missing contract files in {tmp_path / 'good'}: {second}; run `misuse-monitor schemas export --out {tmp_path / 'good'}`" in out + err
    assert "stale" not in out + err
    code, out, err = _run(capsys, "schemas", "export", "--check", "--out", str(tmp_path / "typo"))
    assert code == ExitCode.CHECK_FAILED
    assert f"missing contract files in {tmp_path / 'typo'}: {first}, {second}" in out + err


def test_a_broken_alert_rules_file_is_a_config_error_wherever_it_is_read() -> None:
    """`stream` with the alerts sink reads the rules file too: a mistake there is the user's (3), not a bug (1)."""
    from pipeline.alerts.rules import AlertRulesError
    from pipeline.exits import classify_exception

    code, message = classify_exception(AlertRulesError("rule name=x: rate rules need a threshold"))
    assert code == ExitCode.CONFIG and message == "alert rules: rule name=x: rate rules need a threshold"


def test_user_errors_found_by_a_newcomer_get_their_exit_code_not_internal_error(tmp_path, monkeypatch, capsys):
    """A careless-newcomer check (2026-12-02): each of these exited 1, "internal error ... rerun
    with --debug", though the fix is the user's: a list variable that is not JSON, a model
    directory that does not exist, a binary file where text is read, a full disk."""
    from pipeline.cli import main

    src = tmp_path / "in.jsonl"
    src.write_text('{"schema": "inference-log/v1", "request_id": "a", "timestamp": "2026-11-28T10:00:00Z", "model": "m", "prompt": "hi"}\n')
    out = tmp_path / "out.jsonl"
    monkeypatch.setenv("MM_DETECTORS__ENABLED", "rules")  # not JSON
    assert main(["classify", str(src), "-o", str(out)]) == 3
    first = capsys.readouterr().err
    assert "detectors" in first and "take JSON" in first, first
    monkeypatch.delenv("MM_DETECTORS__ENABLED")
    monkeypatch.setenv("MM_DETECTORS__MODEL_DIR", str(tmp_path / "no-such-model"))
    assert main(["classify", str(src), "-o", str(out), "--detectors", "transformer"]) == 3
    monkeypatch.delenv("MM_DETECTORS__MODEL_DIR")
    binary = tmp_path / "candidates.bin"
    binary.write_bytes(b"\xff\xfe\x00garbage\x80")
    assert main(["evaluate", "--labels", str(binary), "--verdicts", str(src)]) == 4
    if Path("/dev/full").exists():
        assert main(["classify", str(src), "-o", "/dev/full", "--detectors", "rules"]) == 4
    err = capsys.readouterr().err
    assert "internal error" not in err, err


def test_command_line_overrides_are_validated_like_settings(capsys):
    """`stream --metrics-port 70000` failed later, in the HTTP server, as an internal error."""
    from pipeline.cli import main

    assert main(["stream", "--metrics-port", "70000", "--dev", "--detectors", "rules", "--max-idle", "1"]) == 2
    err = capsys.readouterr().err
    assert "metrics.port = 70000" in err and "65535" in err and "internal error" not in err


def test_spark_backfill_and_delivery_errors_map_to_their_exit_codes():
    """The mappings the newcomer check asked for that need Spark or a broker to happen for real:
    checked on the exceptions themselves (classify_exception goes by the exception's class)."""
    from kafka.errors import KafkaConnectionError

    from pipeline.exits import ExitCode, classify_exception
    from pipeline.producer import DeliveryError
    from pipeline.spark.backfill import BackfillError
    from pipeline.spark.session import SparkSetupError

    assert classify_exception(BackfillError("no verdict files under /nope"))[0] is ExitCode.INPUT
    assert classify_exception(SparkSetupError("--master garbage"))[0] is ExitCode.CONFIG
    code, message = classify_exception(DeliveryError([("line 7", KafkaConnectionError("broker gone"))]))
    assert code is ExitCode.KAFKA_UNREACHABLE and "line 7" in message


def _every_command() -> list[tuple[list[str], object]]:
    """(argv path, click command) for the root, every group and every command under them."""
    import typer

    from pipeline.cli import app

    found = []

    def walk(command: object, path: list[str]) -> None:
        found.append((path, command))
        if hasattr(command, "list_commands"):
            ctx = type(command).context_class(command)
            for name in command.list_commands(ctx):
                walk(command.get_command(ctx, name), [*path, name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_help_text_is_reflowed_for_the_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    """typer keeps the line breaks of every paragraph but the first, so `produce --help` came out
    ragged at 80 columns, and five commands printed reStructuredText's double backticks."""
    commands = _every_command()
    assert len(commands) > 40  # the walk reached the groups' commands
    for path, command in commands:
        for paragraph in (command.help or "").split("\n\n")[1:]:
            lines = paragraph.splitlines()
            is_list = all(re.match(r"\s*(?:[-*]|\d+\.)\s", line) for line in lines[1:])
            assert len(lines) == 1 or is_list, (path, paragraph)
        code, out, _ = _run(capsys, *path, "--help")
        assert code == 0 and "Usage: misuse-monitor" in out, path
        assert "``" not in out, path


def test_help_keeps_list_lines_apart() -> None:
    from pipeline.cli import _help_for_the_terminal

    doc = "First line\n    of the summary.\n\n    Two lines\n    of prose.\n\n    Steps:\n    - one\n    - two\n"
    assert _help_for_the_terminal(doc) == "First line of the summary.\n\nTwo lines of prose.\n\nSteps:\n- one\n- two"
