"""`misuse-monitor alerts ...` as an operator uses it: validate rules, manage silences, list alerts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.alerts.cli import app
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.state import AlertStoreError, create_db_engine
from pipeline.schemas import Severity

from .conftest import VerdictFactory

runner = CliRunner()
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "alert-rules.yaml"


def test_test_command_validates_the_example_and_rejects_a_broken_file(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["--db-url", f"sqlite:///{tmp_path / 'a.db'}", "--rules", str(EXAMPLE), "test"])
    assert ok.exit_code == 0, ok.output
    assert "6 rule(s)" in ok.output
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [{name: x, kind: rate, window: 5m}]")
    bad = runner.invoke(app, ["--rules", str(broken), "test"])
    assert bad.exit_code == 3  # a rules file is configuration (README, exit codes)
    assert bad.stdout == "" and "threshold" in bad.stderr and "name=x" in bad.stderr


def test_silence_commands_are_gone_in_favour_of_amtool(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--db-url", f"sqlite:///{tmp_path / 'a.db'}", "silence", "list"])
    assert result.exit_code != 0


def test_list_shows_firing_alerts(tmp_path: Path, verdict: VerdictFactory) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = AlertEngine(parse_rules("rules: [{name: crit, kind: verdict, match: {min_severity: critical}}]"))
    engine.observe([verdict(user="u_7", severity=Severity.CRITICAL)])
    db = create_db_engine(url)
    with db.begin() as conn:
        engine.save(conn)
    result = runner.invoke(app, ["--db-url", url, "list", "--json"])
    assert result.exit_code == 0, result.output
    [alert] = json.loads(result.output)["alerts"]
    assert alert["status"] == "firing" and alert["labels"]["user"] == "u_7"


@pytest.mark.parametrize("model", ["[/]", "x[v2]", "[link=https://evil.example]qwen3[/link]"], ids=["closing-tag", "brackets", "link"])
def test_list_shows_label_values_as_written(model: str, tmp_path: Path, verdict: VerdictFactory, monkeypatch) -> None:
    """Labels carry client-named values, and rich read them as markup: a model named "[/]" made
    `alerts list` fail for every operator while its alert lasted, "x[v2]" lost text and a
    [link=...] showed a disguised link (a hostile review, 2026-12-07)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = AlertEngine(parse_rules("rules: [{name: crit, kind: verdict, match: {min_severity: critical}}]"))
    engine.observe([verdict(user="u_7", model=model, severity=Severity.CRITICAL)])
    with create_db_engine(url).begin() as conn:
        engine.save(conn)
    from rich.console import Console

    import pipeline.alerts.cli as alerts_cli

    monkeypatch.setattr(alerts_cli, "console", Console(width=400))  # one line per row: no cell wrapped
    result = CliRunner().invoke(app, ["--db-url", url, "list"])
    assert result.exit_code == 0, result.output
    assert f"model={model}" in result.output


def test_alerts_config_file_is_read(tmp_path: Path) -> None:
    config = tmp_path / "alerts.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "rules_file": str(EXAMPLE),
                "db_url": f"sqlite:///{tmp_path / 'a.db'}",
                "notify": "direct",
                "receivers": [{"name": "ops", "type": "slack", "url": "http://127.0.0.1:9/hook"}],
            }
        )
    )
    result = runner.invoke(app, ["--alerts-config", str(config), "test"])
    assert result.exit_code == 0, result.output
    assert "notify: direct" in result.output


def test_receivers_without_direct_mode_are_a_configuration_error() -> None:
    import pytest
    from pydantic import ValidationError

    from pipeline.alerts.settings import AlertSettings

    with pytest.raises(ValidationError, match="notify: direct"):
        AlertSettings(receivers=[{"name": "ops", "type": "slack", "url": "http://127.0.0.1:9/hook"}])


