"""What a hostile review of the command line found: secrets echoed in config errors, prompt text
in debug logs, internal errors (exit 1) for inputs a user can fix, options silently ignored.
Each test drives the real entry point (``pipeline.cli.main``) or the real function it calls."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from pipeline.exits import ExitCode, classify_exception
from pipeline.localinfra.base import free_port
from pipeline.logs import configure_logging

README = Path(__file__).resolve().parents[2] / "README.md"
LINE = {
    "schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00Z",
    "model": "m", "prompt": "hello there",
}


@pytest.fixture(autouse=True)
def _no_config_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MM_CONFIG", raising=False)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err
    return int(code), err



# --------------------------------------------------------------------------- 1. secrets in config errors


@pytest.mark.parametrize(
    ("yaml_text", "key", "secret"),
    [
        ("kafka: {sasl_plain_password: 84920175}\n", "kafka.sasl_plain_password", "84920175"),
        ("pseudonym_key: 123456789012345678901234\n", "pseudonym_key", "123456789012345678901234"),
        ("postgres: {url: 55501234}\n", "postgres.url", "55501234"),
        ("alerts: {db_url: 77123456}\n", "alerts.db_url", "77123456"),
    ],
)
def test_a_config_error_names_a_secret_setting_but_not_its_value(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, key: str, secret: str
) -> None:
    cfg = tmp_path / "mm.yaml"
    cfg.write_text(yaml_text)
    code, err = _run(capsys, "events", "init", "--config", str(cfg))
    assert code == ExitCode.CONFIG and f"{key}: Input should be a valid string" in err, err
    assert secret not in err


def test_a_receiver_written_as_its_bare_url_is_an_error_that_does_not_echo_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Slack webhook URL is a credential. Written in place of a receiver's mapping, it was
    echoed: "alerts.receivers.0: Input should be a valid dictionary ... (got 'https://hooks...')"
    (an on-call review, 2026-12-06)."""
    cfg = tmp_path / "mm.yaml"
    cfg.write_text("alerts: {receivers: ['https://hooks.slack.com/services/SLACKSECRET2']}\n")
    code, err = _run(capsys, "events", "init", "--config", str(cfg))
    assert code == ExitCode.CONFIG and "alerts.receivers.0: Input should be a valid dictionary" in err, err
    assert "SLACKSECRET2" not in err


def test_a_config_error_still_shows_the_value_of_an_ordinary_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "mm.yaml"
    cfg.write_text("batch: {max_records: lots}\n")
    code, err = _run(capsys, "events", "init", "--config", str(cfg))
    assert code == ExitCode.CONFIG and "batch.max_records" in err and "(got 'lots')" in err, err


# --------------------------------------------------------------------------- 2. text in debug logs


def test_debug_log_level_keeps_presidio_and_spacy_lines_off_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """Presidio's debug lines quote the analysed text ("Context list is: ..."): --log-level debug
    put prompts and the PII in them into whatever collects stderr."""
    from pipeline.redact import redact

    configure_logging("debug", "text")
    try:
        redacted = redact("please write to john.smith@corp.com about the invoice")
        logging.getLogger("spacy").debug("john.smith@corp.com")
        logging.getLogger("presidio-anonymizer").info("john.smith@corp.com")
        logging.getLogger("pipeline.test").debug("our own debug line")
    finally:
        configure_logging("warning", "text")
    err = capsys.readouterr().err
    assert "john.smith@corp.com" not in redacted and "john.smith@corp.com" not in err, err
    assert "DEBUG pipeline.test: our own debug line" in err  # debug itself still works


