"""Chaos against the real broker: stream members join, leave and are killed while a producer writes.

At the end every (partition, offset) of the input topic is in exactly one place: one lake row or
one dead letter (distinct by source offset), never both, never neither. The verdicts topic holds no
duplicate when members only join and leave gracefully; after `kill -9` it may repeat verdicts, but
only as many as the killed member can have had uncommitted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from pipeline.lake import LakeWriter
from tests.integration.test_stream import _record, _stream_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PARTITIONS = 4
MAX_RECORDS = 20
IN_FLIGHT = 2
POISON = [
    b"{not json",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"schema":"inference-log/v1","request_id":"x","timestamp":"2026-11-27T10:00:00Z","model":"m","prompt":1' + b"1" * 4300 + b"}",
    b'{"schema":"inference-log/v1","request_id":"p","prompt":"harmless","prompt":"x","timestamp":"2026-11-27T10:00:00Z","model":"m"}',
    b'{"schema":"inference-log/v1","request_id":"t","timestamp":"0001-01-01T00:30:00+01:00","model":"m","prompt":"hi"}',
]


class _Writer(threading.Thread):
    """Writes ``n`` records (a poison line every 50) over ``seconds``; keeps the sent offsets."""

    def __init__(self, bootstrap: str, topic: str, n: int, seconds: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.n, self.seconds = bootstrap, topic, n, seconds
        self.good: set[str] = set()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, max_request_size=16 * 1024 * 1024)
            started = time.monotonic()
            for i in range(self.n):
                if i % 50 == 49:
                    value, key = POISON[(i // 50) % len(POISON)], None
                else:
                    rec = _record(i)
                    value, key = json.dumps(rec).encode(), rec["request_id"].encode()
                    self.good.add(rec["request_id"])
                producer.send(self.topic, value=value, key=key)
                ahead = (i + 1) * self.seconds / self.n - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
            producer.flush()
            producer.close()
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test
            self.error = exc


def _env(
    bootstrap: str, topic: str, tmp_path: Path, group: str, max_records: int, max_wait_ms: int, session_ms: int
) -> dict[str, str]:
    return _stream_env(
        bootstrap, topic, tmp_path, group,
        MM_BATCH__MAX_RECORDS=str(max_records), MM_BATCH__MAX_WAIT_MS=str(max_wait_ms),
        MM_STREAM__MAX_IN_FLIGHT_BATCHES=str(IN_FLIGHT),
        MM_KAFKA__SESSION_TIMEOUT_MS=str(session_ms),
    )


def _lost_memberships(outputs: dict) -> int:
    """Evictions the members reported (a session that expired under load counts like a crash)."""
    return sum(out.count("rebalance: membership lost") for _, out in outputs.values())


def _end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    ends = {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    consumer.close()
    return ends


def _read_all(bootstrap: str, topic: str) -> list:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
        consumer_timeout_ms=4000, max_partition_fetch_bytes=16 * 1024 * 1024,
    )
    out = list(consumer)
    consumer.close()
    return out


def _run_chaos(
    bootstrap: str, topic: str, tmp_path: Path, group: str, schedule: list[tuple[float, str, int]],
    max_records: int = MAX_RECORDS, max_wait_ms: int = 200, session_ms: int = 6000,
) -> tuple:
    """Run the schedule [(at_s, action, member)] while writing; returns (writer, outputs)."""
    env = _env(bootstrap, topic, tmp_path, group, max_records, max_wait_ms, session_ms)
    writer = _Writer(bootstrap, topic, n=2000, seconds=30)
    members: dict[int, subprocess.Popen] = {}
    started = time.monotonic()
    writer.start()
    for at, action, member in schedule:
        time.sleep(max(0.0, at - (time.monotonic() - started)))
        if action == "start":
            members[member] = subprocess.Popen(
                [sys.executable, "-m", "pipeline.cli", "--log-level", "info", "stream", "--max-idle", "12"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            )
        elif action == "term":
            members[member].send_signal(signal.SIGTERM)
        elif action == "kill":
            members[member].send_signal(signal.SIGKILL)
    writer.join(timeout=120)
    assert writer.error is None and not writer.is_alive()
    outputs = {}
    for member, proc in members.items():
        out, _ = proc.communicate(timeout=240)
        outputs[member] = (proc.returncode, out)
    return writer, outputs


def _check_every_offset_once(bootstrap: str, topic: str, tmp_path: Path, writer: _Writer) -> Counter:
    """Every input offset is one lake row or one dead letter; returns verdict counts per request id."""
    lake = LakeWriter(tmp_path / "lake").read()
    lake_positions = list(zip(lake.column("source_partition").to_pylist(), lake.column("source_offset").to_pylist(), strict=True))
    assert len(lake_positions) == len(set(lake_positions)), "an offset is stored twice in the lake"
    assert sorted(lake.column("request_id").to_pylist()) == sorted(writer.good)

    dead_positions = {
        (int(dict(m.headers)["mm.source.partition"]), int(dict(m.headers)["mm.source.offset"]))
        for m in _read_all(bootstrap, f"{topic}.dlq")
    }
    assert not dead_positions & set(lake_positions), "a record is both stored and dead-lettered"
    expected = {(p, o) for p, end in _end_offsets(bootstrap, topic).items() for o in range(end)}
    assert set(lake_positions) | dead_positions == expected, "some offsets are in no sink and no dead letter"
    return Counter(json.loads(m.value)["request_id"] for m in _read_all(bootstrap, f"{topic}.verdicts"))


def test_joins_and_graceful_leaves_lose_nothing_and_repeat_nothing(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=PARTITIONS)
    schedule = [(0, "start", 1), (4, "start", 2), (9, "start", 3), (14, "term", 2), (18, "start", 4), (23, "term", 1), (26, "start", 5)]
    # Long gathers (the repro): most rebalances land while records are fetched but not yet
    # handed out, so a member that keeps a partition must seek back to re-read them.
    # A session long enough that a member starved of CPU by the test's other processes is not evicted.
    writer, outputs = _run_chaos(
        kafka_bootstrap, topic, tmp_path, "g-chaos-graceful", schedule, max_records=400, max_wait_ms=4000, session_ms=20000
    )
    for member, (rc, out) in outputs.items():
        assert rc == 0, f"member {member}: {out[-3000:]}"
    verdicts = _check_every_offset_once(kafka_bootstrap, topic, tmp_path, writer)
    assert set(verdicts) == writer.good
    logs = "\n".join(
        f"{member}: {line}" for member, (_, out) in outputs.items() for line in out.splitlines()
        if "WARNING" in line or "rebalance" in line or "ERROR" in line
    )
    repeated = sorted(rid for rid, n in verdicts.items() if n > 1)
    if _lost_memberships(outputs):  # not a graceful rebalance any more: bounded like a crash
        assert len(repeated) <= _lost_memberships(outputs) * (IN_FLIGHT + 2) * 400, logs[-5000:]
    else:
        assert repeated == [], f"a graceful rebalance repeated verdicts:\n{logs[-5000:]}"


def test_kill_9_during_rebalances_repeats_only_what_the_killed_member_had_uncommitted(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    topic = kafka_topic_factory(partitions=PARTITIONS)
    schedule = [(0, "start", 1), (4, "start", 2), (9, "start", 3), (13, "kill", 2), (17, "start", 4), (22, "kill", 1), (25, "start", 5)]
    writer, outputs = _run_chaos(kafka_bootstrap, topic, tmp_path, "g-chaos-kill", schedule)
    for member in (3, 4, 5):
        rc, out = outputs[member]
        assert rc == 0, f"member {member}: {out[-3000:]}"
    assert outputs[1][0] == outputs[2][0] == -signal.SIGKILL
    verdicts = _check_every_offset_once(kafka_bootstrap, topic, tmp_path, writer)
    assert set(verdicts) == writer.good
    repeated = sum(n - 1 for n in verdicts.values())
    # What a killed member can have written but not committed: the batches in flight, one being
    # handed out, and finished ones whose commit had not gone out yet.
    bound_per_kill = (IN_FLIGHT + 2) * MAX_RECORDS
    crashes = 2 + _lost_memberships(outputs)
    assert repeated <= crashes * bound_per_kill, f"{repeated} repeated verdicts after {crashes} kills or evictions"
