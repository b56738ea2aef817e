"""The local Kafka that dev and every Kafka-backed test rely on really works end to end.

Client settings needed for 10 MB records (the streaming job must carry them), found here:
- producer: ``max_request_size`` >= record size (kafka-python default 1 MiB; a bigger record fails
  locally in ``send()`` with MessageSizeTooLargeError before reaching the broker). We use 16 MiB
  (``LARGE_PRODUCER_CONFIG``); ``buffer_memory`` default 32 MiB is enough.
- consumer: ``max_partition_fetch_bytes`` raised to 16 MiB (``LARGE_CONSUMER_CONFIG``), so one
  fetch holds the whole record; ``fetch_max_bytes`` default 50 MiB is already larger. (A default
  consumer also got 10-15 MiB records in a manual check, via the broker's KIP-74 oversized first
  batch; we do not rely on that.)
- broker/topic: ``message.max.bytes`` (and ``replica.fetch.max.bytes``) 16 MiB, set by
  ``start_broker``; a topic created elsewhere may need ``max.message.bytes`` raised the same way.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable

import pytest
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import MessageSizeTooLargeError

from pipeline.localinfra.kafka import LARGE_CONSUMER_CONFIG, LARGE_PRODUCER_CONFIG

pytestmark = pytest.mark.kafka

POLL_DEADLINE_S = 30.0


def _consumer(bootstrap: str, topic: str, group_id: str, **config: object) -> KafkaConsumer:
    return KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **config,
    )


def _drain(consumer: KafkaConsumer, want: int, deadline_s: float = POLL_DEADLINE_S) -> list[ConsumerRecord]:
    """Poll until ``want`` records arrived, then once more briefly to catch any duplicates."""
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + deadline_s
    while len(records) < want and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    for batch in consumer.poll(timeout_ms=1_000).values():
        records.extend(batch)
    return records


def test_hundred_messages_over_three_partitions_arrive_exactly_once(
    kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]
) -> None:
    topic = kafka_topic_factory(partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    for i in range(100):
        producer.send(topic, key=f"request-{i}".encode(), value=str(i).encode())
    producer.flush(timeout=30)
    producer.close()

    group = f"{topic}-group"
    consumer = _consumer(kafka_bootstrap, topic, group)
    records = _drain(consumer, want=100)
    consumer.commit()
    consumer.close()

    assert sorted(int(r.value) for r in records) == list(range(100))
    assert len({r.partition for r in records}) == 3, "keys should spread over all partitions"

    # Committed offsets mean a restarted member of the same group resumes after the last record.
    again = _consumer(kafka_bootstrap, topic, group)
    assert _drain(again, want=1, deadline_s=5.0) == []
    again.close()


def test_ten_megabyte_record_round_trips(kafka_bootstrap: str, kafka_topic_factory: Callable[..., str]) -> None:
    topic = kafka_topic_factory(partitions=1)
    payload = os.urandom(10 * 1024 * 1024)  # incompressible, like a worst-case long completion

    default_producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    with pytest.raises(MessageSizeTooLargeError):
        default_producer.send(topic, payload)
    default_producer.close()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", **LARGE_PRODUCER_CONFIG)
    metadata = producer.send(topic, key=b"big", value=payload).get(timeout=60)
    producer.close()
    assert metadata.offset == 0

    consumer = _consumer(kafka_bootstrap, topic, f"{topic}-group", **LARGE_CONSUMER_CONFIG)
    records = _drain(consumer, want=1, deadline_s=60.0)
    consumer.close()

    assert len(records) == 1
    assert hashlib.sha256(records[0].value).digest() == hashlib.sha256(payload).digest()