def test_a_client_value_in_a_text_log_line_cannot_forge_another_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A review (2026-12-07): a request id quoted by the scorer's "detector failed" line wrote a
    second, forged CRITICAL line and a raw ANSI escape to stderr. Control characters of a message
    are escaped; a traceback keeps its lines."""
    forged = "r1\n2026-01-01 00:00:00,000 CRITICAL pipeline.runner: \x1b[31mALL CLEAR\r\u2028\x85"
    configure_logging("warning", "text")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("pipeline.scoring").exception("detector failed on record %s", forged)
    err = capsys.readouterr().err
    first, *rest = err.splitlines()
    assert first.endswith(r"detector failed on record r1\n2026-01-01 00:00:00,000 CRITICAL pipeline.runner: "
                          r"\x1b[31mALL CLEAR\r\u2028\x85")
    assert rest[0] == "Traceback (most recent call last):" and rest[-1] == "ValueError: boom"
    assert "\x1b" not in err and "CRITICAL" not in "".join(rest)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("qwen\x1b[2J\x9b8m\x7f\ttab", r"qwen\x1b[2J\x9b8m\x7f\ttab"),  # C0, C1, DEL and tab
        ("abc\u202edcba \u2066x\u2069 z\u200bw", r"abc\u202edcba \u2066x\u2069 z\u200bw"),  # bidi, zero width
        ("hid\U000e0041den", r"hid\U000e0041den"),  # a tag character: eight digits, not "\ue0041"
        ("Zürich 東京", "Zürich 東京"),  # letters stay as they are
    ],
    ids=["controls", "bidi-and-zero-width", "tag-character", "letters"],
)
def test_a_client_value_in_a_table_cell_is_shown_escaped(value: str, shown: str) -> None:
    """``escape_controls`` is what the CLI's tables print client values through (a review,
    2026-12-07: ESC sequences cleared the operator's screen in `alerts list`, and a bidi
    override reordered a cell)."""
    from pipeline.logs import escape_controls

    assert escape_controls(value) == shown


def test_another_process_traceback_keeps_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    """The scoring process sends its traceback as text; logged as a message argument, the escaping
    above made it one line of "\\n" (a review of my diff, 2026-12-07). It follows the message in its
    own lines, as an exception's does, in text and in JSON."""
    from pipeline.logs import TRACEBACK

    text = 'Traceback (most recent call last):\n  File "x.py", line 1, in <module>\nValueError: boom\n'
    for fmt in ("text", "json"):
        configure_logging("warning", fmt)
        try:
            logging.getLogger("pipeline.score_worker").error("the scoring process failed", extra={TRACEBACK: text})
        finally:
            configure_logging("warning", "text")
        err = capsys.readouterr().err
        if fmt == "text":
            assert err.splitlines()[1:] == text.splitlines() and err.splitlines()[0].endswith("the scoring process failed")
        else:
            assert json.loads(err)["exc"] == text.rstrip()


# --------------------------------------------------------------------------- 4. clear errors, right codes


@pytest.mark.parametrize(("content", "shape"), [(b"- a\n- b\n", "not a list"), (b"5\n", "not a single value")])
def test_a_config_file_whose_top_level_is_not_a_mapping_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, shape: str
) -> None:
    cfg = tmp_path / "mm.yaml"
    cfg.write_bytes(content)
    code, err = _run(capsys, "events", "init", "--config", str(cfg))
    assert code == ExitCode.CONFIG and str(cfg) in err and "top level must be a mapping" in err and shape in err, err


def test_a_config_path_that_is_a_directory_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "events", "init", "--config", str(tmp_path))
    assert code == ExitCode.CONFIG and "is a directory" in err and "not found" not in err, err


def test_a_binary_config_file_is_a_config_error_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "mm.yaml"
    cfg.write_bytes(b"kafka:\n  group_id: \xc3\x28\xff\xfe\n")
    code, err = _run(capsys, "events", "init", "--config", str(cfg))
    assert code == ExitCode.CONFIG and str(cfg) in err and "not UTF-8" in err, err


def test_an_empty_pseudonym_key_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(LINE) + "\n")
    monkeypatch.setenv("MM_PSEUDONYM_KEY", "")
    code, err = _run(capsys, "classify", str(src), "-o", str(tmp_path / "out.jsonl"), "--detectors", "rules")
    assert code == ExitCode.CONFIG and "pseudonym_key" in err and "must not be empty" in err, err
    assert not (tmp_path / "out.jsonl").exists()


def _jobs(root: Path, table: pa.Table | bytes) -> Path:
    (root / "aggregates").mkdir(parents=True)
    part = root / "aggregates" / "part-0.parquet"
    if isinstance(table, bytes):
        part.write_bytes(table)
    else:
        pq.write_table(table, part)
    return root


def test_report_on_a_job_output_that_is_not_parquet_is_an_input_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _jobs(tmp_path / "jobs", b"not parquet at all\n")
    code, err = _run(capsys, "report", str(jobs), "-o", str(tmp_path / "r.html"))
    assert code == ExitCode.INPUT and "part-0.parquet" in err and "internal error" not in err, err


def test_report_on_a_job_output_without_the_expected_columns_is_an_input_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _jobs(tmp_path / "jobs", pa.table({"foo": [1, 2]}))
    code, err = _run(capsys, "report", str(jobs), "-o", str(tmp_path / "r.html"))
    assert code == ExitCode.INPUT and "aggregates" in err and "category" in err and "internal error" not in err, err


def test_a_database_url_with_a_bad_port_is_a_config_error_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(capsys, "events", "init", "--url", "postgresql+psycopg://u:pw-s3cret@127.0.0.1:abc/db")
    # Nothing of the URL is shown: what reads as its port may be part of the password (below).
    assert code == ExitCode.CONFIG and "the port must be a number" in err and "pw-s3cret" not in err, err


