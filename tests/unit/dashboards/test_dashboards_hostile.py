"""`dashboards verify` given what a careless newcomer types: a wrong address or a bad range is one
line on stderr and the exit code README's table gives it, not one ERROR line per panel and exit
11 ("a panel query failed"), and never an internal error (exit 1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("grafana_foundation_sdk")

from pipeline.cli import main  # noqa: E402
from pipeline.exits import ExitCode  # noqa: E402
from pipeline.localinfra.base import LOOPBACK, free_port  # noqa: E402


def _nowhere() -> str:
    """A PostgreSQL URL nobody listens on: the usage errors below come before any connection
    (Prometheus unreachable, exit 8, needs a database that answers: tests/integration/dashboards)."""
    return f"postgresql+psycopg://reader@{LOOPBACK}:{free_port()}/misuse"


@pytest.mark.parametrize("url", ["sqlite:///events.db", "mysql://reader:s3cret-pw@db:3306/misuse", "127.0.0.1:5432/misuse"])
def test_verify_database_url_that_is_not_postgresql_is_a_usage_error(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A SQLite URL connected and then failed every SQL panel (exit 11, as if the dashboards were
    broken); a MySQL URL reached a driver that is not installed (exit 1)."""
    code = main(["dashboards", "verify", "--prometheus-url", f"http://{LOOPBACK}:{free_port()}", "--postgres-url", url])
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE, out[-2000:] + err
    assert "--postgres-url" in err and "PostgreSQL" in err and "s3cret-pw" not in out + err


