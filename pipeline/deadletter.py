"""Dead-letter routing: the original bytes, the reason in headers, nothing dropped.

In: a raw record and why it cannot be judged or stored (a decode error, a detector that failed on
it, a sink that cannot store it). Out: the same bytes and key on the dead-letter topic.
"""

from __future__ import annotations

import time

from pipeline.metrics import PipelineMetrics
from pipeline.producer import TrackedProducer
from pipeline.source import RawRecord

# Header names are part of the documented contract of the dead-letter topic.
H_REASON = "mm.error.reason"
H_DETAIL = "mm.error.detail"
H_TOPIC = "mm.source.topic"
H_PARTITION = "mm.source.partition"
H_OFFSET = "mm.source.offset"
H_TIME = "mm.error.timestamp_ms"


class DeadLetters:
    def __init__(self, producer: TrackedProducer, topic: str, metrics: PipelineMetrics) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics

    def send(self, raw: RawRecord, reason: str, detail: str) -> None:
        """Queue one dead letter; ``reason`` is a bounded label, ``detail`` names the field."""
        headers = {
            **{k: v for k, v in raw.headers},  # the gateway's own headers travel along
            H_REASON: reason.encode(),
            H_DETAIL: detail.encode("utf-8", "replace")[:1000],
            H_TOPIC: raw.position.topic.encode(),
            H_PARTITION: str(raw.position.partition).encode(),
            H_OFFSET: str(raw.position.offset).encode(),
            H_TIME: str(int(time.time() * 1000)).encode(),
        }
        label = f"{raw.position.topic}-{raw.position.partition}@{raw.position.offset}"
        self._producer.send(self._topic, raw.value or b"", key=raw.key, headers=headers, label=label)
        self._metrics.dead_letters.labels(reason).inc()

    def flush(self, timeout_s: float = 60.0) -> None:
        """Deliver every queued dead letter or raise; a retry re-sends the ones that failed."""
        self._producer.resend_failed()
        self._producer.flush(timeout_s)

    def close(self) -> None:
        self._producer.close()