@pytest.mark.parametrize(
    "argv",
    [
        ("events", "init", "--url", "notaurl"),
        ("events", "init", "--url", "nosuchdialect://u:pw-s3cret@/db"),
        ("report", "{jobs}", "-o", "{out}", "--alerts-db", "garbage"),
    ],
)
def test_a_database_url_sqlalchemy_cannot_parse_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    jobs = _jobs(tmp_path / "jobs", _aggregates())
    argv = tuple(a.format(jobs=jobs, out=tmp_path / "r.html") for a in argv)
    code, err = _run(capsys, *argv)
    assert code == ExitCode.CONFIG and "database URL" in err and "pw-s3cret" not in err, err


def test_schemas_export_to_a_file_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "afile"
    target.write_text("keep me")
    code, err = _run(capsys, "schemas", "export", "--out", str(target))
    assert code == ExitCode.USAGE and "--out" in err and "directory" in err, err
    assert target.read_text() == "keep me"


# --------------------------------------------------------------------------- 5. a missing optional extra


@pytest.mark.parametrize(
    ("module", "extra"),
    [("torch", "detector"), ("transformers", "detector"), ("sklearn", "detector"),
     ("presidio_analyzer", "privacy"), ("pyspark", "spark"), ("psycopg", "db"), ("starlette", "gateway")],
)
def test_a_missing_optional_module_names_the_extra_to_install(module: str, extra: str) -> None:
    # What `import torch` raises where the detector extra is not installed.
    code, line = classify_exception(ModuleNotFoundError(f"No module named {module!r}", name=module))
    assert code == ExitCode.CONFIG and f"misuse-monitor[{extra}]" in line and "internal error" not in line, line


def test_a_missing_module_of_this_project_is_still_an_internal_error() -> None:
    code, _ = classify_exception(ModuleNotFoundError("No module named 'pipeline.nope'", name="pipeline.nope"))
    assert code == ExitCode.INTERNAL


# --------------------------------------------------------------------------- 6. report's options


def _aggregates() -> pa.Table:
    return pa.table({
        "date": ["2026-11-28"], "tenant_id": ["t"], "deployment": ["d"], "model": ["m"], "category": ["all"],
        "records": [3], "flagged": [1], "severity_low": [1], "severity_medium": [0], "severity_high": [0],
        "severity_critical": [0],
    })


@pytest.mark.parametrize(
    ("extra_argv", "flag"),
    [(("--bootstrap", "127.0.0.1:1"), "--bootstrap"), (("--labels", "{labels}"), "--labels")],
)
def test_report_refuses_an_option_without_the_one_it_needs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra_argv: tuple[str, ...], flag: str
) -> None:
    jobs = _jobs(tmp_path / "jobs", _aggregates())
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"request_id": "r1", "flagged": false}\n')
    out = tmp_path / "r.html"
    code, err = _run(capsys, "report", str(jobs), "-o", str(out), *(a.format(labels=labels) for a in extra_argv))
    assert code == ExitCode.USAGE and flag in err, err
    assert not out.exists()


