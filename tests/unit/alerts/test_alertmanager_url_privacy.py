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
    with pytest.raises(AlertStoreError) as err:
        create_db_engine(url.replace("+psycopg", "+nosuchdriver"))
    assert "db.internal:5432/alerts" in str(err.value)
    assert "Qu3ryPw" not in str(err.value) and "UserPw1" not in str(err.value) and "mm:" not in str(err.value)
