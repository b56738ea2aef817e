"""Real PostgreSQL and Prometheus for the events store and dashboard tests (never mocks).

PostgreSQL: one local server per session (``pipeline.localinfra.postgres``), one fresh database
per test. Set ``MM_TEST_POSTGRES_URL`` (a superuser URL) to use a running server instead.
Prometheus: started per test by ``prometheus_factory`` because its scrape targets differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from pipeline.localinfra.postgres import remove_cluster, start_postgres, temporary_database
from pipeline.localinfra.prometheus import LocalPrometheus, start_prometheus
from pipeline.postgres_settings import PostgresSettings

PrometheusFactory = Callable[..., LocalPrometheus]


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


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[PrometheusFactory]:
    """``prometheus_factory(targets, rule_files=(...))`` -> a running Prometheus, stopped after the test."""
    started: list[LocalPrometheus] = []

    def make(targets: Sequence[str], rule_files: Sequence[Path] = (), interval_s: float = 1.0) -> LocalPrometheus:
        server = start_prometheus(tmp_path / f"prometheus-{len(started)}", targets, rule_files=rule_files, interval_s=interval_s)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