def test_test_command_json_lists_the_rules_or_the_error(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["--db-url", f"sqlite:///{tmp_path / 'a.db'}", "--rules", str(EXAMPLE), "test", "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["valid"] is True and len(doc["rules"]) == 6 and {"name", "kind", "severity", "receivers"} <= set(doc["rules"][0])
    broken = tmp_path / "broken.yaml"
    broken.write_text("rules: [{name: x, kind: rate, window: 5m}]")
    bad = runner.invoke(app, ["--rules", str(broken), "test", "--json"])
    assert bad.exit_code == 3 and json.loads(bad.stdout)["valid"] is False


HOSTILE_MODEL = "qwen\x1b[2J\x1b[H(no alerts firing)\x1b]52;c;cm0gLXJmIH4K\x07\x9b8m\x7f"


def test_list_shows_control_characters_of_client_values_escaped(tmp_path: Path, verdict: VerdictFactory, monkeypatch) -> None:
    """A hostile review (2026-12-07): only rich markup was escaped, so a model or tenant named with
    ESC/OSC sequences (or C1, DEL) cleared the operator's screen, wrote the clipboard or printed
    "(no alerts firing)" over the table; a receiver's error text in `--dead` did the same."""
    import time

    from rich.console import Console

    import pipeline.alerts.cli as alerts_cli
    from pipeline.alerts.model import WebhookMessage
    from pipeline.alerts.outbox import Notification, Outbox

    url = f"sqlite:///{tmp_path / 'a.db'}"
    engine = AlertEngine(parse_rules("rules: [{name: crit, kind: verdict, match: {min_severity: critical}}]"))
    engine.observe([verdict(user="u_7", model=HOSTILE_MODEL, tenant="acme\x1b[8m", severity=Severity.CRITICAL)])
    db = create_db_engine(url)
    with db.begin() as conn:
        engine.save(conn)
    outbox = Outbox(db)
    message = WebhookMessage(groupKey="{}:{}", status="firing", receiver="ops", groupLabels={}, commonLabels={},
                             commonAnnotations={}, externalURL="http://mm", alerts=[])
    with db.begin() as conn:
        outbox.enqueue(conn, Notification("k0", "ops", "g", message), time.time())
    [item] = outbox.claim_due(time.time() + 1, 10, 30)
    outbox.mark_dead(item.id, "HTTP 500: \x1b]0;owned\x07\tdone")
    monkeypatch.setattr(alerts_cli, "console", Console(width=400))  # one line per row: no cell wrapped
    result = CliRunner().invoke(app, ["--db-url", url, "list", "--dead"])
    assert result.exit_code == 0, result.output
    assert not [c for c in result.output if c != "\n" and (c < " " or "\x7f" <= c < "\xa0")]
    assert r"model=qwen\x1b[2J\x1b[H(no alerts firing)\x1b]52;c;cm0gLXJmIH4K\x07\x9b8m\x7f" in result.output
    assert r"tenant=acme\x1b[8m" in result.output and r"HTTP 500: \x1b]0;owned\x07\tdone" in result.output


def test_requeue_json_counts_the_dead_letters_put_back(tmp_path: Path) -> None:
    import time

    from pipeline.alerts.model import WebhookMessage
    from pipeline.alerts.outbox import DEAD, Notification, Outbox

    url = f"sqlite:///{tmp_path / 'a.db'}"
    db = create_db_engine(url)
    outbox = Outbox(db)
    now = time.time()
    message = WebhookMessage(groupKey="{}:{}", status="firing", receiver="ops", groupLabels={}, commonLabels={},
                             commonAnnotations={}, externalURL="http://mm", alerts=[])
    with db.begin() as conn:
        for i, receiver in enumerate(["ops", "ops", "sec"]):
            outbox.enqueue(conn, Notification(f"k{i}", receiver, "g", message), now)
    for item in outbox.claim_due(now + 1, 10, 30):
        outbox.mark_dead(item.id, "HTTP 401")
    assert len(outbox.rows(DEAD)) == 3
    result = runner.invoke(app, ["--db-url", url, "requeue", "--receiver", "ops", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"requeued": 2, "receiver": "ops"}
    assert [row.receiver for row in outbox.rows(DEAD)] == ["sec"]



def _main(capsys, *argv: str) -> tuple[int, str]:
    """Through the entry point, which turns errors into one line and an exit code."""
    from pipeline.cli import main

    code = main(["alerts", *argv])
    return int(code), capsys.readouterr().err


def test_a_mistyped_database_path_is_an_error_not_a_new_directory_tree(tmp_path: Path, capsys) -> None:
    """``--db-url sqlite:////nonexistent/a.db list`` created /nonexistent and an empty database,
    and listed nothing as if all were well (a careless-newcomer check, 2026-12-02)."""
    typo = tmp_path / "no-such-dir" / "alerts" / "a.db"
    for command in (["list"], ["requeue"]):
        code, err = _main(capsys, "--db-url", f"sqlite:///{typo}", *command)
        assert code == 3, (command, err)
        assert str(typo) in err.replace("\n", "") and "Traceback" not in err
    # The stream's alert sink and `alerts dispatch` create the database, but not a directory tree.
    with pytest.raises(AlertStoreError, match="does not exist"):
        create_db_engine(f"sqlite:///{typo}")
    assert not (tmp_path / "no-such-dir").exists()
    # list and requeue only read what is there: a database that does not exist is named, not made.
    missing = tmp_path / "a.db"
    code, err = _main(capsys, "--db-url", f"sqlite:///{missing}", "list")
    assert code == 3 and "no alert database" in err and not missing.exists()


def test_mm_alerts_variables_apply_without_a_config_file(tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/alerting.md: "Environment variables work as for every setting, e.g.
    MM_ALERTS__DB_URL". Without --config or MM_CONFIG the alerts commands read none of them and
    opened the default database (a newcomer's review, 2026-12-06); a misspelt key went unnoticed."""
    monkeypatch.delenv("MM_CONFIG", raising=False)
    missing = tmp_path / "other.db"
    monkeypatch.setenv("MM_ALERTS__DB_URL", f"sqlite:///{missing}")
    code, err = _main(capsys, "list")
    assert code == 3 and f"no alert database at {missing}" in err.replace("\n", ""), err
    monkeypatch.setenv("MM_ALERTS__RULES_FILE", str(tmp_path / "no-rules.yaml"))
    code, err = _main(capsys, "test")
    assert code != 0 and "no-rules.yaml" in err.replace("\n", ""), err
    monkeypatch.delenv("MM_ALERTS__RULES_FILE")
    monkeypatch.setenv("MM_ALERTS__BOGUS", "1")
    code, err = _main(capsys, "list")
    assert code == 3 and "bogus" in err.lower(), err


def test_list_and_requeue_leave_a_file_that_is_not_an_alert_database_as_it_was(tmp_path: Path, capsys) -> None:
    """`alerts list` on another program's SQLite file (or an empty file) created our tables in it
    and switched its journal mode to WAL, then listed nothing (an on-call review, 2026-12-06)."""
    import sqlite3

    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()
    empty = tmp_path / "empty.db"
    empty.write_bytes(b"")
    for path in (foreign, empty):
        before = path.read_bytes()
        for command in (["list"], ["requeue"]):
            code, err = _main(capsys, "--db-url", f"sqlite:///{path}", *command)
            assert code == 3 and f"{path} is not an alert database" in err.replace("\n", ""), (command, err)
        assert path.read_bytes() == before and not Path(f"{path}-wal").exists()


def test_the_default_database_directory_is_still_created_one_level_deep(tmp_path: Path, capsys) -> None:
    url = f"sqlite:///{tmp_path / 'data' / 'alerts.db'}"  # like the default sqlite:///data/alerts.db
    create_db_engine(url).dispose()
    assert (tmp_path / "data" / "alerts.db").is_file()
    assert _main(capsys, "--db-url", url, "list")[0] == 0


def test_an_alert_database_that_does_not_answer_is_exit_6(capsys) -> None:
    """Its OperationalError was wrapped as an internal error (exit 1) while the tables were created."""
    import socket

    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, err = _main(capsys, "--db-url", f"postgresql+psycopg://mm@127.0.0.1:{port}/mm", "list")
    assert code == 6 and "database:" in err and "Traceback" not in err


@pytest.mark.parametrize("seconds", ["-1", "0", "nan", "inf"])
def test_a_send_timeout_out_of_range_is_a_usage_error(seconds: str, capsys) -> None:
    """``test --send --timeout-s -1`` (or nan) skipped the wait, reported every receiver as not
    delivered, and left the test notifications queued in the outbox for the real dispatcher to
    send later; inf would have waited up to alerts.delivery.dead_letter_after_s (a day) on a
    receiver that never answers."""
    from pipeline.exits import ExitCode

    code, err = _main(capsys, "test", "--send", "--timeout-s", seconds)
    assert code == ExitCode.USAGE, err
    assert "--timeout-s" in err


def _one_webhook_config(tmp_path: Path, port: int) -> Path:
    """An alerts config of the example rules, an SQLite store and one webhook receiver on ``port``."""
    rules = Path(__file__).resolve().parents[3] / "examples" / "alert-rules.yaml"
    config = tmp_path / "alerts.yaml"
    config.write_text(yaml.safe_dump({
        "rules_file": str(rules), "db_url": f"sqlite:///{tmp_path / 'a.db'}", "notify": "direct",
        "receivers": [{"name": "ops", "type": "webhook", "url": f"http://127.0.0.1:{port}/hook", "secret": "s"}],
    }))
    return config


def test_a_test_notification_not_delivered_in_time_is_dropped_not_sent_later(tmp_path: Path, capsys) -> None:
    """A receiver that refuses connections: ``test --send`` reported it not delivered, but left
    the notification pending in the outbox, for the alert service's dispatcher to send to on-call
    later. It is now marked dead, with the reason."""
    import sqlalchemy as sa

    from pipeline.alerts import state as alert_db
    from pipeline.alerts.outbox import DEAD
    from pipeline.localinfra.base import free_port

    config = _one_webhook_config(tmp_path, free_port())
    code, err = _main(capsys, "--alerts-config", str(config), "test", "--send", "--timeout-s", "0.5")
    assert code != 0 and "not delivered to 1 of 1" in err
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'a.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.select(alert_db.outbox.c.state, alert_db.outbox.c.last_error)).all()
    engine.dispose()
    assert [state for state, _ in rows] == [DEAD], rows
    assert rows[0][1].startswith("ConnectError") and "not sent later" in rows[0][1]  # the cause is kept
    assert "ops: dead ConnectError" in err


def test_a_receivers_answer_in_the_error_line_is_shown_escaped(tmp_path: Path, capsys) -> None:
    """A review (2026-12-07): the table line of `test --send` was escaped, but the error line
    after it quoted the receiver's answer raw: its ESC and OSC sequences retitled and cleared the
    operator's terminal, a bidi override reordered the line."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = "nope \x1b]0;pwned\x07\x1b[2J \u202eevil".encode()

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(500)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        config = _one_webhook_config(tmp_path, server.server_port)
        code, err = _main(capsys, "--alerts-config", str(config), "test", "--send", "--timeout-s", "2")
    finally:
        server.shutdown()
    assert code != 0 and "not delivered to 1 of 1" in err
    assert "\x1b" not in err and "\u202e" not in err and "\x07" not in err, repr(err)
    assert r"\x1b]0;pwned\x07\x1b[2J \u202eevil" in err


def test_the_default_rules_file_missing_names_the_folder_and_how_to_give_one(tmp_path: Path, monkeypatch) -> None:
    """A newcomer review (2026-12-07): `alerts test` run outside the repository said only
    "cannot read ... examples/alert-rules.yaml: [Errno 2]", without the usual error prefix."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MM_CONFIG", raising=False)
    monkeypatch.delenv("MM_ALERTS__RULES_FILE", raising=False)
    result = runner.invoke(app, ["--db-url", f"sqlite:///{tmp_path / 'a.db'}", "test"])
    assert result.exit_code == 3
    line = result.stderr.strip()
    assert line.startswith("misuse-monitor: error: alert rules: examples/alert-rules.yaml not found")
    assert str(tmp_path) in line and "--rules" in line and "\n" not in line


def test_an_alerts_config_with_a_key_written_twice_is_a_config_error(tmp_path: Path, capsys) -> None:
    """A hostile review (2026-12-07): the last of two equal keys won without a word."""
    config = tmp_path / "alerts.yaml"
    config.write_text(f"rules_file: {EXAMPLE}\nnotify: direct\nnotify: alertmanager\n")
    code, err = _main(capsys, "--alerts-config", str(config), "test")
    assert code == 3 and "'notify' is written twice" in err and ":3:" in err, err


@pytest.mark.parametrize("kind", ["missing", "folder", "not-utf8", "bad-yaml"])
def test_an_alerts_config_that_cannot_be_read_is_a_config_error_naming_it(kind: str, tmp_path: Path, capsys) -> None:
    """A hostile review (2026-12-07): a missing file or a folder was exit 4 (README: a config file
    that cannot be read is exit 3), and a non-UTF-8 or broken file did not name the file."""
    config = {"missing": tmp_path / "nofile.yaml", "folder": tmp_path}.get(kind, tmp_path / "alerts.yaml")
    if kind == "not-utf8":
        config.write_bytes(b"notify: \xff\n")
    elif kind == "bad-yaml":
        config.write_text("notify: [\n")
    code, err = _main(capsys, "--alerts-config", str(config), "test")
    assert code == 3 and str(config) in err and len(err.strip().splitlines()) == 1, err


def test_a_rules_file_that_is_not_utf8_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A newcomer review (2026-12-07): "input is not UTF-8 text ... at byte 24", exit 4 (an input
    error), and no file named."""
    rules = tmp_path / "rules.yaml"
    rules.write_bytes(b"rules:\n  - name: caf\xe9\n")
    result = runner.invoke(app, ["--db-url", f"sqlite:///{tmp_path / 'a.db'}", "--rules", str(rules), "test"])
    assert result.exit_code == 3
    assert result.stderr.strip() == f"misuse-monitor: error: alert rules: {rules} is not UTF-8 text (invalid continuation byte at byte 20)"


def test_a_rules_file_without_rules_passes_with_a_warning(tmp_path: Path) -> None:
    """It said only "0 rule(s) OK": an empty or wrong file means no alert ever fires (a newcomer
    review, 2026-12-07). Valid, as promtool takes a file of no rules, but said."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("")
    result = runner.invoke(app, ["--db-url", f"sqlite:///{tmp_path / 'a.db'}", "--rules", str(rules), "test"])
    assert result.exit_code == 0, result.output
    assert f"warning: {rules} has no rules: no alert will ever fire" in result.stderr
