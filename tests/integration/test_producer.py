"""The gateway producer against the real broker: batches arrive, failures are named."""

from __future__ import annotations

import pytest
from kafka import KafkaConsumer

from pipeline.producer import DeliveryError, GatewayProducer
from pipeline.settings import KafkaSettings
from tests.fixtures.logs import make_log

pytestmark = pytest.mark.kafka


def test_logs_are_delivered_keyed_by_request_id(kafka_bootstrap, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=2)
    with GatewayProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic) as producer:
        for i in range(50):
            producer.send(make_log(request_id=f"gw-{i}"))
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    keys = sorted(m.key.decode() for m in consumer)
    consumer.close()
    assert keys == sorted(f"gw-{i}" for i in range(50))


def test_flush_names_every_record_that_was_not_delivered(kafka_bootstrap, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=1)
    # A producer limited to 2 KiB requests: the big record fails, the small ones go through.
    producer = GatewayProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap, max_request_size=2048), topic)
    producer.send(make_log(request_id="small-1"))
    producer.send(make_log(request_id="too-big", prompt="x" * 10_000))
    producer.send(make_log(request_id="small-2"))
    with pytest.raises(DeliveryError) as err:
        producer.flush()
    producer.close()
    assert [label for label, _ in err.value.failures] == ["too-big"]
    assert "too-big" in str(err.value)


def test_a_record_the_broker_refuses_does_not_break_the_producer_for_the_next_ones(kafka_bootstrap, kafka_topic_factory):
    """kafka-python 3.0.12 turns an idempotent producer's first broker-side "too large" into a
    fatal state: every later send failed with the same error (a hostile review, 2026-12-06: one
    oversized dead letter, then nothing delivered). The client-side limit above never reaches
    the broker; this topic's own limit does."""
    topic = kafka_topic_factory(partitions=1, config={"max.message.bytes": "4096"})
    producer = GatewayProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap), topic)
    producer.send(make_log(request_id="too-big", prompt="x" * 10_000))
    with pytest.raises(DeliveryError) as err:
        producer.flush()
    assert [label for label, _ in err.value.failures] == ["too-big"]
    producer.forget_failed()
    for i in range(3):
        producer.send(make_log(request_id=f"after-{i}"))
    assert producer.flush() == 3
    producer.close()
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    assert sorted(m.key.decode() for m in consumer) == ["after-0", "after-1", "after-2"]
    consumer.close()
