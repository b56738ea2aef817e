"""The report counts the stream's dead letters by reason, read from the real dead-letter topic."""

from __future__ import annotations

import pytest
from kafka import KafkaProducer

from pipeline.report import ReportError, dead_letter_counts, read_dead_letter_topic

pytestmark = pytest.mark.kafka


def test_dead_letter_topic_reasons_are_counted(kafka_bootstrap, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for reason in ["invalid_json", "too_deep", "invalid_json", "detector_error"]:
        producer.send(topic, b"original bytes", headers=[("mm.error.reason", reason.encode())])
    producer.send(topic, b"no header")
    producer.flush()
    producer.close()
    counts = dead_letter_counts(read_dead_letter_topic(kafka_bootstrap, topic))
    assert counts == [("invalid_json", 2), ("detector_error", 1), ("too_deep", 1), ("unknown", 1)]


def test_a_missing_dead_letter_topic_is_a_clear_error(kafka_bootstrap):
    with pytest.raises(ReportError, match="dead-letter topic no-such-dlq not found"):
        read_dead_letter_topic(kafka_bootstrap, "no-such-dlq")


def test_the_dead_letter_topic_is_read_with_the_settings_security_options(kafka_bootstrap, kafka_topic_factory):
    # It was read with the bootstrap address alone, so a SASL/TLS cluster's options were dropped:
    # here a TLS setting against this plaintext broker must fail instead of being ignored.
    from kafka.errors import KafkaError

    from pipeline.settings import KafkaSettings

    topic = kafka_topic_factory(partitions=1)
    plain = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    assert dead_letter_counts(read_dead_letter_topic(plain, topic)) == []
    with pytest.raises(KafkaError):
        read_dead_letter_topic(plain.model_copy(update={"security_protocol": "SSL"}), topic, timeout_s=10)
