"""A sink that hangs rather than fails: every process of a real PostgreSQL stopped (SIGSTOP), as a
frozen VM or a long stall looks to its clients. Nothing answers and nothing raises.

Regression (hostile check, 2026-12-04): the stream's sink stage blocked in the database call, so
/healthz said "ok" for the whole 60 s hang and a 30 s ``stream.outage_deadline_s`` never fired;
only SIGCONT released it. Now a sink call that has not returned for ``stream.sink_stall_s`` is an
outage of that sink like one that raises: shown on /healthz, bounded by the deadline, and a
SIGTERM does not wait for it. Each test has its own server: a stopped one must not stall others.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import sqlalchemy as sa

from pipeline.localinfra.postgres import LocalPostgres, remove_cluster, start_postgres
from tests.integration.test_stream import _lake_ids, _produce, _record, _stream_env
from tests.integration.test_stream_outages import _alive, _free_port, _healthz, _start, _wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[LocalPostgres]:
    server = start_postgres(tmp_path / "pg")
    try:
        yield server
    finally:
        _signal_all(server, signal.SIGCONT)
        server.stop()
        remove_cluster(server)


def _server_processes(server: LocalPostgres) -> list[int]:
    """The postmaster and its children (one backend per connection, and its workers)."""
    found = [server.service.pid]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError, IndexError, ValueError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == server.service.pid:
                found.append(int(entry.name))
    return found


def _signal_all(server: LocalPostgres, sig: signal.Signals) -> None:
    for pid in _server_processes(server):
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


@contextmanager
def _hung(server: LocalPostgres) -> Iterator[None]:
    _signal_all(server, signal.SIGSTOP)
    try:
        yield
    finally:
        _signal_all(server, signal.SIGCONT)


def _env(kafka_bootstrap: str, topic: str, tmp_path: Path, database: LocalPostgres, port: int, **extra: str) -> dict[str, str]:
    return _stream_env(
        kafka_bootstrap, topic, tmp_path, f"g-{topic}", MM_BATCH__MAX_RECORDS="50", MM_METRICS__PORT=str(port),
        MM_SINKS='["verdict_topic", "lake", "metrics", "postgres"]', MM_POSTGRES__URL=database.url,
        MM_STREAM__SINK_STALL_S="3", **extra,
    )


def _stored(database: LocalPostgres) -> set[str]:
    engine = sa.create_engine(database.url)
    try:
        with engine.connect() as conn:
            return {row[0] for row in conn.execute(sa.text("SELECT request_id FROM misuse_events"))}
    finally:
        engine.dispose()


def _reported_stalled(proc: subprocess.Popen, port: int) -> bool:
    down = _healthz(port)[1].get("down", {})
    return _alive(proc) and "postgres" in down and "has not returned" in down["postgres"]["reason"]


def test_a_hung_database_is_reported_and_waited_out_and_nothing_is_lost(kafka_bootstrap, kafka_topic_factory,
                                                                       tmp_path, database):
    topic = kafka_topic_factory(partitions=2)
    records = [_record(i) for i in range(400)]
    _produce(kafka_bootstrap, topic, records[:300])
    port = _free_port()
    proc = _start(_env(kafka_bootstrap, topic, tmp_path, database, port), max_idle=5)
    try:
        _wait_for(lambda: len(_lake_ids(tmp_path)) >= 50, 120, "the first batch in the lake")
        with _hung(database):
            _wait_for(lambda: _reported_stalled(proc, port), 30, "/healthz to name the stalled postgres call")
            time.sleep(5)
            assert _alive(proc)
        _produce(kafka_bootstrap, topic, records[300:])
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    assert "postgres: a call has not returned for" in err and "postgres recovered after" in err, err[-3000:]
    wanted = {r["request_id"] for r in records}
    ids = _lake_ids(tmp_path)
    assert len(ids) == len(set(ids)) and set(ids) == wanted
    assert _stored(database) == wanted


def test_a_database_hung_past_the_deadline_ends_the_run_in_one_line(kafka_bootstrap, kafka_topic_factory, tmp_path,
                                                                  database):
    topic = kafka_topic_factory(partitions=2)
    records = [_record(i) for i in range(300)]
    _produce(kafka_bootstrap, topic, records)
    port = _free_port()
    env = _env(kafka_bootstrap, topic, tmp_path, database, port, MM_STREAM__OUTAGE_DEADLINE_S="10")
    proc = _start(env, max_idle=5)
    try:
        _wait_for(lambda: len(_lake_ids(tmp_path)) >= 50, 120, "the first batch in the lake")
        with _hung(database):
            hung_at = time.monotonic()
            _, err = proc.communicate(timeout=90)
            took = time.monotonic() - hung_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 9, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("misuse-monitor: error:")]
    assert len(errors) == 1 and "outage: postgres unavailable for" in errors[0], err[-3000:]
    assert took < 40, f"exited {took:.0f} s into the hang, with a 10 s deadline"
    # Nothing was lost: a restart with the database back reads the uncommitted batches again.
    restarted = _start(env, max_idle=5)
    out, err = restarted.communicate(timeout=240)
    assert restarted.returncode == 0, err[-3000:]
    wanted = {r["request_id"] for r in records}
    assert set(_lake_ids(tmp_path)) == wanted and _stored(database) == wanted


def test_sigterm_while_a_database_call_hangs_exits_without_waiting_for_it(kafka_bootstrap, kafka_topic_factory,
                                                                          tmp_path, database):
    topic = kafka_topic_factory(partitions=1)
    _produce(kafka_bootstrap, topic, [_record(i) for i in range(200)])
    port = _free_port()
    proc = _start(_env(kafka_bootstrap, topic, tmp_path, database, port), max_idle=60)
    try:
        _wait_for(lambda: len(_lake_ids(tmp_path)) >= 50, 120, "the first batch in the lake")
        with _hung(database):
            _wait_for(lambda: _reported_stalled(proc, port), 30, "/healthz to name the stalled postgres call")
            proc.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            _, err = proc.communicate(timeout=60)
            took = time.monotonic() - stopped_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 9 and "stopped while postgres was unavailable" in err, err[-3000:]
    assert took < 20, f"SIGTERM took {took:.0f} s"
    assert "Traceback" not in err