def test_verify_database_unreachable_is_exit_6_without_the_password(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("psycopg")
    port = free_port()
    code = main(["dashboards", "verify", "--prometheus-url", f"http://{LOOPBACK}:{free_port()}",
                 "--postgres-url", f"postgresql+psycopg://reader:s3cret-pw@{LOOPBACK}:{port}/misuse"])
    out, err = capsys.readouterr()
    assert code == ExitCode.DATABASE_UNREACHABLE, out[-2000:]
    assert "ERROR" not in out and len(err.strip().splitlines()) == 1
    assert "s3cret-pw" not in out + err


def test_verify_against_a_database_that_never_answers_is_exit_6_within_the_connect_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A hostile review (2026-12-07): a server that accepted the connection and said nothing hung
    `dashboards verify` for good (its engine had no connect timeout); `events prune` said so in
    one line. It now uses the events store's engine (its connect timeout: 10 s)."""
    import socket
    import time

    pytest.importorskip("psycopg")
    silent = socket.socket()
    silent.bind((LOOPBACK, 0))
    silent.listen(8)  # the kernel accepts; nothing ever answers
    monkeypatch.setenv("MM_CONFIG", "/nonexistent/settings.yaml")  # not read: the URL is given
    started = time.monotonic()
    try:
        code = main(["dashboards", "verify", "--prometheus-url", f"http://{LOOPBACK}:{free_port()}",
                     "--postgres-url", f"postgresql+psycopg://reader:s3cret-pw@{LOOPBACK}:{silent.getsockname()[1]}/misuse"])
    finally:
        silent.close()
    err = capsys.readouterr().err
    assert code == ExitCode.DATABASE_UNREACHABLE and time.monotonic() - started < 30, err
    assert len(err.strip().splitlines()) == 1 and "s3cret-pw" not in err


@pytest.mark.parametrize("hours", ["inf", "nan", "0", "-1", "1e12"])
def test_verify_hours_outside_a_range_is_a_usage_error(hours: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["dashboards", "verify", "--prometheus-url", f"http://{LOOPBACK}:{free_port()}",
                 "--postgres-url", _nowhere(), "--hours", hours])
    assert code == ExitCode.USAGE
    assert "--hours" in capsys.readouterr().err


@pytest.mark.parametrize("url", [f"{LOOPBACK}:9090", "http://prometheus:abc", "http://u:s3cret-pw@prometheus:99999"])
def test_verify_prometheus_url_that_is_not_http_is_a_usage_error(url: str,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """A URL without http:// failed every query alike (exit 11); a bad port was a ValueError (exit 1)."""
    code = main(["dashboards", "verify", "--prometheus-url", url, "--postgres-url", _nowhere(), "--json"])
    out, err = capsys.readouterr()
    assert code == ExitCode.USAGE and out == ""
    assert "--prometheus-url" in err and "s3cret-pw" not in err


def test_verify_help_states_the_documented_exit_code() -> None:
    """The help said "exit 1 if any fails"; the command exits 11 (README: 1 is only for bugs)."""
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(app, ["dashboards", "verify", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "exit 11" in text and "exit 1 " not in text


def test_lag_exporter_without_a_broker_is_exit_5_within_the_connect_timeout(capsys: pytest.CaptureFixture[str]) -> None:
    """It waited for kafka-python's 30 s bootstrap timeout before exit 5; now the preflight answers
    within kafka.connect_timeout_s (5 s), like stream and produce."""
    import time

    started = time.monotonic()
    code = main(["lag-exporter", "--bootstrap", f"{LOOPBACK}:{free_port()}", "--group", "g", "--topic", "t", "--port", "0"])
    took = time.monotonic() - started
    assert code == ExitCode.KAFKA_UNREACHABLE
    assert took < 15, f"took {took:.0f} s"
    assert "no broker reachable" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["localhost:3000", "admin:s3cret-pw@grafana:3000", "", "ftp://grafana",
                                 "http://grafana:abc", "http://admin:s3cret-pw@grafana:99999"])
def test_push_url_without_http_scheme_is_a_usage_error_without_the_password(url: str,
                                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`--url localhost:3000` (or an empty GRAFANA_URL) was InvalidSchema/MissingSchema: exit 1."""
    code = main(["dashboards", "push", "--url", url, "--dry-run"])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE, err
    assert "--url" in err and "s3cret-pw" not in err


def test_generate_into_a_shared_folder_deletes_nothing_of_others(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`dashboards generate --out /var/lib/grafana/dashboards` (or `--out .`) deleted every other
    JSON file there as a "leftover": other teams' dashboards, package.json."""
    shared = tmp_path / "grafana-dashboards"
    shared.mkdir()
    other = shared / "other-team.json"
    other.write_text('{"uid": "team-x", "title": "Team X"}', encoding="utf-8")
    package = shared / "package.json"
    package.write_text('{"name": "web"}', encoding="utf-8")
    assert main(["dashboards", "generate", "--out", str(shared)]) == ExitCode.USAGE
    assert "other-team.json" in capsys.readouterr().err
    assert other.is_file() and package.is_file()
    assert sorted(p.name for p in shared.iterdir()) == ["other-team.json", "package.json"]


def test_generate_keeps_another_uid_beside_ours(tmp_path: Path) -> None:
    """In a folder of ours, a retired dashboard of ours goes; a dashboard with another uid stays
    and does not make `check` fail."""
    out = tmp_path / "generated"
    assert main(["dashboards", "generate", "--out", str(out)]) == 0
    (out / "retired.json").write_text('{"uid": "mm-retired"}', encoding="utf-8")
    theirs = out / "theirs.json"
    theirs.write_text('{"uid": "team-x"}', encoding="utf-8")
    assert main(["dashboards", "generate", "--out", str(out)]) == 0
    assert not (out / "retired.json").exists() and theirs.is_file()
    assert main(["dashboards", "check", "--out", str(out)]) == 0


def test_generate_deletes_only_dashboards_of_ours_and_says_what_it_removed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): in a folder of ours, a dashboard without a uid (Grafana
    takes those), a package.json or a JSON list was deleted by a re-run that said "wrote" them."""
    out = tmp_path / "generated"
    assert main(["dashboards", "generate", "--out", str(out)]) == 0
    theirs = {"teamx.json": '{"title": "Team X board", "panels": []}', "package.json": '{"name": "pkg"}',
              "list.json": "[1, 2]", "broken.json": "{not json"}  # fmt: skip
    for name, text in theirs.items():
        (out / name).write_text(text, encoding="utf-8")
    (out / "retired.json").write_text('{"uid": "mm-retired"}', encoding="utf-8")
    capsys.readouterr()
    assert main(["dashboards", "generate", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "removed retired.json"
    assert {name: (out / name).read_text(encoding="utf-8") for name in theirs} == theirs
    assert main(["dashboards", "check", "--out", str(out)]) == 0


@pytest.mark.parametrize("kind", ["file", "missing"])
def test_generate_and_check_out_that_is_not_a_directory_is_a_usage_error(tmp_path: Path, kind: str) -> None:
    """`generate --out FILE` was FileExistsError (exit 1); `check --out TYPO` said every dashboard
    was stale (exit 11)."""
    out = tmp_path / "out"
    if kind == "file":
        out.write_text("x")
        assert main(["dashboards", "generate", "--out", str(out)]) == ExitCode.USAGE
        assert out.read_text() == "x"
    assert main(["dashboards", "check", "--out", str(out)]) == ExitCode.USAGE


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_lag_exporter_port_out_of_range_is_a_usage_error(port: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--port 99999 was "internal error: OverflowError: bind(): port must be 0-65535" (exit 1)."""
    code = main(["lag-exporter", "--bootstrap", f"{LOOPBACK}:{free_port()}", "--group", "g", "--topic", "t", "--port", port])
    assert code == ExitCode.USAGE
    assert "--port" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value"), [("--topic", ""), ("--topic", "bad topic!"), ("--topic", ".."), ("--group", "")])
def test_lag_exporter_names_that_can_never_exist_are_usage_errors(option: str, value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): such a topic was only warned of as "not found yet" and an
    empty group was taken; the exporter then served nothing for them."""
    args = {"--group": "g", "--topic": "t", option: value}
    code = main(["lag-exporter", "--bootstrap", f"{LOOPBACK}:{free_port()}", *[x for kv in args.items() for x in kv]])
    assert code == ExitCode.USAGE
    assert option in capsys.readouterr().err


@pytest.mark.parametrize("seconds", ["inf", "0", "nan"])
def test_lag_exporter_scrape_timeout_out_of_range_is_a_usage_error(seconds: str, capsys: pytest.CaptureFixture[str]) -> None:
    """--scrape-timeout inf was accepted, and every scrape would then have failed in the wait for
    the broker (OverflowError: timestamp out of range), a 500 to Prometheus."""
    code = main(["lag-exporter", "--bootstrap", f"{LOOPBACK}:{free_port()}", "--group", "g", "--topic", "t",
                 "--scrape-timeout", seconds])
    assert code == ExitCode.USAGE
    assert "--scrape-timeout" in capsys.readouterr().err


def test_push_to_a_server_that_is_not_grafana_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--url pointed at another web server (a wrong port): the whole HTML error page it answered
    was the "one line" on stderr (14 lines)."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # its access log would share stderr with the CLI
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = ThreadingHTTPServer((LOOPBACK, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://admin:s3cret-pw@{LOOPBACK}:{server.server_address[1]}"
        code = main(["dashboards", "push", "--url", url, "--dry-run"])
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert code == ExitCode.SERVICE_UNREACHABLE, err
    assert len(err.strip().splitlines()) == 1, err
    assert "404" in err and "s3cret-pw" not in err


_ODD_ANSWERS = {
    "an-html-login-page": (200, "text/html", b"<html><body>Sign in</body></html>"),
    "not-json": (200, "application/json", b"{nope"),
    "a-redirect-loop": (302, "text/html", b""),
    "a-datasource-without-a-uid": (200, "application/json", b'[{"type": "prometheus", "name": "p"}]'),
}


@pytest.mark.parametrize("answer", list(_ODD_ANSWERS))
def test_push_to_a_server_that_answers_oddly_is_one_line_exit_8(answer: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): an SSO login page, a body that is not JSON, a redirect loop
    to /login or a datasource without a uid was "internal error" (exit 1)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    status, content_type, body = _ODD_ANSWERS[answer]

    class Odd(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server hook
            self.send_response(status)
            if status == 302:
                self.send_header("Location", "/login?next=" + self.path)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((LOOPBACK, 0), Odd)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code = main(["dashboards", "push", "--url", f"http://admin:s3cret-pw@{LOOPBACK}:{server.server_address[1]}", "--dry-run"])
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    # A datasource Grafana lists without a uid is no candidate: the usual "cannot pick one" (exit 2).
    assert code == (ExitCode.USAGE if answer == "a-datasource-without-a-uid" else ExitCode.SERVICE_UNREACHABLE), err
    assert len(err.strip().splitlines()) == 1 and "internal error" not in err and "s3cret-pw" not in err, err


def test_module_check_exits_11_like_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m dashboards.generate --check` (the docs' alternative) said "stale" with exit 1,
    the code README reserves for bugs; `dashboards check` says it with 11."""
    from dashboards import generate

    assert generate.main(["--check", "--out", str(tmp_path)]) == ExitCode.CHECK_FAILED
    assert "stale dashboards" in capsys.readouterr().err
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--check", "--out", str(tmp_path)]) == 0


def test_generate_replaces_a_stale_dashboard_whole(tmp_path: Path) -> None:
    """Grafana's file provisioner polls the folder: a dashboard is renamed into place, never
    written there in part (its temp name does not end in .json, so neither Grafana nor the
    leftover check reads it)."""
    out = tmp_path / "generated"
    assert main(["dashboards", "generate", "--out", str(out)]) == 0
    stale = sorted(out.glob("*.json"))[0]
    stale.write_text("{}", encoding="utf-8")
    before = stale.stat().st_ino
    assert main(["dashboards", "generate", "--out", str(out)]) == 0
    assert stale.stat().st_ino != before, "written in place, not replaced"
    assert json.loads(stale.read_text(encoding="utf-8"))["uid"]
    assert all(p.suffix == ".json" and not p.name.startswith(".") for p in out.iterdir())
