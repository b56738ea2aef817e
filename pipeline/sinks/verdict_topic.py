"""Verdicts topic sink: one misuse-verdict/v1 JSON per record, keyed by request id."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

from pipeline.producer import TrackedProducer
from pipeline.sinks.base import ScoredRecord, Sink

if TYPE_CHECKING:
    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import Settings


class VerdictTopicSink(Sink):
    name = "verdict_topic"

    def __init__(self, producer: TrackedProducer, topic: str, flush_timeout_s: float = 30.0) -> None:
        self._producer = producer
        self._topic = topic
        self._timeout = flush_timeout_s

    @classmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        return cls(TrackedProducer(settings.kafka), settings.kafka.verdict_topic)

    def write(self, records: Sequence[ScoredRecord]) -> None:
        for rec in records:
            key = rec.verdict.request_id.encode("utf-8")
            self._producer.send(self._topic, rec.verdict.to_json().encode("utf-8"), key=key)

    def flush(self) -> None:
        # Raises DeliveryError (after the producer's own retries): the batch is not committed.
        self._producer.flush(self._timeout)

    def close(self) -> None:
        self._producer.close()
