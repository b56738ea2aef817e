"""Real PostgreSQL and Prometheus for the events store and dashboard tests (never mocks).

PostgreSQL: one local server per session (``pipeline.localinfra.postgres``), one fresh database
per test. Set ``MM_TEST_POSTGRES_URL`` (a superuser URL) to use a running server instead.
Prometheus: started per test by ``prometheus_factory`` because its scrape targets differ.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.localinfra.postgres import remove_cluster, start_postgres
from pipeline.localinfra.prometheus import LocalPrometheus, start_prometheus
from pipeline.postgres_settings import PostgresSettings

PrometheusFactory = Callable[..., LocalPrometheus]


@pytest.fixture(scope="session")
def postgres_admin_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.URL]:
    external = os.environ.get("MM_TEST_POSTGRES_URL")
    if external:
        yield sa.make_url(external)
        return
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield sa.make_url(server.url)
    finally:
        server.stop()
        remove_cluster(server)


@pytest.fixture
def postgres_settings(postgres_admin_url: sa.URL) -> Iterator[PostgresSettings]:
    """Settings pointing at a fresh, empty database that is dropped after the test."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = postgres_admin_url.set(database=name).render_as_string(hide_password=False)
    try:
        yield PostgresSettings(url=url, flush_attempts=2)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


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
