"""`misuse-monitor produce` against the real broker: a JSON summary for scripts, and replayed lines
keyed like the gateway keys live traffic (one user's records on one partition)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from pipeline.localinfra.kafka import create_topic, start_broker
from pipeline.producer import record_key
from tests.integration.test_stream import _record, _stream_env

pytestmark = pytest.mark.kafka


def test_produce_json_summary_and_gateway_keys(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=3)
    records = [_record(i) for i in range(40)]
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in records) + "\n{not json\n")
    env = _stream_env(kafka_bootstrap, topic, tmp_path, "unused")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "produce", str(src), "--topic", topic, "--json"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["topic"] == topic and summary["delivered"] == 41 and summary["refused"] == []

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    messages = list(consumer)
    consumer.close()
    assert len(messages) == 41
    expected = {json.dumps(r).encode(): record_key(r["tenant_id"], r["user_id"], r["request_id"]) for r in records}
    keyed = [m for m in messages if m.value in expected]
    assert all(m.key == expected[m.value] for m in keyed) and len(keyed) == 40
    partitions_per_user: dict[bytes, set[int]] = {}
    for m in keyed:
        partitions_per_user.setdefault(m.key, set()).add(m.partition)
    assert all(len(p) == 1 for p in partitions_per_user.values())
    assert [m.key for m in messages if m.value == b"{not json"] == [None]


def _produce(src, topic: str, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "pipeline.cli", "produce", str(src), "--topic", topic, *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _request_ids(bootstrap: str, topic: str) -> list[str]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    try:
        return [json.loads(m.value)["request_id"] for m in consumer]
    finally:
        consumer.close()


def test_from_line_starts_the_replay_there(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=1)
    records = [_record(i) for i in range(10)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records))
    done = _produce(src, topic, _stream_env(kafka_bootstrap, topic, tmp_path, "unused"), "--from-line", "7", "--json")
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0 and json.loads(out)["delivered"] == 4, err[-2000:]
    assert _request_ids(kafka_bootstrap, topic) == [r["request_id"] for r in records[6:]]


@pytest.mark.slow
def test_a_broker_that_hangs_mid_replay_is_one_line_that_says_where_to_resume(tmp_path):
    """Regression (hostile check, 2026-12-04): with the broker stopped (SIGSTOP) mid-replay,
    `produce` exited 5 with "kafka: KafkaTimeoutError: KafkaTimeoutError: ..." and no word of
    which lines had arrived, then printed a KafkaTimeoutError traceback from kafka-python's
    producer ``__del__`` (its close() had given up without closing). Now: one line naming the
    last line known delivered and the --from-line that resumes; resuming loses nothing."""
    broker = start_broker(tmp_path / "kafka")
    try:
        topic = "produce.hung"
        create_topic(broker.bootstrap, topic, 2)
        records = [_record(i) for i in range(30_000)]
        src = tmp_path / "in.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in records))
        env = _stream_env(broker.bootstrap, topic, tmp_path, "unused")
        replay = _produce(src, topic, env)
        admin = KafkaConsumer(bootstrap_servers=broker.bootstrap)
        partitions = [TopicPartition(topic, p) for p in range(2)]
        deadline = time.monotonic() + 120
        while sum(admin.end_offsets(partitions).values()) < 5_000 and time.monotonic() < deadline:
            time.sleep(0.05)  # past the first flush (every 5,000 lines)
        admin.close()
        os.kill(broker.service.pid, signal.SIGSTOP)
        try:
            _, err = replay.communicate(timeout=120)
        finally:
            os.kill(broker.service.pid, signal.SIGCONT)
        assert replay.returncode == 5, err[-3000:]
        assert "Traceback" not in err and "Exception ignored" not in err, err[-3000:]
        (line,) = [x for x in err.splitlines() if x.startswith("misuse-monitor: error:")]
        assert "KafkaTimeoutError: KafkaTimeoutError" not in line
        resume = re.search(r"lines up to (\d+) are delivered, .* --from-line (\d+)", line)
        assert resume and int(resume.group(2)) == int(resume.group(1)) + 1 >= 5_001, line
        again = _produce(src, topic, env, "--from-line", resume.group(2))
        _, err = again.communicate(timeout=240)
        assert again.returncode == 0, err[-3000:]
        assert set(_request_ids(broker.bootstrap, topic)) == {r["request_id"] for r in records}
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker.service.pid, signal.SIGCONT)
        broker.stop()
