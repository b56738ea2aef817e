"""Dead-letter routing: the original bytes, the reason in headers, nothing dropped.

In: a raw record and why it cannot be judged or stored (a decode error, a detector that failed on
it, a sink that cannot store it). Out: the same bytes and key on the dead-letter topic.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING

from pipeline.metrics import PipelineMetrics
from pipeline.producer import DeliveryError, TrackedProducer, record_level
from pipeline.source import RawRecord

if TYPE_CHECKING:
    from pipeline.producer import _Pending

# Header names are part of the documented contract of the dead-letter topic.
H_REASON = "mm.error.reason"
H_DETAIL = "mm.error.detail"
H_TOPIC = "mm.source.topic"
H_PARTITION = "mm.source.partition"
H_OFFSET = "mm.source.offset"
H_TIME = "mm.error.timestamp_ms"
# Set on a dead letter the broker refused as too large, sent again cut down: the original
# value's size in bytes and its SHA-256, so it can be matched with the source record.
H_TRUNCATED = "mm.error.truncated_from"
H_SHA256 = "mm.error.value_sha256"
# The same for a key over KEPT_KEY_BYTES (cut to them at the first cut, dropped at the second).
H_KEY_TRUNCATED = "mm.error.key_truncated_from"
H_KEY_SHA256 = "mm.error.key_sha256"
KEPT_KEY_BYTES = 1024
_OUR_HEADERS = frozenset({H_REASON, H_DETAIL, H_TOPIC, H_PARTITION, H_OFFSET, H_TIME, H_TRUNCATED, H_SHA256,
                          H_KEY_TRUNCATED, H_KEY_SHA256})
# A refused dead letter keeps this much of its value; if even that is refused (the source
# record's own headers were near the limit), it is sent with no value and only our headers.
TRUNCATED_VALUE_BYTES = 64 * 1024


class DeadLetters:
    def __init__(self, producer: TrackedProducer, topic: str, metrics: PipelineMetrics) -> None:
        self._producer = producer
        self._topic = topic
        self._metrics = metrics

    def send(self, raw: RawRecord, reason: str, detail: str) -> None:
        """Queue one dead letter; ``reason`` is a bounded label, ``detail`` names the field."""
        headers = {
            # The source record's own headers travel along. A null header value (Java clients
            # may send one) travels as empty: the producer refuses None, and that TypeError
            # ended the sink stage on every restart (a hostile review, 2026-12-07). Headers
            # named as ours (mm.error.*) are ours alone: a planted "mm.error.truncated_from"
            # made the first cut below skip to the second.
            **{k: v if isinstance(v, bytes) else b"" for k, v in raw.headers if not k.startswith("mm.error.")},
            H_REASON: reason.encode(),
            H_DETAIL: detail.encode("utf-8", "replace")[:1000].decode("utf-8", "ignore").encode(),  # whole characters
            H_TOPIC: raw.position.topic.encode(),
            H_PARTITION: str(raw.position.partition).encode(),
            H_OFFSET: str(raw.position.offset).encode(),
            H_TIME: str(int(time.time() * 1000)).encode(),
        }
        label = f"{raw.position.topic}-{raw.position.partition}@{raw.position.offset}"
        self._producer.send(self._topic, raw.value or b"", key=raw.key, headers=headers, label=label)
        self._metrics.dead_letters.labels(reason).inc()

    def waiting(self) -> bool:
        """Did a send since the last flush wait in vain for the topic's metadata (TrackedProducer.waiting)?"""
        return self._producer.waiting()

    def flush(self, timeout_s: float = 60.0) -> None:
        """Deliver every queued dead letter or raise; a retry re-sends the ones that failed.

        A dead letter is the record's value plus ~200 bytes of headers, so a record just under
        the topic's size limit made one the broker refused: the stream took that for an outage
        and stopped the partition at its deadline, on every restart (a hostile review,
        2026-12-06). Such a dead letter is sent again at once, cut down (:meth:`_cut_down`);
        only failures of the broker itself are raised for the caller to wait out.
        """
        self._producer.resend_failed(self._cut_down)
        for cuts_left in (2, 1, 0):  # the value cut to 64 KiB, then dropped (see _cut_down)
            try:
                self._producer.flush(timeout_s)
                return
            except DeliveryError as exc:
                if not cuts_left or not any(record_level(err) for _, err in exc.failures):
                    raise
                self._producer.resend_failed(self._cut_down)

    def _cut_down(self, item: _Pending) -> None:
        """A dead letter the broker refused as too large: its value cut to the first
        TRUNCATED_VALUE_BYTES and its key to the first KEPT_KEY_BYTES, their original sizes and
        SHA-256 in headers; refused again, no value, no key and only our own headers. The key was
        never cut: a bad record with a key of 1 MB made a dead letter over the limit at every cut,
        and the partition stopped at the outage deadline on every restart (a hostile review,
        2026-12-07)."""
        if item.error is None or not record_level(item.error):
            return
        headers = dict(item.headers)
        if H_TRUNCATED not in headers:
            headers[H_TRUNCATED] = str(len(item.value)).encode()
            headers[H_SHA256] = hashlib.sha256(item.value).hexdigest().encode()
            item.value = item.value[:TRUNCATED_VALUE_BYTES]
            item.key = self._cut_key(item.key, headers, KEPT_KEY_BYTES)
            self._metrics.dead_letters_truncated.inc()
        else:
            # Only ours: a source header may be named mm.* too (one of 1 MB survived this cut).
            headers = {k: v for k, v in headers.items() if k in _OUR_HEADERS}
            item.value = b""
            item.key = self._cut_key(item.key, headers, 0)
        item.headers = list(headers.items())

    @staticmethod
    def _cut_key(key: bytes | None, headers: dict[str, bytes], keep: int) -> bytes | None:
        """``key`` cut to ``keep`` bytes (None for 0), noted in ``headers`` the first time."""
        if key is None or len(key) <= keep:
            return key
        if H_KEY_TRUNCATED not in headers:
            headers[H_KEY_TRUNCATED] = str(len(key)).encode()
            headers[H_KEY_SHA256] = hashlib.sha256(key).hexdigest().encode()
        return key[:keep] or None

    def close(self) -> None:
        self._producer.close()
