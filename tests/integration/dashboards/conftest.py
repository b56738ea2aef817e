"""Real PostgreSQL for the events store and dashboard tests (never mocks).

PostgreSQL: one local server per session (``pipeline.localinfra.postgres``), one fresh database
per test. Set ``MM_TEST_POSTGRES_URL`` (a superuser URL) to use a running server instead.
Prometheus is started by the test module that needs it (its scrape targets are per test).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from pipeline.localinfra.postgres import remove_cluster, start_postgres, temporary_database
from pipeline.postgres_settings import PostgresSettings


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of a role that may create databases."""
    external = os.environ.get("MM_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server.url
    finally:
        server.stop()
        remove_cluster(server)


@pytest.fixture
def postgres_settings(postgres_admin_url: str) -> Iterator[PostgresSettings]:
    """Settings pointing at a fresh, empty database that is dropped after the test."""
    with temporary_database(postgres_admin_url) as url:
        yield PostgresSettings(url=url, flush_attempts=2)