def test_report_dead_letter_topic_on_an_unreachable_broker_fails_fast(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = _jobs(tmp_path / "jobs", _aggregates())
    started = time.monotonic()
    code, err = _run(capsys, "report", str(jobs), "-o", str(tmp_path / "r.html"),
                     "--dead-letter-topic", "dlq", "--bootstrap", f"127.0.0.1:{free_port()}")
    assert code == ExitCode.KAFKA_UNREACHABLE and "no broker reachable" in err, err
    assert time.monotonic() - started < 15  # the client's own timeout took 31 s


def test_a_bare_kafka_timeout_is_not_named_twice() -> None:
    from kafka.errors import KafkaTimeoutError

    code, line = classify_exception(KafkaTimeoutError())
    assert code == ExitCode.KAFKA_UNREACHABLE and line.count("KafkaTimeoutError") == 1, line


def test_report_missing_alert_database_names_the_reports_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    jobs = _jobs(tmp_path / "jobs", _aggregates())
    code, err = _run(capsys, "report", str(jobs), "-o", str(tmp_path / "r.html"),
                     "--alerts-db", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == ExitCode.CONFIG and "--alerts-db" in err and "--db-url" not in err, err


# --------------------------------------------------------------------------- 7. README


def test_readme_exit_codes_say_a_missing_input_named_on_the_command_line_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = _run(capsys, "classify", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl"))
    assert code == ExitCode.USAGE
    rows = dict(re.findall(r"^\| (\d+) \| (.*) \|$", README.read_text(encoding="utf-8"), flags=re.M))
    assert "does not exist" in rows["2"] and "classify" in rows["2"]
    assert not rows["4"].startswith("input: a file missing")


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_classify_reads_a_pipe_named_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          compressed: bool) -> None:
    # `classify <(zcat logs.jsonl.gz)` and `/dev/stdin` were refused ("does not exist or is not a
    # file"), and a pipe is read once: probing its first bytes for gzip, then reopening, lost them.
    import gzip
    import os
    import threading

    fifo = tmp_path / "logs.pipe"
    os.mkfifo(fifo)
    body = (json.dumps(LINE) + "\n" + json.dumps({**LINE, "request_id": "r2"}) + "\n").encode()
    payload = gzip.compress(body) if compressed else body
    writer = threading.Thread(target=lambda: fifo.write_bytes(payload), daemon=True)  # blocks if never read
    writer.start()
    out = tmp_path / "out.jsonl"
    try:
        code, err = _run(capsys, "classify", str(fifo), "-o", str(out), "--detectors", "rules")
    finally:
        writer.join(timeout=10)
    assert code == 0, err
    assert [json.loads(line)["request_id"] for line in out.read_text().splitlines()] == ["r1", "r2"]


def test_a_reader_that_closes_stdout_early_is_exit_141_not_a_bug() -> None:
    """`simulate -o - | head -1`: typer turned EPIPE into a silent exit 1, the code the README
    keeps for bugs; a script could not tell `| head` from a crash. Now 141 (128 + SIGPIPE)."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", "from pipeline.cli import main; raise SystemExit(main())", "simulate", "-o", "-", "--records", "3000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=README.parent)
    assert proc.stdout is not None and proc.stdout.readline().startswith(b"{")
    proc.stdout.close()  # what `head -1` does after its line
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == ExitCode.PIPE_CLOSED == 141, err.decode()[-2000:]
    assert b"Traceback" not in err and b"internal error" not in err


# --------------------------------------------------------------------------- output paths


def test_output_paths_that_cannot_be_written_are_usage_errors_naming_the_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A newcomer's review (2026-12-06): ``report -o FILE/r.html`` and ``pseudonym resolve
    --audit-log FILE/x`` were "internal error: FileExistsError" (exit 1); ``classify -o
    /missing/o.jsonl`` named a hidden temporary file (``.o.jsonl.23616.tmp``, exit 4) after the
    detectors had loaded."""
    a_file = tmp_path / "in.jsonl"
    a_file.write_text(json.dumps(LINE) + "\n")
    (tmp_path / "jobs").mkdir()
    cases = [
        (["classify", str(a_file), "-o", str(tmp_path / "missing" / "o.jsonl"), "--detectors", "rules"],
         f"folder '{tmp_path / 'missing'}' does not exist"),
        (["classify", str(a_file), "-o", str(a_file / "o.jsonl"), "--detectors", "rules"],
         f"'{a_file}' is a file, not a folder for 'o.jsonl'"),
        (["report", str(tmp_path / "jobs"), "-o", str(a_file / "r.html")], f"'{a_file}' is a file, not a folder for 'r.html'"),
        (["pseudonym", "resolve", "u_" + "0" * 20, "--candidates", str(a_file), "--reason", "T-1",
          "--audit-log", str(a_file / "audit.jsonl")], f"'{a_file}' is a file, not a folder for 'audit.jsonl'"),
        # exit 4 "Not a directory" until a review of 2026-12-06
        (["dashboards", "generate", "--out", str(a_file / "sub")], f"{a_file} is a file; --out takes a directory"),
    ]
    for argv, says in cases:
        code, err = _run(capsys, *argv)
        assert code == ExitCode.USAGE, (argv, err)
        assert says in err.replace("\n", "") and ".tmp" not in err and "internal error" not in err, (argv, err)
    assert not (tmp_path / "missing").exists()


def test_a_full_disk_names_the_output_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``classify -o /dev/full`` said "No space left on device" and not where (written in place:
    a character device; a regular file on a full disk raises the same error without a name)."""
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(LINE) + "\n")
    code, err = _run(capsys, "classify", str(source), "-o", "/dev/full", "--detectors", "rules")
    assert code == ExitCode.INPUT and "No space left on device: /dev/full" in err, err


def test_a_file_named_dash_is_read_and_written_as_a_file_when_spelled_as_a_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Path("./-")`` is ``Path("-")``: ``classify ./-`` read stdin (empty: 0 verdicts, exit 0)
    and ``-o ./-`` wrote stdout while the file named '-' was ignored (a newcomer's review,
    2026-12-06). '-' alone is still stdin and stdout."""
    import io

    monkeypatch.chdir(tmp_path)
    (tmp_path / "-").write_text(json.dumps(LINE) + "\n" + json.dumps({**LINE, "request_id": "r2"}) + "\n")
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, err = _run(capsys, "classify", "./-", "-o", "out.jsonl", "--detectors", "rules")
    assert code == 0, err
    assert [json.loads(x)["request_id"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == ["r1", "r2"]
    (tmp_path / "in.jsonl").write_text(json.dumps(LINE) + "\n")
    code, err = _run(capsys, "classify", "in.jsonl", "-o", "./-", "--detectors", "rules")
    assert code == 0, err
    assert [json.loads(x)["request_id"] for x in (tmp_path / "-").read_text().splitlines()] == ["r1"]


@pytest.mark.parametrize(
    "argv",
    [["lag-exporter", "--group", "g", "--topic", "t"], ["report", ".", "--dead-letter-topic", "dlq", "-o", "-"]],
    ids=["lag-exporter", "report"],
)
def test_a_bootstrap_value_kafka_python_cannot_read_is_a_usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `--bootstrap ::::` was "invalid KafkaSettings" (exit 4)
    here and an internal error (exit 1) in `gateway`; it is a bad option value."""
    code, err = _run(capsys, *argv, "--bootstrap", "::::")
    assert code == ExitCode.USAGE and "--bootstrap" in err and "port is not a number" in err, err


def test_a_message_naming_a_long_path_is_one_line_on_a_non_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A newcomer review (2026-12-07): stderr that is not a terminal was wrapped at 80 columns,
    splitting the output path (and the `iconv -f UTF-16 -t UTF-8 FILE` hint) mid-word."""
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(LINE) + "\n")
    out = tmp_path / ("a_rather_long_directory_name_for_outputs" * 2) / "and_another_level_of_nesting" / "verdicts.jsonl"
    out.parent.mkdir(parents=True)
    code, err = _run(capsys, "classify", str(source), "-o", str(out), "--detectors", "rules")
    assert code == 0 and any(str(out) in line for line in err.splitlines()), err


def test_a_misspelt_mm_config_suggests_mm_config() -> None:
    from pipeline.exits import unknown_env_vars

    assert unknown_env_vars({"MM_CONFG": "bad.yaml"}) == [
        "MM_CONFG is not a setting (did you mean MM_CONFIG?); it is ignored"]


def test_simulate_days_help_says_zero_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """Its help said `x>=0` while 0 was refused (a newcomer review, 2026-12-07)."""
    main(["simulate", "--help"])
    days = [line for line in capsys.readouterr().out.splitlines() if "--days" in line]
    assert days and "more than 0" in days[0] and ">=0" not in days[0], days


@pytest.mark.parametrize("option", ["--debug", "--log-level"])
def test_a_global_option_after_the_command_says_where_it_goes(option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A newcomer review (2026-12-07): `simulate ... --debug` said only "No such option"."""
    argv = ["simulate", "-o", str(tmp_path / "x.jsonl"), "--records", "1", option]
    code, err = _run(capsys, *(argv if option == "--debug" else [*argv, "debug"]))
    assert code == ExitCode.USAGE and f"{option} is a global option: put it before the command" in err, err
    assert not (tmp_path / "x.jsonl").exists()


@pytest.mark.parametrize(
    ("url", "secret", "expected"),
    [
        ("postgresql://misuse:Tr0ub4dor#3xyz@127.0.0.1:{port}/misuse", "Tr0ub4dor", ExitCode.DATABASE_UNREACHABLE),
        ("postgresql://misuse:Zq9x/cd3xyz@127.0.0.1:{port}/misuse", "Zq9x", ExitCode.DATABASE_UNREACHABLE),
        ("postgresql://misuse:8812/Xy#secret@127.0.0.1:{port}/misuse", "8812", ExitCode.DATABASE_UNREACHABLE),
        ("postgresql://misuse:s3cr3t@[::1/misuse", "s3cr3t", ExitCode.CONFIG),
        ("postgresql://misuse:Secr@tPart@127.0.0.1:{port}/misuse", "tPart", ExitCode.CONFIG),  # "@" in the password
        ("postgresql://misuse:s3cr3t@127.0.0.1:99999/misuse", "s3cr3t", ExitCode.CONFIG),
    ],
    ids=["hash", "slash", "digits-then-slash", "unclosed-bracket", "at-sign", "port-out-of-range"],
)
def test_a_database_url_with_symbols_in_its_password_is_read_as_sqlalchemy_reads_it_and_never_shown(
    url: str, secret: str, expected: ExitCode, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hostile review (2026-12-07): the check split the URL with urlsplit, which ends the address
    part at a "#" or "/" in the password, and printed its first characters as the port ("port
    'Tr0ub4dor'"); with digits there it dialled the user name as a host. SQLAlchemy (the sink)
    reads these URLs whole, so the check does too: the right address, and no part of the password.
    An unclosed "[" was an internal error (exit 1)."""
    code, err = _run(capsys, "events", "init", "--url", url.format(port=free_port()))
    assert code == expected and secret not in err and "misuse:" not in err, err
    if expected == ExitCode.DATABASE_UNREACHABLE:
        assert "not reachable at 127.0.0.1:" in err, err
    else:
        assert "percent-encoded" in err and "127.0.0.1" not in err, err


def test_a_lake_encryption_key_that_is_not_32_bytes_of_base64_fails_the_start_as_a_config_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hostile review (2026-12-07): the lake sink built its cipher after the broker check and
    the models' load, and a bad key was an internal error (exit 1). It is a setting: exit 3 at
    once, without the value."""
    monkeypatch.setenv("MM_LAKE__ENCRYPTION_KEY", "c2hvcnRrZXk9PQ")
    started = time.monotonic()
    code, err = _run(capsys, "stream", "--topic", "t1", "--detectors", "rules", "--bootstrap", f"127.0.0.1:{free_port()}")
    assert code == ExitCode.CONFIG and "lake.encryption_key" in err and "32 bytes" in err, err
    assert "c2hvcnRrZXk9PQ" not in err
    assert time.monotonic() - started < 10  # before any broker wait


@pytest.mark.parametrize("days", ["0", "800000"])
def test_events_prune_days_is_bounded_as_its_setting(days: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `--days` was only `min=0` where postgres.retention_days is
    1 to 36,500: 0 deleted every event and 800,000 overflowed the date (internal error, exit 1).
    Refused before any database is reached."""
    code, err = _run(capsys, "events", "prune", "--url", f"postgresql+psycopg://u@127.0.0.1:{free_port()}/db", "--days", days)
    assert code == ExitCode.USAGE and "--days" in err, err


@pytest.mark.parametrize("name", ["bad topic!", ".", "..", "t" * 250, "ünïcode", ""])
def test_a_topic_name_kafka_refuses_is_refused_before_any_broker(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `produce --topic 'bad topic!' --create-topic` reached the
    broker, whose refusal came back as a 600-character InvalidTopicError line and exit 1."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(LINE) + "\n")
    bootstrap = f"127.0.0.1:{free_port()}"
    code, err = _run(capsys, "produce", str(src), "--topic", name, "--create-topic", "--bootstrap", bootstrap)
    assert code == ExitCode.USAGE and "--topic" in err and "is not a Kafka topic name" in err, err
    code, err = _run(capsys, "stream", "--topic", name, "--detectors", "rules", "--bootstrap", bootstrap)
    assert code == ExitCode.USAGE and "kafka.input_topic" in err and "is not a Kafka topic name" in err, err


@pytest.mark.parametrize("rate", ["1e-10", "1e-300", "inf", "nan"])
def test_a_produce_rate_that_paces_nothing_or_for_ever_is_a_usage_error(rate: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review: `--rate 1e-10` paced the second record 317 years out, `1e-300` was an
    internal error (OverflowError in the sleep), `inf`/`nan` paced nothing. Refused before any broker."""
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(LINE) + "\n")
    code, err = _run(capsys, "produce", str(src), "--rate", rate, "--bootstrap", f"127.0.0.1:{free_port()}")
    assert code == ExitCode.USAGE and "--rate" in err, err


def test_topic_names_kafka_accepts_are_accepted() -> None:
    from pipeline.settings import KafkaSettings

    for name in ("logs.dlq", "a", "t" * 249, "demo.logs.20261207-095123", "A_b-9"):
        assert KafkaSettings(input_topic=name).input_topic == name


@pytest.mark.parametrize(
    ("variable", "suggested"),
    [("MM_LAKE_ENCRYPTION_KEY", "MM_LAKE__ENCRYPTION_KEY"), ("MM_PSEUDONYM__KEY", "MM_PSEUDONYM_KEY"),
     ("MM_PSEUDONYM_KEY__KEY", "MM_PSEUDONYM_KEY"), ("MM_KAFKA_SASL_PLAIN_PASSWORD", "MM_KAFKA__SASL_PLAIN_PASSWORD")],
)
def test_a_misspelt_secret_variable_stops_every_command_that_loads_the_settings(
    variable: str, suggested: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hostile review (2026-12-07): with MM_LAKE_ENCRYPTION_KEY (one underscore) the stream only
    warned, then kept every log in the lake unencrypted; MM_PSEUDONYM__KEY was told "did you mean
    MM_PSEUDONYM_KEY__KEY?", a name no setting reads either, which then passed without a word.
    A command's --help still works."""
    monkeypatch.setenv(variable, "c2VjcmV0LXZhbHVlLTEyMzQ1Ng")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(LINE) + "\n")
    code, err = _run(capsys, "classify", str(src), "-o", str(tmp_path / "x.jsonl"), "--detectors", "rules")
    assert code == ExitCode.CONFIG and f"{variable} is not a setting (did you mean {suggested}?)" in err, err
    assert "c2VjcmV0LXZhbHVlLTEyMzQ1Ng" not in err and not (tmp_path / "x.jsonl").exists()
    assert main(["stream", "--help"]) == 0


def test_the_top_level_settings_read_from_the_environment_are_neither_warned_of_nor_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review of the change above: MM_PSEUDONYM_KEY, the one every deployment sets, was taken
    for a misspelt secret (exit 3 for every command), and MM_SINKS was warned of."""
    monkeypatch.setenv("MM_PSEUDONYM_KEY", "a-real-pseudonym-key-of-enough-length")
    monkeypatch.setenv("MM_SINKS", '["lake"]')
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(LINE) + "\n")
    code, err = _run(capsys, "classify", str(src), "-o", str(tmp_path / "x.jsonl"), "--detectors", "rules")
    assert code == 0 and "MM_PSEUDONYM_KEY" not in err and "MM_SINKS" not in err, err


def test_a_misspelt_variable_that_holds_no_secret_is_still_only_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MM_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    code, err = _run(capsys, "simulate", "-o", str(tmp_path / "x.jsonl"), "--records", "1")
    assert code == 0 and "warning: MM_KAFKA_BOOTSTRAP_SERVERS is not a setting" in err, err


def test_lag_exporter_reads_the_config_file_it_is_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `lag-exporter -c x.yaml` was "No such option: -c", though its
    help said the broker defaults to the settings'; only MM_CONFIG reached it."""
    address = f"127.0.0.1:{free_port()}"
    cfg = tmp_path / "mm.yaml"
    cfg.write_text(f"kafka: {{bootstrap_servers: '{address}', connect_timeout_s: 0.5}}\n")
    code, err = _run(capsys, "lag-exporter", "--group", "g", "--topic", "t", "-c", str(cfg), "--port", "0")
    assert code == ExitCode.KAFKA_UNREACHABLE and address in err, err


def test_a_group_option_after_its_subcommand_says_where_it_goes(capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `alerts test --config x.yaml` said only "No such option"."""
    code, err = _run(capsys, "alerts", "test", "--config", "x.yaml")
    assert code == ExitCode.USAGE and "--config is an option of 'misuse-monitor alerts': put it before 'test'" in err, err


def test_another_programs_mm_password_variable_is_only_warned_of(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The review of the misspelt-secret refusal (2026-12-07): Mattermost's MM_EMAILSETTINGS_SMTPPASSWORD
    stopped every command; only a name whose closest setting is a secret one is refused."""
    monkeypatch.setenv("MM_EMAILSETTINGS_SMTPPASSWORD", "x")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(LINE) + "\n")
    code, err = _run(capsys, "classify", str(src), "-o", str(tmp_path / "x.jsonl"), "--detectors", "rules")
    assert code == 0 and "warning: MM_EMAILSETTINGS_SMTPPASSWORD is not a setting" in err, err


def test_the_lake_key_is_checked_without_the_privacy_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """The review of 7d31e6d: the settings check built the cipher, which imports `cryptography`
    (the privacy extra), so a deployment-wide key stopped commands that never touch the lake."""
    import sys

    from pipeline.privacy import TextCipher
    from pipeline.settings import Settings

    key = TextCipher.generate()
    monkeypatch.setitem(sys.modules, "cryptography", None)  # not installed
    assert Settings(lake={"encryption_key": key}).lake.encryption_key is not None
    with pytest.raises(ValueError, match="32 bytes"):
        Settings(lake={"encryption_key": "c2hvcnRrZXk9PQ"})


def test_the_gateways_topic_is_held_to_kafkas_rule_too() -> None:
    """The review of 3f2c974: gateway.topic was not checked, and the broker's refusal read as
    "Kafka not reachable, serving anyway" while every log failed."""
    from pydantic import ValidationError

    from pipeline.settings import Settings

    with pytest.raises(ValidationError, match="is not a Kafka topic name"):
        Settings(gateway={"topic": "bad topic/with:chars"})
    assert Settings(gateway={"topic": "gateway.logs"}).gateway.topic == "gateway.logs"


@pytest.mark.parametrize(
    "argv",
    [["simulate", "--records", "5", "-o", "{d}/out/"], ["simulate", "--records", "5", "-o", "{d}/o.jsonl", "--truth", "{d}/t/"],
     ["classify", "{d}/in.jsonl", "--detectors", "rules", "-o", "{d}/v/"], ["report", "{d}", "-o", "{d}/r/"]],
    ids=["simulate-o", "simulate-truth", "classify-o", "report-o"],
)
def test_an_output_name_ending_in_a_slash_is_a_usage_error(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `simulate -o out/` wrote a file named `out`."""
    (tmp_path / "in.jsonl").write_text(json.dumps(LINE) + "\n")
    code, err = _run(capsys, *[a.format(d=tmp_path) for a in argv])
    assert code == ExitCode.USAGE and "ends with a slash" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]


# --------------------------------------------------------------------------- Ctrl-C


def test_a_ctrl_c_lost_in_a_finaliser_still_stops_the_next_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """A newcomer review (2026-12-07): Ctrl-C during `classify` was sometimes ignored and the run
    went on to its last line. The KeyboardInterrupt had been raised inside a finaliser (the regex
    module's ``__del__``, while patterns compile), where Python prints "Exception ignored" and drops
    it. The handler remembers it, and each step of a progress bar raises it again."""
    import os
    import signal

    from pipeline.cli import _progress
    from pipeline.exits import remember_interrupts

    from pipeline.exits import raise_if_interrupted

    lost: list[type[BaseException]] = []
    monkeypatch.setattr("sys.unraisablehook", lambda u: lost.append(u.exc_type))

    class Finaliser:
        def __del__(self) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs here, inside __del__

    before = signal.signal(signal.SIGINT, signal.default_int_handler)  # a test worker may ignore SIGINT
    try:
        restore = remember_interrupts()
        try:
            Finaliser()
            assert lost == [KeyboardInterrupt]  # as Python does it: dropped
            with _progress() as progress, pytest.raises(KeyboardInterrupt):
                progress.advance(progress.add_task("x", total=2))
        finally:
            restore()
        raise_if_interrupted()  # forgotten with the handler: later commands of the process run
        with _progress() as progress:
            progress.advance(progress.add_task("x", total=2))
    finally:
        signal.signal(signal.SIGINT, before)


def _classify_then_ctrl_c(tmp_path: Path, lines: int, *, ignored: bool = False, settle_s: float = 0.0) -> tuple[int, str, Path]:
    """Start `classify` on ``lines`` lines in a child process, send it SIGINT once scoring has
    started (the output's temporary file exists) and ``settle_s`` later; (exit code, stderr, output).
    ``ignored``: the child starts with SIGINT ignored, as ``cmd &`` in a shell script does."""
    import os
    import signal
    import subprocess
    import sys

    src = tmp_path / "in.jsonl"
    src.write_text((json.dumps(LINE) + "\n") * lines)
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())",
         "classify", str(src), "-o", str(out), "--detectors", "rules"],
        cwd=Path(__file__).resolve().parents[2], stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items() if not k.upper().startswith("MM_")},
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignored else None,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob(".out.jsonl.*.tmp")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(settle_s)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    return proc.returncode, err, out


@pytest.mark.slow
def test_a_command_started_with_ctrl_c_ignored_keeps_ignoring_it(tmp_path: Path) -> None:
    """Shells start ``cmd &`` in a script with SIGINT ignored (and ``trap '' INT`` does so): the
    first version of the handler above replaced that, and such a classify stopped at a Ctrl-C
    meant for something else (a review of my diff, 2026-12-07)."""
    code, err, out = _classify_then_ctrl_c(tmp_path, 3_000, ignored=True)
    assert code == 0, err[-2000:]
    assert len(out.read_text().splitlines()) == 3_000


@pytest.mark.slow
def test_ctrl_c_ends_classify_with_exit_130_a_message_and_no_output(tmp_path: Path) -> None:
    """Ctrl-C exited 130 with nothing on stderr but the progress bar: typer turns it into its own
    exit, so the "interrupted" line README promises was never printed (a newcomer review,
    2026-12-07). The output file is left as it was (absent here)."""
    code, err, out = _classify_then_ctrl_c(tmp_path, 200_000, settle_s=0.5)
    assert code == ExitCode.INTERRUPTED, err[-2000:]
    assert "misuse-monitor: interrupted" in err
    assert not out.exists() and not list(tmp_path.glob(".out.jsonl.*"))
