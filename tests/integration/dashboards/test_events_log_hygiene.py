"""A failed statement on the events store never puts its bound values into errors or logs."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from pipeline import events_db
from pipeline.postgres_settings import PostgresSettings

MARKER = "jane.doe@example.com 4111 1111 1111 1111"


def test_sql_parameters_are_hidden_from_errors_and_logs(postgres_settings: PostgresSettings, caplog: pytest.LogCaptureFixture) -> None:
    engine = events_db.create_engine(postgres_settings)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")
    try:
        with pytest.raises(sa.exc.DBAPIError) as failed, engine.begin() as conn:
            conn.execute(sa.text("SELECT CAST(:evidence AS integer)"), {"evidence": MARKER})
        # SQLAlchemy's own echo of the bound values is off ...
        assert "parameters hidden" in str(failed.value)
        # ... and PostgreSQL's message, which quotes the value itself, is masked where we log it.
        described = events_db.describe_db_error(failed.value)
        assert MARKER not in described and "invalid input syntax" in described, described
        assert all(MARKER not in r.getMessage() for r in caplog.records if r.levelno >= logging.INFO)
    finally:
        engine.dispose()
