"""The stream with ``stream.scoring = "process"`` against the real broker: what the inline
stream guarantees holds when the detectors run in a worker process, and that worker's death
is survived without losing or duplicating anything."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from tests.fixtures.kafka_read import read_topic
from tests.integration.test_stream import (
    _finish,
    _lake_ids,
    _produce,
    _produce_malformed,
    _record,
    _records_consumed,
    _start_stream,
    _stream_env,
)
from tests.integration.test_stream_outages import _alive, _free_port, _healthz, _start, _wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _children(pid: int) -> list[int]:
    """Scoring processes whose parent is ``pid`` (from /proc; multiprocessing's resource
    tracker is a child too, and is not one)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            cmdline = (entry / "cmdline").read_bytes()
            if b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
                out.append(int(entry.name))
    return out


def _running(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _wait_for_child(pid: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        kids = _children(pid)
        if kids:
            return kids[0]
        time.sleep(0.05)
    raise AssertionError("the stream never started its scoring process")


def test_killing_the_scoring_process_mid_run_loses_nothing_and_the_stream_goes_on(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    """The scoring process killed (SIGKILL: the OOM killer, a segfault) while batches flow. Until
    2026-12-06 the stream stopped (exit 10) and a restart re-read the batch, so a record that
    crashes the scorer stopped its partition for good. Now a new process scores the batch again,
    one record at a time, and the run goes on: every record in the lake once, the malformed ones
    in the dead-letter topic, and no verdict sent twice (nothing was replayed)."""
    topic = kafka_topic_factory(partitions=3)
    records = [_record(i) for i in range(3000)]
    _produce(kafka_bootstrap, topic, records)
    malformed = _produce_malformed(kafka_bootstrap, topic)
    env = _stream_env(
        kafka_bootstrap, topic, tmp_path, "g-worker-kill", MM_STREAM__SCORING="process", MM_BATCH__MAX_RECORDS="10",
        MM_KAFKA__SESSION_TIMEOUT_MS="6000",
    )
    proc = _start_stream(env)
    child = _wait_for_child(proc.pid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((tmp_path / "lake").rglob("*.parquet"))) < 5:
        time.sleep(0.05)
    os.kill(child, signal.SIGKILL)
    partial = len(_lake_ids(tmp_path))
    out = _finish(proc)
    assert 0 < partial < len(records), "the kill must land in the middle of the run"
    assert "killed by signal 9; starting a new one to score the batch of" in out, out[-3000:]
    ids = _lake_ids(tmp_path)
    assert len(ids) == len(set(ids)), "duplicate verdicts in the lake"
    assert sorted(ids) == [r["request_id"] for r in records]
    dead = read_topic(kafka_bootstrap, f"{topic}.dlq", len(malformed))
    assert sorted(m.value for m in dead) == sorted(malformed)
    verdicts = [json.loads(m.value) for m in read_topic(kafka_bootstrap, f"{topic}.verdicts", len(records))]
    assert sorted(v["request_id"] for v in verdicts) == [r["request_id"] for r in records]
    assert _records_consumed(out) == len(records) + len(malformed)
    assert not _children(proc.pid)


def test_sigterm_with_a_scoring_process_is_a_clean_stop_that_leaves_no_process_behind(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    topic = kafka_topic_factory(partitions=1)
    records = [_record(i) for i in range(200)]
    _produce(kafka_bootstrap, topic, records)
    env = _stream_env(kafka_bootstrap, topic, tmp_path, "g-worker-term", MM_STREAM__SCORING="process")
    proc = _start_stream(env, max_idle=60)
    child = _wait_for_child(proc.pid)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_lake_ids(tmp_path) if (tmp_path / "lake").exists() else []) < len(records):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, timeout=60)
    assert _records_consumed(out) == len(records)
    assert sorted(_lake_ids(tmp_path)) == [r["request_id"] for r in records]
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()


def test_a_scoring_process_that_hangs_is_an_outage_that_ends_the_run_at_the_deadline(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    """A stopped worker (SIGSTOP: as a hung GPU or driver looks) answers nothing and raises
    nothing. Regression (hostile check, 2026-12-04): the score stage waited on it for good, with
    /healthz "ok" and no deadline. Now it is the ``scoring`` component once a batch has not
    finished for ``stream.score_stall_s``, the run ends at the deadline (exit 9, the worker
    killed), and a restart stores everything."""
    topic = kafka_topic_factory(partitions=2)
    records = [_record(i) for i in range(300)]
    _produce(kafka_bootstrap, topic, records)
    port = _free_port()
    env = _stream_env(
        kafka_bootstrap, topic, tmp_path, "g-worker-hang", MM_STREAM__SCORING="process", MM_BATCH__MAX_RECORDS="20",
        MM_STREAM__SCORE_STALL_S="3", MM_STREAM__OUTAGE_DEADLINE_S="10", MM_METRICS__PORT=str(port),
    )
    proc = _start(env, max_idle=5)
    child = _wait_for_child(proc.pid)
    try:
        _wait_for(lambda: _alive(proc) and len(_lake_ids(tmp_path)) >= 20, 120, "the first batch in the lake")
        os.kill(child, signal.SIGSTOP)
        hung_at = time.monotonic()
        _wait_for(lambda: "scoring" in _healthz(port)[1].get("down", {}), 30, "/healthz to name the hung scoring")
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - hung_at
        time.sleep(1)  # the orphaned child is reaped by init
        worker_left = _running(child)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 9, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("misuse-monitor: error:")]
    assert len(errors) == 1 and "outage: scoring unavailable for" in errors[0], err[-3000:]
    assert took < 60, f"exited {took:.0f} s into the hang, with a 10 s deadline"
    assert not worker_left, "the stopped worker outlived the stream"
    restarted = _start(env, max_idle=5)
    _, err = restarted.communicate(timeout=240)
    assert restarted.returncode == 0, err[-3000:]
    assert sorted(set(_lake_ids(tmp_path))) == sorted(r["request_id"] for r in records)
