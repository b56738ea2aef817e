"""Kafka producing with delivery errors surfaced, for gateways and for our own sinks.

kafka-python batches sends in the background (``linger_ms``/``batch_size``) and reports
failures only through futures. :class:`TrackedProducer` keeps the futures of unflushed
sends and :meth:`TrackedProducer.flush` raises :class:`DeliveryError` naming every
record that did not reach the broker, so callers never mistake a send for a delivery.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kafka import KafkaProducer
from kafka.errors import KafkaError, KafkaTimeoutError

from pipeline.schemas import InferenceLog
from pipeline.settings import KafkaSettings


# Delivery errors that belong to one record: retrying or waiting for the broker cannot help.
RECORD_ERRORS = frozenset({"MessageSizeTooLargeError", "RecordTooLargeError", "InvalidRecordError", "CorruptRecordError"})


def record_level(exc: BaseException) -> bool:
    """Is this delivery error the record's own (too large, invalid), not the broker's state?"""
    return type(exc).__name__ in RECORD_ERRORS


class DeliveryError(RuntimeError):
    def __init__(self, failures: list[tuple[str, BaseException]]) -> None:
        shown = "; ".join(f"{key}: {exc!r}" for key, exc in failures[:5])
        super().__init__(f"{len(failures)} record(s) not delivered: {shown}")
        self.failures = failures


@dataclass
class _Pending:
    label: str
    future: Any
    # What was sent, so a failed record can be sent again (resend_failed).
    topic: str
    value: bytes
    key: bytes | None
    headers: list[tuple[str, bytes]]
    error: BaseException | None = None  # why the last flush() reported it failed


class TrackedProducer:
    """A KafkaProducer whose flush() raises on any failed delivery since the last flush."""

    def __init__(self, kafka: KafkaSettings, *, linger_ms: int = 20, acks: str | int = "all", **overrides: Any) -> None:
        options: dict[str, Any] = {
            "acks": acks,
            "linger_ms": linger_ms,
            "max_request_size": kafka.max_request_size,
            "retries": 5,
            # Idempotence keeps broker-side retries from duplicating records.
            "enable_idempotence": True,
            **kafka.client_options(),
        }
        options.update(overrides)
        self._options = options
        self._producer = KafkaProducer(**options)
        self._pending: list[_Pending] = []
        self._failed: list[_Pending] = []
        # Topics for which a send waited max_block_ms in vain (no metadata: the topic is missing
        # and not created, or no broker answers) since the last flush: their next sends fail at
        # once, so a batch waits that long once, not once per record.
        self._blocked: dict[str, KafkaTimeoutError] = {}

    def send(
        self,
        topic: str,
        value: bytes,
        *,
        key: bytes | None = None,
        headers: Mapping[str, bytes] | None = None,
        label: str | None = None,
    ) -> None:
        """Queue one record; ``label`` names it in DeliveryError (defaults to the key)."""
        name = label or (key.decode("utf-8", "replace") if key else f"{topic}#{len(self._pending)}")
        header_list = list((headers or {}).items())
        self._pending.append(_Pending(name, self._send(topic, value, key, header_list), topic, value, key, header_list))

    def waiting(self) -> bool:
        """Did a send since the last flush wait ``max_block_ms`` in vain for a topic's metadata?"""
        return bool(self._blocked)

    def _send(self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        if topic in self._blocked:
            return _Failed(self._blocked[topic])
        try:
            return self._producer.send(topic, value=value, key=key, headers=headers)
        except KafkaTimeoutError as exc:  # no metadata within max_block_ms
            self._blocked[topic] = exc
            return _Failed(exc)
        except KafkaError as exc:  # e.g. MessageSizeTooLargeError
            return _Failed(exc)

    def resend_failed(self, rewrite: Callable[[_Pending], None] | None = None) -> int:
        """Queue again every record the last flush() reported failed; returns how many.

        Sinks call this before retrying a flush, so an outage delays records but loses none.
        ``rewrite`` may change a failed record's value and headers first (its ``error`` says
        why it failed), e.g. to cut down a record the broker refused as too large.
        """
        failed, self._failed = self._failed, []
        self._blocked.clear()  # each retry waits for a missing topic's metadata once again
        for item in failed:
            if rewrite is not None:
                rewrite(item)
            item.future = self._send(item.topic, item.value, item.key, item.headers)
            self._pending.append(item)
        return len(failed)

    def forget_failed(self) -> None:
        """Drop the records the last flush reported failed, instead of resending them."""
        self._failed = []

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every queued record; returns how many were delivered."""
        self._blocked.clear()
        self._producer.flush(timeout=timeout_s)
        pending, self._pending = self._pending, []
        failures: list[tuple[str, BaseException]] = []
        for item in pending:
            try:
                item.future.get(timeout=timeout_s)
            except Exception as exc:  # noqa: BLE001 - every failure kind is reported, none hidden
                failures.append((item.label, exc))
                item.error = exc
                self._failed.append(item)
        if failures:
            self._renew_if_broken()
            raise DeliveryError(failures)
        return len(pending)

    def _renew_if_broken(self) -> None:
        """Replace the KafkaProducer once its idempotence state has a fatal error.

        kafka-python 3.0.12 classes every non-retriable batch error of a non-transactional
        idempotent producer as fatal, one record the broker refuses as too large included; every
        later send of that producer then fails with the same error. One oversized dead letter
        made the stream's dead-letter producer refuse everything after it (a hostile review,
        2026-12-06). Its futures are all settled here (flush waited), so nothing is abandoned.
        """
        manager = getattr(self._producer, "_transaction_manager", None)  # noqa: SLF001 - no public state
        if manager is None or not manager.has_fatal_error():
            return
        try:
            self._producer.close(timeout=1)
        except KafkaError:  # it is being replaced; what it says on the way out does not matter
            pass
        self._producer = KafkaProducer(**self._options)

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued within ``timeout_s``, then close; what is still queued then
        (the broker hangs or is gone) is abandoned, not delivered.

        kafka-python 3.0.12's close() flushes first and raises when that times out, before it
        stops its sender thread: the producer stayed open, and its ``__del__`` at exit printed a
        KafkaTimeoutError traceback after the command's one-line error (hostile check,
        2026-12-04: ``produce`` with the broker stopped mid-run)."""
        try:
            self._producer.close(timeout=timeout_s)
        except KafkaTimeoutError:
            sender = self._producer._sender  # noqa: SLF001 - no public way to abandon the queue
            if sender is not None and sender.is_alive():
                sender.force_close()
            self._producer._closed = True  # noqa: SLF001 - so __del__ does not try again


