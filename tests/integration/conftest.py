"""Fixtures for integration tests against real local services (never mocks).

Kafka: one real KRaft broker per test session, started with the same code as ``make kafka-up``
(:func:`pipeline.localinfra.kafka.start_broker`). Set ``MM_TEST_KAFKA_BOOTSTRAP=host:port`` to
run against an already running broker instead (e.g. the one from ``make kafka-up``).
Tests that use these fixtures are marked ``kafka`` automatically.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping

import pytest

from pipeline.localinfra.kafka import create_topic, delete_topics, start_broker

KafkaTopicFactory = Callable[..., str]
_KAFKA_FIXTURES = {"kafka_bootstrap", "kafka_topic_factory"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs the broker, so ``-m 'not kafka'`` deselects it."""
    for item in items:
        if _KAFKA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.kafka)


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address ``127.0.0.1:PORT`` of a real broker that lives for the whole session."""
    external = os.environ.get("MM_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = start_broker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_topic_factory(kafka_bootstrap: str, request: pytest.FixtureRequest) -> Iterator[KafkaTopicFactory]:
    """Create uniquely named topics for one test; they are deleted when the test ends.

    Usage: ``topic = kafka_topic_factory(partitions=3, config={"retention.ms": "60000"})``.
    Names derive from the test name so broker logs stay readable.
    """
    created: list[str] = []
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name)[:120]

    def make(partitions: int = 3, config: Mapping[str, str] | None = None, *, prefix: str = "") -> str:
        name = f"{prefix or 'test'}-{stem}-{uuid.uuid4().hex[:8]}"
        create_topic(kafka_bootstrap, name, partitions, config)
        created.append(name)
        return name

    yield make
    if created:
        delete_topics(kafka_bootstrap, created)
