"""`misuse-monitor produce` against the real broker: a JSON summary for scripts, and replayed lines
keyed like the gateway keys live traffic (one user's records on one partition)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from kafka import KafkaConsumer

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