class _Failed:
    def __init__(self, exc: BaseException) -> None:
        self._exc = exc

    def get(self, timeout: float | None = None) -> Any:
        raise self._exc


def record_key(tenant_id: str | None, user_id: str | None, request_id: str = "") -> bytes | None:
    """The Kafka key of an inference log: one (tenant, user) always maps to one partition.

    The stream's stateful alert rules (rates, repeat offenders, model hopping) keep their state
    per input partition, so all of a user's traffic must land on one partition, hence on one
    stream replica. The key is a hash of tenant and user, not the user id itself: keys show up in
    broker tools, logs and metrics where a raw user id has no business being. Logs without a user
    fall back to the request id (spread over partitions, a retried request next to the first).
    """
    if user_id:
        digest = hashlib.blake2b(f"{tenant_id or ''}\x00{user_id}".encode(), digest_size=16).hexdigest()
        return f"tu:{digest}".encode()
    return request_id.encode("utf-8") or None


class GatewayProducer:
    """What a serving gateway embeds: send inference logs, learn about failures on flush.

    Records are keyed by :func:`record_key` (tenant and pseudonymous user), so one user's traffic
    stays on one partition and the stateful alert rules scale out with the stream's replicas.
    """

    def __init__(self, kafka: KafkaSettings, topic: str | None = None, **overrides: Any) -> None:
        self.topic = topic or kafka.input_topic
        self._producer = TrackedProducer(kafka, **overrides)

    def send(self, log: InferenceLog | Mapping[str, Any]) -> None:
        if isinstance(log, InferenceLog):
            body = log.model_dump_json(by_alias=True, exclude_none=True).encode("utf-8")
            request_id, tenant, user = log.request_id, log.tenant_id, log.user_id
        else:
            body = json.dumps(log, separators=(",", ":")).encode("utf-8")
            request_id = str(log.get("request_id", ""))
            tenant, user = log.get("tenant_id"), log.get("user_id")
        key = record_key(tenant and str(tenant), user and str(user), request_id)
        self._producer.send(self.topic, body, key=key, label=request_id or None)

    def send_raw(self, value: bytes, key: bytes | None = None, label: str | None = None) -> None:
        self._producer.send(self.topic, value, key=key, label=label)

    def forget_failed(self) -> None:
        """Drop the records the last flush reported failed (the caller reported them itself)."""
        self._producer.forget_failed()

    def flush(self, timeout_s: float = 30.0) -> int:
        return self._producer.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout_s)

    def __enter__(self) -> GatewayProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                self.flush()
        finally:
            self.close()
