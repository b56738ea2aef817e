"""GatewayProducer keys records by tenant and (hashed) user: one user's traffic stays on one
partition of the real broker, so per-user alert state can live with one stream replica."""

from __future__ import annotations

from collections import defaultdict

import pytest
from kafka import KafkaConsumer

from pipeline.producer import GatewayProducer, record_key
from pipeline.settings import KafkaSettings
from tests.fixtures.logs import make_log

pytestmark = pytest.mark.kafka


def test_one_users_traffic_stays_on_one_partition(kafka_bootstrap, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=6)
    with GatewayProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic) as producer:
        for i in range(240):
            producer.send(make_log(request_id=f"r-{i}", tenant_id=f"t{i % 2}", user_id=f"user-{i % 12}@corp.example"))
        producer.send({"schema": "inference-log/v1", "request_id": "no-user", "timestamp": "2026-11-28T10:00:00Z",
                       "model": "m", "prompt": "p"})
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    partitions_of: dict[bytes, set[int]] = defaultdict(set)
    for m in consumer:
        partitions_of[m.key].add(m.partition)
        assert b"corp.example" not in m.key and b"user-" not in m.key
    consumer.close()
    assert partitions_of.pop(b"no-user") and len(partitions_of) == 12  # 12 (tenant, user) pairs
    assert all(len(p) == 1 for p in partitions_of.values())
    assert len(set().union(*partitions_of.values())) > 1  # users spread over partitions
    assert record_key("t0", "user-0@corp.example") in partitions_of
    assert record_key("t0", "u") != record_key("t1", "u")  # the same id in two tenants is two users
