"""Alertmanager URLs are secrets (they may carry basic-auth credentials): never in a log line."""

from __future__ import annotations

import logging
import socket
import time

from pydantic import SecretStr

from pipeline.alerts.alertmanager import AlertmanagerPusher
from pipeline.alerts.model import Alert, GeneratorLinks
from pipeline.alerts.settings import AlertmanagerSettings
from pipeline.alerts.state import create_db_engine


def test_a_failed_post_logs_the_url_without_its_credentials(tmp_path, caplog) -> None:
    """Found by a privacy review (2026-12-02): the warning printed the whole URL, password included."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there: the post fails
    settings = AlertmanagerSettings(urls=[SecretStr(f"http://mm-bot:S3cretAMpassw0rd@127.0.0.1:{port}/")], timeout_s=1)
    pusher = AlertmanagerPusher(create_db_engine(f"sqlite:///{tmp_path / 'am.db'}"), settings, GeneratorLinks(base_url=""))
    now = time.time()
    alert = Alert(rule="r", labels={"alertname": "r"}, annotations={}, starts_at=now, ends_at=now + 60, updated_at=now)
    with caplog.at_level(logging.WARNING):
        assert pusher._post(pusher._peers[0], [alert], now) is False
    assert f"http://127.0.0.1:{port}/" in caplog.text
    assert "S3cret" not in caplog.text and "mm-bot" not in caplog.text


def test_the_alert_database_url_is_shown_without_user_password_or_query() -> None:
    """A hostile review (2026-12-06): `alerts dispatch` cut the URL at its last `@`, which
    printed a password given as `?password=` (libpq and SQLAlchemy both take one there), and the
    alert store's errors showed the query too."""
    import pytest

    from pipeline.alerts.state import AlertStoreError, shown_db_url

    url = "postgresql+psycopg://mm:UserPw1@db.internal:5432/alerts?password=Qu3ryPw&sslmode=require"
    assert shown_db_url(url) == "postgresql+psycopg://db.internal:5432/alerts"
    # An "@" left unquoted in the password: SQLAlchemy reads its end as part of the host.
    assert "ss" not in shown_db_url("postgresql://u:p@ss@db.internal/alerts")
    with pytest.raises(AlertStoreError) as err:
        create_db_engine(url.replace("+psycopg", "+nosuchdriver"))
    assert "db.internal:5432/alerts" in str(err.value)
    assert "Qu3ryPw" not in str(err.value) and "UserPw1" not in str(err.value) and "mm:" not in str(err.value)


def test_a_throttled_or_unauthorised_alertmanager_gets_one_request_per_attempt(tmp_path) -> None:
    """Past a chunk Alertmanager refuses as invalid (400) the pusher sends the next chunks; a
    hostile review (2026-12-06) found it did so for every 4xx, five requests per attempt to an
    Alertmanager answering 429 (or 401, 403, 404). Those end the attempt after one."""
    import http.server
    import threading

    posts: list[int] = []

    class Throttled(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            posts.append(1)
            self.send_response(429)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Throttled)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = AlertmanagerSettings(urls=[SecretStr(f"http://127.0.0.1:{server.server_address[1]}/")], timeout_s=5)
        pusher = AlertmanagerPusher(create_db_engine(f"sqlite:///{tmp_path / 'am.db'}"), settings, GeneratorLinks(base_url=""))
        now = time.time()
        alerts = [Alert(rule="r", labels={"alertname": "r", "n": str(i)}, annotations={}, starts_at=now, ends_at=now + 60, updated_at=now)
                  for i in range(1_200)]
        assert pusher._post(pusher._peers[0], alerts, now) is False
        assert len(posts) == 1
    finally:
        server.shutdown()
