"""The gateway's logging path: finished exchanges -> inference-log/v1 -> Kafka, off the request path.

In: :class:`Exchange` objects handed over by the proxy with :meth:`LogTee.submit`, which never
blocks and never raises. Out: records produced through :class:`GatewayProducer`.

Guarantee: a user request never waits for Kafka. The proxy puts the raw exchange in an in-memory
queue bounded in exchanges and in bytes (``queue_max``, ``queue_max_bytes``); one worker thread
parses it (SSE included), adapts it and produces it. When the queue is full, or a delivery fails
(broker down), the ``overflow`` policy decides:

- ``drop``: the exchange is counted (``mm_gateway_logs_dropped_total{reason}``) and forgotten;
- ``spill``: its records are appended, as inference-log/v1 JSON lines, to ``spill_path``; the
  worker replays that file once the broker takes records again, and deletes it only after every
  line was delivered. An exchange that finds the queue full goes to a second bounded queue, whose
  own thread adapts and spills it: the request path never parses a body or writes the file (it
  did, and a burst held the event loop for 1.7 s, a hostile check of 2026-12-02). Only when that
  queue is full too is the exchange spilled on the caller's thread
  (``mm_gateway_logs_spilled_inline_total``): slower requests, but nothing lost. A broker
  outage therefore loses nothing (records may arrive twice, which ``request_id`` as
  idempotency key absorbs). The file is also valid input for ``misuse-monitor produce``. A
  spill file is one process's (:meth:`LogTee.claim`): a second gateway on it is refused, and
  the LiteLLM callback's workers each take one of their own and replay those of workers gone.

An exchange that cannot become an inference log (a body that does not parse, a shape the
adapters refuse, any error while adapting it) is kept as it arrived in ``rejected_path`` with its
reason (``mm_gateway_logs_rejected_total{reason}``), and the worker goes on: one bad exchange
never stops the logging of the others. ``/healthz`` answers 503 if the worker thread is gone.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import re
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.adapters import AdapterError, from_openai_all
from pipeline.decode import DecodeError, DecodeReason
from pipeline.fslock import LockTimeout, exclusive_lock
from pipeline.gateway.settings import GatewaySettings
from pipeline.exits import first_line
from pipeline.logs import OncePer
from pipeline.producer import DeliveryError, GatewayProducer, record_level
from pipeline.schemas import InferenceLog
from pipeline.settings import KafkaSettings
from pipeline.stdio import open_private

log = logging.getLogger(__name__)

# The gateway must learn quickly that the broker is gone (the queue is filling meanwhile):
# seconds, not kafka-python's minute-long defaults (reconnects: kafka.reconnect_backoff_max_ms).
GATEWAY_PRODUCER_OVERRIDES: dict[str, Any] = {
    "bootstrap_timeout_ms": 3_000,
    "max_block_ms": 3_000,
    "request_timeout_ms": 5_000,
    "delivery_timeout_ms": 10_000,
}
FLUSH_TIMEOUT_S = 15.0  # above delivery_timeout_ms: failures come back as failed futures, not a timeout


@dataclass(slots=True)
class Exchange:
    """One proxied request and what the upstream answered, as raw bytes (parsed off the request path)."""

    route: str  # "chat.completions" | "completions" | "responses"
    request_body: bytes
    response_body: list[bytes]
    status: int
    streamed: bool
    started_at: datetime
    latency_ms: float
    gateway_id: str
    content_encoding: str | None = None
    ttft_ms: float | None = None
    tenant_id: str | None = None
    user_id: str | None = None
    complete: bool = True  # False: the stream did not end (the client went away, or upstream_cut)
    upstream_cut: str | None = None  # the error type that ended the upstream's body early
    extra_metadata: dict[str, Any] = field(default_factory=dict)


# A JSON string, unrolled (linear, no backtracking): what cheap_to_parse takes out before it counts.
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"')


def cheap_to_parse(body: bytes, limit: int) -> bool:
    """Whether a request body over ``max_tee_bytes`` (``limit``) is parsed for the log: at most
    ``limit // 16`` JSON tokens (strings, and the separators ``{ [ , :`` outside them). The
    parser's time goes to its tokens and it holds the interpreter lock while it runs, so a body of
    8 MiB of empty arrays stalled the proxy for 1.1 s (a review, 2026-12-07); whitespace and long
    strings are cheap, so padding a request with them does not keep it out of the log. Separators
    inside strings are not counted: a field of 8 MiB of commas did (the review of this check)."""
    budget = limit // 16

    def separators(text: bytes) -> int:
        return sum(text.count(separator) for separator in (b",", b":", b"[", b"{"))

    if separators(body) <= budget:
        return True
    if (body.count(b'"') - body.count(b'\\"')) // 2 > budget:  # as many strings (quotes not escaped): dense
        return False
    return separators(_JSON_STRING.sub(b'""', body)) <= budget


def rejected_later(reason: DecodeReason, detail: str) -> Callable[[], list[InferenceLog]]:
    """A deferred build that ends in the rejected file with ``reason`` and ``detail``."""

    def build() -> list[InferenceLog]:
        raise DecodeError(reason, detail)

    return build


def _size(exchange: Exchange | Callable[[], list[InferenceLog]]) -> int:
    """Bytes an exchange holds in a queue; a deferred build, what its ``size`` says (the LiteLLM
    callback's: the JSON of its call), else 0."""
    if isinstance(exchange, Exchange):
        return len(exchange.request_body) + sum(len(chunk) for chunk in exchange.response_body)
    return getattr(exchange, "size", 0)


# With `overflow: drop`, how long after a dropped log /healthz says logs_lost (in an outage).
DROP_HEALTH_S = 60.0

# Every reason an exchange or log is dropped for (mm_gateway_logs_dropped_total{reason}).
DROP_REASONS = ("too_large", "queue_full", "spill_full", "spill_failed", "spill_corrupt", "rejected_full",
                "rejected_failed", "internal_error", "delivery_failed", "shutdown", "closed")


class GatewayMetrics:
    """Prometheus metrics of the proxy and its logging path (own registry; labels are bounded)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry or CollectorRegistry()
        self.requests = Counter(
            "mm_gateway_requests_total", "Proxied requests by route and status class", ["route", "status"], registry=r
        )
        self.upstream_seconds = Histogram(
            "mm_gateway_upstream_seconds",
            "Upstream time per request (to the last byte), by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.enqueued = Counter("mm_gateway_logs_enqueued_total", "Exchanges queued for logging", registry=r)
        self.delivered = Counter("mm_gateway_logs_delivered_total", "Inference logs delivered to Kafka", registry=r)
        self.dropped = Counter(
            "mm_gateway_logs_dropped_total", "Exchanges or logs not delivered and not spilled", ["reason"], registry=r
        )
        for reason in DROP_REASONS:  # at 0 from the start: increase() misses a series born at 1
            self.dropped.labels(reason)
        self.spilled = Counter("mm_gateway_logs_spilled_total", "Inference logs written to the spill file", registry=r)
        self.replayed = Counter(
            "mm_gateway_logs_replayed_total", "Spilled inference logs delivered on replay", registry=r
        )
        self.queue_depth = Gauge("mm_gateway_queue_depth", "Exchanges waiting in the logging queue", registry=r)
        self.inflight_request_bytes = Gauge(
            "mm_gateway_inflight_request_bytes", "Request bodies held by requests in flight, in bytes", registry=r
        )
        self.spill_bytes = Gauge("mm_gateway_spill_bytes", "Size of the spill file(s) awaiting replay", registry=r)
        self.kafka_up = Gauge("mm_gateway_kafka_up", "1 when the last delivery attempt succeeded", registry=r)
        self.rejected = Counter(
            "mm_gateway_logs_rejected_total",
            "Exchanges that could not become inference logs, kept in the rejected file, by reason",
            ["reason"],
            registry=r,
        )
        self.worker_up = Gauge("mm_gateway_worker_up", "1 while the logging worker thread runs", registry=r)
        self.spilled_inline = Counter(
            "mm_gateway_logs_spilled_inline_total",
            "Exchanges spilled on the request path because both logging queues were full",
            registry=r,
        )
        self.blocked = Counter(
            "mm_gateway_blocked_total", "Requests blocked by pre-screening, by severity", ["severity"], registry=r
        )
        self.prescreen_seconds = Histogram(
            "mm_gateway_prescreen_seconds",
            "Pre-screening time per request",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=r,
        )
        self.prescreen_fallbacks = Counter(
            "mm_gateway_prescreen_fallback_total",
            "Requests the adapter refused, pre-screened on every string value of their body, by reason",
            ["reason"],
            registry=r,
        )


ProducerFactory = Callable[[], GatewayProducer]


@dataclass(slots=True)
class _SpillSlot:
    """A spill file and its replay file, with the lock that makes them one process's, and how far
    the replay file was delivered."""

    path: Path
    lock: contextlib.ExitStack | None = None  # holds the flock on lock_path(path); None: not claimed
    offset: int = 0  # bytes of the replay file already delivered
    file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the replay file ``offset`` belongs to

    @property
    def replaying(self) -> Path:
        return replay_path(self.path)

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None


class LogTee:
    """Bounded queue + one worker thread that turns exchanges into Kafka records (see module doc)."""

    def __init__(
        self,
        settings: GatewaySettings,
        kafka: KafkaSettings,
        metrics: GatewayMetrics,
        producer_factory: ProducerFactory | None = None,
        *,
        per_process_spill: bool = False,
    ) -> None:
        """``per_process_spill``: take the first free one of ``spill_path``, ``<stem>.1<suffix>``,
        ... and replay those left by processes that are gone (:meth:`claim`); else a spill path
        another process holds is a ConfigError."""
        self.settings = settings
        self.metrics = metrics
        self._queue: queue.Queue[Exchange | Callable[[], list[InferenceLog]]] = queue.Queue(maxsize=settings.queue_max)
        # Bytes held by each queue (queue_max_bytes bounds both), keyed by the queue's id.
        self._held = {id(self._queue): 0}
        self._held_lock = threading.Lock()
        self._factory = producer_factory or (
            lambda: GatewayProducer(kafka, settings.topic, **GATEWAY_PRODUCER_OVERRIDES)
        )
        self._producer: GatewayProducer | None = None
        self._next_connect = 0.0
        self._kafka_up = False
        self._spill_failing = False  # the last spill write failed: logs are lost while Kafka is down
        self._last_dropped = -DROP_HEALTH_S  # monotonic time of the last log dropped (overflow: drop)
        # A send failed for the broker's sake and none has succeeded since: with `spill`, logs go
        # straight to the spill file, not into a producer that holds them for its delivery timeout.
        self._outage = False
        self._next_probe = 0.0  # during an outage, when a batch may try the broker again
        self._next_replay = 0.0
        self._spill_lock = threading.Lock()
        self._spill_full_warning = OncePer(60.0)
        self._rejected_full_warning = OncePer(60.0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Overflow hand-off: adapting and writing the spill file happen on their own thread.
        self._overflow: queue.Queue[Exchange | Callable[[], list[InferenceLog]]] = queue.Queue(
            maxsize=settings.queue_max
        )
        self._held[id(self._overflow)] = 0
        self._spiller: threading.Thread | None = None
        self._per_process = per_process_spill
        self._own = _SpillSlot(settings.spill_path)  # where this tee spills; locked by claim()
        self._adopted: list[_SpillSlot] = []  # other slots' files this tee replays (per_process_spill)
        self._replays = True  # False: another process holds the spill file (overflow: drop; claim)

    @property
    def spill_path(self) -> Path:
        return self._own.path

    @property
    def _replay_offset(self) -> int:
        return self._own.offset

    # ------------------------------------------------------------------ request side

    def _put(self, target: queue.Queue, exchange: Exchange | Callable[[], list[InferenceLog]]) -> None:
        """put_nowait within ``queue_max_bytes`` too: queue.Full when either bound is reached."""
        size = _size(exchange)
        with self._held_lock:
            if self._held[id(target)] + size > self.settings.queue_max_bytes and not target.empty():
                raise queue.Full  # an exchange alone over the bound still goes through an empty queue
            target.put_nowait(exchange)
            self._held[id(target)] += size

    def submit(self, exchange: Exchange) -> None:
        """Hand an exchange to the logging path. Never blocks, never raises."""
        try:
            self._put(self._queue, exchange)
            self.metrics.enqueued.inc()
        except queue.Full:
            if self.settings.overflow == "spill":
                self._hand_to_spill(exchange)
            else:
                self.metrics.dropped.labels("queue_full").inc()
        except Exception:  # noqa: BLE001 - the request must survive any logging bug
            log.exception("gateway: could not queue an exchange")
            self.metrics.dropped.labels("internal_error").inc()

    def _hand_to_spill(self, exchange: Exchange | Callable[[], list[InferenceLog]]) -> None:
        try:
            self._put(self._overflow, exchange)
        except queue.Full:  # the spill thread cannot keep up either: slower, but nothing is lost
            if isinstance(exchange, Exchange) and len(exchange.request_body) > self.settings.max_tee_bytes:
                # Parsed here, it would hold the request path for up to seconds (max_request_bytes):
                # counted and kept in the rejected file by its size and id, never its text.
                detail = self._dropped_over_cap(exchange, "and both logging queues are full")
                self._adapt(rejected_later(DecodeReason.TOO_LARGE, detail))
                return
            self.metrics.spilled_inline.inc()
            self._spill(self._adapt(exchange))

    def submit_deferred(self, build: Callable[[], list[InferenceLog]]) -> None:
        """Queue logs built later, on the worker (for callers that hold objects, not bytes:
        the LiteLLM callback). Never blocks, never raises; the same overflow policy applies."""
        self.submit(build)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ lifecycle

    def claim(self) -> None:
        """Make the spill file this process's, until :meth:`stop` (an exclusive ``flock`` on
        ``<spill_path>.lock``). Two processes on one spill file (gateway replicas with the default
        relative path, or the LiteLLM proxy's workers) replayed each other's files: one's byte
        offset was applied to the other's file and logs were lost, others sent twice (a hostile
        review). With ``per_process_spill`` the first free slot is taken instead (the LiteLLM
        callback: one tee per worker); else ConfigError, naming the setting to change."""
        from pipeline.exits import ConfigError

        if self._own.lock is not None:
            return
        base = self.settings.spill_path
        for k in range(MAX_SPILL_SLOTS if self._per_process else 1):
            path = spill_slot(base, k)
            lock = _try_lock(path)
            if lock is not None:
                self._own = _SpillSlot(path, lock)
                if k:
                    log.info("gateway: %s is another process's; this one spills to %s", base, path)
                return
        if self._per_process:
            raise ConfigError(f"gateway.spill_path: {MAX_SPILL_SLOTS} processes already spill beside {base.absolute()}")
        if self.settings.overflow == "drop":
            # It never spills, and only replays what an earlier run left: that is the holder's to
            # replay. Refusing it broke replicas of `overflow: drop` started in one folder (the
            # default path is relative; a review, 2026-12-07).
            log.info("gateway: %s is another process's; this one (overflow: drop) leaves its replay to it", base)
            self._replays = False
            return
        raise ConfigError(
            f"gateway.spill_path {base.absolute()} is in use by another process (it holds {lock_path(base)}): a spill "
            "file belongs to one process. Give each gateway its own with --spill-path, MM_GATEWAY__SPILL_PATH or "
            "gateway.spill_path in its config file"
        )

    def start(self) -> None:
        self.claim()
        self._thread = threading.Thread(target=self._run, name="gateway-log-tee", daemon=True)
        self._thread.start()
        if self.settings.overflow == "spill":
            self._spiller = threading.Thread(target=self._run_spill, name="gateway-log-spill", daemon=True)
            self._spiller.start()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Deliver (or spill) what is queued, then stop the worker and close the producer."""
        self._stop.set()
        deadline = time.monotonic() + timeout_s
        for thread in (self._thread, self._spiller):
            if thread is not None:
                thread.join(max(deadline - time.monotonic(), 0.0))
        for pending in (self._queue, self._overflow):  # a thread did not finish in time: keep the rest
            leftover = []
            while True:
                try:
                    leftover.append(pending.get_nowait())
                except queue.Empty:
                    break
            if leftover:
                self._undelivered([rec for ex in leftover for rec in self._adapt(ex)], "shutdown")
        if self._producer is not None:
            with contextlib.suppress(Exception):
                self._producer.close()
        for slot in (self._own, *self._adopted):
            slot.release()
        self._adopted = []

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def worker_alive(self) -> bool:
        """The logging worker, and the spill thread where the policy has one, are running."""
        spiller_ok = self._spiller is None or self._spiller.is_alive()
        return self._thread is not None and self._thread.is_alive() and spiller_ok

    def status(self) -> dict[str, Any]:
        return {
            "worker_alive": self.worker_alive,
            "queue_depth": self._queue.qsize(),
            "queue_max": self.settings.queue_max,
            "queue_bytes": self._held[id(self._queue)],
            "spill_queue_depth": self._overflow.qsize(),
            "overflow": self.settings.overflow,
            "kafka_up": self._kafka_up,
            "spill_bytes": self._spill_size(),
            "spill_failing": self._spill_failing,
            # `overflow: drop` in a Kafka outage, with a log dropped in the last DROP_HEALTH_S: a
            # gateway without traffic stays "ok" (it lost nothing), and one whose /healthz took it
            # out of rotation is not held there after Kafka came back (a review, 2026-12-07).
            "dropping": self.settings.overflow == "drop" and self._outage
            and time.monotonic() - self._last_dropped < DROP_HEALTH_S,
        }

    # ------------------------------------------------------------------ worker

    def _run(self) -> None:
        self.metrics.worker_up.set(1)
        try:
            while not (self._stop.is_set() and self._queue.empty()):
                batch = self._take_batch()
                self.metrics.queue_depth.set(self._queue.qsize())
                records = [rec for ex in batch for rec in self._adapt(ex)]
                if records:
                    try:
                        self._deliver(records)
                    except Exception as exc:  # noqa: BLE001 - a bug here must not stop the logging
                        log.error("gateway: delivering %d logs failed (%s); they follow the %r policy",
                                  len(records), type(exc).__name__, self.settings.overflow)
                        self._undelivered(records, "internal_error")
                if time.monotonic() >= self._next_replay and not self._stop.is_set():
                    self._next_replay = time.monotonic() + self.settings.replay_interval_s
                    try:
                        self._replay()
                    except Exception as exc:  # noqa: BLE001 - the spill file stays for the next try
                        log.error("gateway: replaying the spill file failed (%s)", type(exc).__name__)
        finally:
            self.metrics.worker_up.set(0)

    def _run_spill(self) -> None:
        """Adapt and spill what overflowed the queue, off the request path (batched writes)."""
        while not (self._stop.is_set() and self._overflow.empty()):
            batch = self._take_batch(self._overflow)
            if not batch:
                continue
            try:
                self._spill([rec for ex in batch for rec in self._adapt(ex)])
            except Exception as exc:  # noqa: BLE001 - _adapt and _spill keep what they can; never die
                log.error("gateway: spilling %d exchanges failed (%s)", len(batch), type(exc).__name__)
                self.metrics.dropped.labels("internal_error").inc(len(batch))

    def _set_kafka_up(self, up: bool, why: BaseException | None = None) -> None:
        """Record the broker's state; an outage is logged once when it starts and once when it
        ends (before, only a failed first connect was: a later outage wrote no line at all)."""
        if not up and not self._outage:
            log.warning("gateway: Kafka unavailable (%s); logs follow the %r policy until it is back",
                        type(why).__name__ if why is not None else "delivery failed", self.settings.overflow)
        elif up and self._outage:
            log.info("gateway: Kafka is back; logs are delivered again")
        self._outage = not up
        self._kafka_up = up
        self.metrics.kafka_up.set(int(up))

    def _take_batch(self, source: queue.Queue | None = None) -> list[Exchange]:
        source = self._queue if source is None else source
        try:
            batch = [source.get(timeout=0.1)]
        except queue.Empty:
            return []
        while len(batch) < self.settings.batch_max:
            try:
                batch.append(source.get_nowait())
            except queue.Empty:
                break
        with self._held_lock:
            self._held[id(source)] -= sum(_size(ex) for ex in batch)
        return batch

    def adapt(self, exchange: Exchange | Callable[[], list[InferenceLog]]) -> list[InferenceLog]:
        """The exchange's logs now, in the caller's thread; one that cannot be adapted is kept in
        the rejected file and gives none (never raises)."""
        return self._adapt(exchange)

    def _adapt(self, exchange: Exchange | Callable[[], list[InferenceLog]]) -> list[InferenceLog]:
        try:
            if callable(exchange):
                return exchange()
            limit = self.settings.max_tee_bytes
            if len(exchange.request_body) > limit and not cheap_to_parse(exchange.request_body, limit):
                why = f"with more than {limit // 16} JSON separators, too costly to parse for the log"
                raise DecodeError(DecodeReason.TOO_LARGE, self._dropped_over_cap(exchange, why))
            return exchange_to_logs(exchange, self.settings.deployment, limit)
        except Exception as exc:  # noqa: BLE001 - one exchange must never stop the others
            # Not deliverable as inference-log/v1 (the user already has the answer). An
            # adapter's or the decoder's error names the field, never a value; any other
            # error (int("<text>"), a JSON error quoting the body) is named by its type only.
            reason, detail = (
                (exc.reason.value, _short(exc)) if isinstance(exc, DecodeError) else ("unparseable", type(exc).__name__)
            )
            where = "deferred" if callable(exchange) else f"{exchange.gateway_id} on {exchange.route}"
            if self._reject(exchange, reason, detail):
                log.warning("gateway: exchange %s not logged (%s): %s; kept in %s", where, reason, detail,
                            self.settings.rejected_path)
            elif self._rejected_full_warning():  # a flood of these is what fills the file
                log.error("gateway: exchange %s not logged (%s): %s; NOT kept: %s is at gateway.rejected_max_bytes "
                          "(mm_gateway_logs_dropped_total{reason=\"rejected_full\"})", where, reason, detail,
                          self.settings.rejected_path)  # fmt: skip
            return []

    def _dropped_over_cap(self, exchange: Exchange, why: str) -> str:
        """Count a request over max_tee_bytes that is not logged (too_large); the rejected file's
        detail for it: its id, route and size, never its text."""
        self.metrics.dropped.labels("too_large").inc()
        return (f"{exchange.gateway_id} on {exchange.route}: request body of {len(exchange.request_body)} bytes is "
                f"over gateway.max_tee_bytes ({self.settings.max_tee_bytes}) {why}")

    def _reject(self, exchange: Exchange | Callable[[], list[InferenceLog]], reason: str, detail: str) -> bool:
        """Keep an exchange that could not be adapted, as it arrived, with its reason; False when
        the rejected file had no room for it."""
        entry: dict[str, Any] = {"reason": reason, "detail": detail}
        if isinstance(exchange, Exchange):
            entry.update(
                gateway_id=exchange.gateway_id,
                route=exchange.route,
                status=exchange.status,
                started_at=exchange.started_at.isoformat(),
                streamed=exchange.streamed,
                complete=exchange.complete,
                content_encoding=exchange.content_encoding,
                tenant_id=exchange.tenant_id,
                user_id=exchange.user_id,
            )
            if len(exchange.request_body) > self.settings.max_tee_bytes:
                # Its size only: a body of up to max_request_bytes, in base64, took a third of the
                # rejected file's cap per entry (a review, 2026-12-07).
                entry["request_bytes"] = len(exchange.request_body)
            else:
                entry["request_body_b64"] = base64.b64encode(exchange.request_body).decode()
                entry["response_body_b64"] = base64.b64encode(b"".join(exchange.response_body)).decode()
        else:
            entry["source"] = "deferred"  # built from objects (LiteLLM): no bytes; their JSON if given
            raw = getattr(exchange, "raw", None)
            if raw is not None:
                try:
                    entry["exchange"] = json.loads(json.dumps(raw(), ensure_ascii=False, default=str))
                except Exception as exc:  # noqa: BLE001 - keeping the reason must not fail on the copy
                    entry["exchange_error"] = type(exc).__name__
        return self._keep_rejected(entry)

    def _keep_rejected(self, entry: dict[str, Any]) -> bool:
        """Append one entry (``reason`` first) to the rejected file, within its size cap; False
        when it was not kept (the cap, or the file cannot be written: both counted as dropped)."""
        reason = entry["reason"]
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        path = self.settings.rejected_path
        try:
            with self._spill_lock:
                size = path.stat().st_size if path.exists() else 0
                if size + len(line) > self.settings.rejected_max_bytes:
                    self.metrics.dropped.labels("rejected_full").inc()
                    return False
                path.parent.mkdir(parents=True, exist_ok=True)
                with open_private(path) as fh:
                    fh.write(line)
            self.metrics.rejected.labels(reason).inc()
            return True
        except OSError as exc:
            log.error("gateway: rejected file %s not writable (%s); exchange lost", path, type(exc).__name__)
            self.metrics.dropped.labels("rejected_failed").inc()
            return False

    def _connected(self) -> GatewayProducer | None:
        if self._producer is None and time.monotonic() >= self._next_connect:
            try:
                self._producer = self._factory()
            except KafkaError as exc:
                self._next_connect = time.monotonic() + self.settings.replay_interval_s
                self._set_kafka_up(False, exc)
        return self._producer

    def _send(self, records: list[InferenceLog]) -> list[InferenceLog]:
        """Produce and flush; returns the records that were not delivered."""
        producer = self._connected()
        if producer is None:
            return records
        for rec in records:
            producer.send(rec)
        try:
            producer.flush(FLUSH_TIMEOUT_S)
        except DeliveryError as exc:
            # A record the broker refuses for itself (too large) is kept in the rejected file, not
            # spilled: replaying it would fail forever and hold kafka_up at 0 (a hostile check,
            # 2026-12-02). The rest is an outage.
            own = {label: err for label, err in exc.failures if record_level(err)}
            for rec in records:
                if rec.request_id in own:
                    self._keep_rejected({"reason": "refused_by_kafka", "detail": type(own[rec.request_id]).__name__,
                                         "gateway_id": (rec.metadata or {}).get("gateway_id"),
                                         "log": rec.model_dump(mode="json", by_alias=True, exclude_none=True)})
            producer.forget_failed()
            if len(own) == len(exc.failures):
                self._set_kafka_up(True)
                return []
            self._set_kafka_up(False)
            failed = {label for label, _ in exc.failures} - set(own)
            missing = [rec for rec in records if rec.request_id in failed]
            return missing if len(missing) == len(failed) else [r for r in records if r.request_id not in own]
        except KafkaError:  # flush timed out: the producer's state is unknown, start afresh
            self._set_kafka_up(False)
            with contextlib.suppress(Exception):
                producer.close()
            self._producer = None
            return records
        self._set_kafka_up(True)
        return []

    def _deliver(self, records: list[InferenceLog]) -> None:
        if self._outage and self.settings.overflow == "spill" and time.monotonic() < self._next_probe:
            # Known down: to the spill file at once. Tried, each batch sat in the producer for its
            # delivery timeout while answered requests queued in memory behind it, so a kill -9
            # 8 s into an outage lost 99 of 100 (a hostile review, 2026-12-06). One batch per
            # gateway.replay_interval_s tries the broker (as does the replay of the spill file).
            self._undelivered(records, "delivery_failed")
            return
        self._next_probe = time.monotonic() + self.settings.replay_interval_s
        failed = self._send(records)
        self.metrics.delivered.inc(len(records) - len(failed))
        if failed:
            self._undelivered(failed, "delivery_failed")

    def keep_undelivered(self, records: list[InferenceLog], reason: str) -> None:
        """Logs that cannot go through the queue (it is stopped): spilled, or counted as dropped
        under ``reason`` with the ``drop`` policy, as at shutdown."""
        self._undelivered(records, reason)

    def _undelivered(self, records: list[InferenceLog], reason: str) -> None:
        if self.settings.overflow == "spill":
            self._spill(records)
        else:
            self.metrics.dropped.labels(reason).inc(len(records))
            self._last_dropped = time.monotonic()

    # ------------------------------------------------------------------ spill file

    def _spill(self, records: Iterable[InferenceLog], *, again: bool = False) -> None:
        """Append ``records`` to the spill file; ``again``: they are a failed replay's, already
        counted as spilled once (counted twice, spilled minus replayed showed phantom losses)."""
        lines = [rec.model_dump_json(by_alias=True, exclude_none=True) + "\n" for rec in records]
        if not lines:
            return
        try:
            with self._spill_lock:
                lines = self._within_spill_cap(lines)
                if lines:
                    self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                    # A crash mid-write leaves a torn last line: end it first, or the next record
                    # would be glued to it and lost with it (a hostile review, 2026-12-06).
                    torn = _ends_torn(self.spill_path)
                    with open_private(self.spill_path) as fh:
                        fh.write(("\n" if torn else "") + "".join(lines))
            if not again:
                self.metrics.spilled.inc(len(lines))
            self._spill_failing = False
        except OSError as exc:
            self._spill_failing = True
            log.error("gateway: spill file %s not writable (%s); %d logs lost", self.spill_path,
                      first_line(exc, type(exc).__name__), len(lines))
            self.metrics.dropped.labels("spill_failed").inc(len(lines))
        self.metrics.spill_bytes.set(self._spill_size())

    def _within_spill_cap(self, lines: list[str]) -> list[str]:
        """The lines that fit under ``spill_max_bytes`` (all of them with 0); the others are
        counted as dropped (``spill_full``), with a warning at most once a minute."""
        cap = self.settings.spill_max_bytes
        if not cap:
            return lines
        room = cap - self._spill_size()
        kept = 0
        for line in lines:
            room -= len(line.encode())
            if room < 0:
                break
            kept += 1
        if kept < len(lines):
            self.metrics.dropped.labels("spill_full").inc(len(lines) - kept)
            if self._spill_full_warning():  # an outage is a burst of these
                log.warning("gateway: the spill file is at gateway.spill_max_bytes (%d); logs are dropped "
                            "(mm_gateway_logs_dropped_total{reason=\"spill_full\"})", cap)  # fmt: skip
        return lines[:kept]

    def _spill_size(self) -> int:
        """Bytes of spilled records not yet delivered (this process's, and those it replays for others)."""
        if not self._replays:  # another process's file (overflow: drop beside its holder): not ours to report
            return 0
        size = 0
        for slot in (self._own, *self._adopted):
            size += slot.path.stat().st_size if slot.path.exists() else 0
            if slot.replaying.exists():
                size += max(slot.replaying.stat().st_size - slot.offset, 0)
        return size

    def _replay(self) -> None:
        """Deliver the spill file in batches, resuming where the last attempt stopped; with
        ``per_process_spill``, then the files of other slots whose process is gone (their lock is
        free), each held under its lock until it is delivered."""
        if not self._replays:
            return
        if self._per_process:
            self._adopt_orphans()
        for slot in (self._own, *self._adopted):
            if not self._replay_slot(slot):
                break  # the broker failed: the next interval tries again
        for slot in [slot for slot in self._adopted if not _pending(slot)]:
            slot.release()
            self._adopted.remove(slot)
        self.metrics.spill_bytes.set(self._spill_size())

    def _adopt_orphans(self) -> None:
        """Take the lock of every other slot with spilled records whose process is gone: a LiteLLM
        worker that died (or a proxy restarted with fewer workers) leaves its files behind."""
        held = {self._own.path, *(slot.path for slot in self._adopted)}
        for path in _slots_on_disk(self.settings.spill_path):
            if path in held or not _pending(_SpillSlot(path)):
                continue
            lock = _try_lock(path)
            if lock is not None:
                log.info("gateway: replaying %s, left by a process that is gone", path)
                self._adopted.append(_SpillSlot(path, lock))

    def _replay_slot(self, slot: _SpillSlot) -> bool:
        """Deliver one slot's files; False when the broker failed (or is not connected).

        The spill file is renamed to ``<name>.replaying`` first, so new spills go to a fresh
        file meanwhile; the replay file is read from ``slot.offset`` on, never copied (an
        outage can leave gigabytes). A batch that fails goes back to this process's spill file
        and the replay stops until the next interval. After a crash the replay file is read
        again from its start: records may arrive twice, never zero times.
        """
        with self._spill_lock:
            pending = _pending(slot)
        if not pending:
            return True
        if self._connected() is None:
            return False
        with self._spill_lock:
            if not slot.replaying.exists():  # never over one: its lines are not all delivered yet
                slot.path.rename(slot.replaying)
        done = 0
        finished = True
        with slot.replaying.open("rb") as fh:
            st = os.fstat(fh.fileno())
            if (st.st_dev, st.st_ino) != slot.file_id:
                # Not the file the offset was counted in (put back by hand, or left by another
                # process): from its start. An offset applied to another file skipped its lines.
                slot.file_id, slot.offset = (st.st_dev, st.st_ino), 0
            fh.seek(slot.offset)
            for chunk in _batches(fh, self.settings.batch_max):
                records = []
                for line in chunk:
                    try:
                        records.append(InferenceLog.model_validate_json(line))
                    except ValueError:  # a line torn by a crash mid-write
                        self.metrics.dropped.labels("spill_corrupt").inc()
                failed = self._send(records)
                self.metrics.replayed.inc(len(records) - len(failed))
                self.metrics.delivered.inc(len(records) - len(failed))
                done += len(records) - len(failed)
                slot.offset = fh.tell()
                if failed:
                    self._spill(failed, again=True)
                    finished = False
                    break
        if finished:
            slot.replaying.unlink()
            slot.offset, slot.file_id = 0, None
        if done:
            log.info("gateway: replayed %d spilled logs", done)
        return finished


# Slots a per-process tee may take beside its spill_path (the LiteLLM proxy's workers).
MAX_SPILL_SLOTS = 1024


def spill_slot(spill_path: Path, k: int) -> Path:
    """Slot ``k`` of a spill path: the path itself for 0, else ``<stem>.<k><suffix>``."""
    return spill_path if k == 0 else spill_path.with_name(f"{spill_path.stem}.{k}{spill_path.suffix}")


def lock_path(spill_path: Path) -> Path:
    """The file whose ``flock`` makes a spill file one process's (never deleted: a lock file
    removed while held lets a second process lock a new file of the same name)."""
    return spill_path.with_name(spill_path.name + ".lock")


def _try_lock(spill_path: Path) -> contextlib.ExitStack | None:
    """The spill file's lock, held until the stack is closed; None if another process holds it."""
    stack = contextlib.ExitStack()
    try:
        stack.enter_context(exclusive_lock(lock_path(spill_path), timeout=0))
    except LockTimeout:
        return None
    return stack


def _pending(slot: _SpillSlot) -> bool:
    """Are there spilled records in the slot's files?"""
    return slot.replaying.exists() or (slot.path.exists() and slot.path.stat().st_size > 0)


def _slots_on_disk(spill_path: Path) -> list[Path]:
    """The slots of ``spill_path`` (:func:`spill_slot`) that have a spill or replay file."""
    name = re.compile(rf"{re.escape(spill_path.stem)}(?:\.(\d+))?{re.escape(spill_path.suffix)}(?:\.replaying)?")
    try:
        names = [match for entry in spill_path.parent.iterdir() if (match := name.fullmatch(entry.name))]
    except FileNotFoundError:
        return []
    return sorted({spill_slot(spill_path, int(match[1] or 0)) for match in names})


def replay_path(spill_path: Path) -> Path:
    """Where a spill file is moved while it is replayed (new spills go to a fresh file meanwhile)."""
    return spill_path.with_name(spill_path.name + ".replaying")


def check_paths(settings: GatewaySettings) -> None:
    """Refuse, before serving, a spill or rejected path the gateway would damage: a directory (the
    replay renamed a whole directory), or an existing spill file that is not one (the replay would
    send its lines, drop those that are not inference logs, and delete it). Found by a careless
    newcomer's ``--spill-path notes.txt`` (2026-12-02). Raises ConfigError."""
    from pipeline.exits import ConfigError

    spill = settings.spill_path
    replaying = replay_path(spill)
    for name, path in (("spill_path", spill), ("spill_path", replaying), ("rejected_path", settings.rejected_path)):
        if path.is_dir():
            raise ConfigError(f"gateway.{name} {path} is a directory; give a file path")
    for path in (spill, replaying):
        if not path.is_file() or path.stat().st_size == 0:
            continue
        with path.open("rb") as fh:
            first = next((line for line in fh if line.strip()), b"")
        # Every spilled line starts so; a line torn by a crash mid-write does too, and must not
        # keep the gateway from starting (it refused to, on a spill file of one torn line).
        if first.startswith(SPILL_LINE_START):
            continue
        try:
            InferenceLog.model_validate_json(first)
        except ValueError:
            raise ConfigError(
                f"gateway.spill_path: {path} exists and is not a gateway spill file (its first line is not an "
                "inference-log/v1 record); the gateway replays and then deletes that file: move it or choose "
                "another spill_path"
            ) from None
    # The spill file is written with overflow "spill", and by the replay of one left over in any
    # mode (a drop-mode gateway without either refused to start over a path it never writes; a
    # review of this change, 2026-12-07).
    left_over = any(p.is_file() and p.stat().st_size for p in (spill, replaying))
    writable = [("spill_path", spill)] if settings.overflow == "spill" or left_over else []
    for name, path in [*writable, ("rejected_path", settings.rejected_path)]:
        _check_writable(f"gateway.{name}", path)


def _check_writable(what: str, path: Path) -> None:
    """Raise ConfigError unless a file can be written at ``path`` now: its folder is made if
    missing, and a probe file is created there and removed (the process may be root, for whom
    permission bits say nothing). An unwritable spill path was found only in an outage, when
    every log was lost behind a healthy /healthz (a hostile review, 2026-12-07)."""
    import tempfile

    from pipeline.exits import ConfigError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open("ab"):
                pass
        else:
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".mm-write-check-"):
                pass
    except OSError as exc:
        raise ConfigError(f"{what} {path} is not writable: {first_line(exc, type(exc).__name__)}") from None


# How every line of a spill file begins (InferenceLog.model_dump_json(by_alias=True)).
SPILL_LINE_START = b'{"schema":"inference-log/v1"'


def _ends_torn(path: Path) -> bool:
    """Does the file at ``path`` end inside a line (a crash mid-write)?"""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            if fh.tell() == 0:
                return False
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) != b"\n"
    except FileNotFoundError:
        return False


def _batches(fh: Any, size: int) -> Iterable[list[bytes]]:
    chunk: list[bytes] = []
    for line in fh:
        if line.strip():
            chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _short(exc: BaseException, limit: int = 300) -> str:
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


# --------------------------------------------------------------------------- parsing


class ParsedRequest(NamedTuple):
    body: Any  # the request as JSON values
    not_utf8: bool  # bytes that are not UTF-8 were read as U+FFFD
    pruned: int  # values nested deeper than MAX_REQUEST_DEPTH read as null
    trailing: int = 0  # characters after the first JSON value, not read


# Digits past which an integer literal reads as null: CPython refuses to convert more than 4,300.
MAX_REQUEST_INT_DIGITS = 4000
# Depth past which values read as null, in a body too deep for Python's parser (its recursion
# limit is 1000); real requests nest < 20 deep, JSON Schemas of tools a few more.
MAX_REQUEST_DEPTH = 200
# A string runs to its closing quote or to the end of the body, possessively: with `*` and no end
# clause, a string that never closed was tried again from each escaped quote in it, each try to
# the end (33 KB took 4 s; a review of this change, 2026-12-07). Now one pass, linear.
_JSON_TOKEN = re.compile(rb'"(?:[^"\\]++|\\.?)*+(?:"|\Z)|[\[\]{}]', re.S)


def parse_request(body: bytes) -> ParsedRequest:
    """A request body parsed as JSON, as an upstream that skips what it does not read parses it.

    Bytes that are not UTF-8 are read with U+FFFD in their place, as Go's encoding/json (Ollama's
    OpenAI layer) reads them: a body Python could not parse went unscreened to such an upstream,
    which answered it (a hostile review, 2026-12-06). For the same reason an integer of more than
    MAX_REQUEST_INT_DIGITS digits reads as null, and in a body nested too deep for Python's parser,
    values deeper than MAX_REQUEST_DEPTH read as null (counted in ``pruned``): an unknown field
    holding either made the body unparseable here, so pre-screening let it through and it was
    never logged, while Go (10,000 levels) and llama.cpp skip such a field and answer (a hostile
    review, 2026-12-07). Raises ValueError for a body that is not JSON even so."""
    try:
        return _parsed(body, 0)
    except RecursionError:
        pass
    try:
        return _parsed(*_prune_deep(body, MAX_REQUEST_DEPTH))
    except RecursionError:  # deep past a string that never closes: not JSON even so
        raise ValueError(f"request body nested deeper than {MAX_REQUEST_DEPTH} levels and not valid JSON") from None


def _parsed(body: bytes, pruned: int) -> ParsedRequest:
    try:
        return _first_value(body, False, pruned)
    except UnicodeDecodeError:
        return _first_value(body.decode("utf-8", "replace"), True, pruned)


def _first_value(body: bytes | str, not_utf8: bool, pruned: int) -> ParsedRequest:
    """The body's first JSON value, as Go's json.Decoder (gin's ShouldBindJSON: Ollama's OpenAI
    layer) reads it: text after it is not read. Refusing the body for it let `{...} x` pass
    pre-screening unscreened and kept its exchange out of the stream, while such an upstream
    answered the request (a hostile review, 2026-12-07)."""
    try:
        return ParsedRequest(json.loads(body, parse_int=_request_int), not_utf8, pruned)
    except json.JSONDecodeError as exc:
        if exc.msg != "Extra data":
            raise
        first = json.loads(exc.doc[: exc.pos], parse_int=_request_int)
        return ParsedRequest(first, not_utf8, pruned, len(exc.doc) - exc.pos)


def _request_int(text: str) -> int | None:
    return int(text) if len(text) <= MAX_REQUEST_INT_DIGITS + (text[0] == "-") else None


def _prune_deep(body: bytes, max_depth: int) -> tuple[bytes, int]:
    """``body`` with every array or object that opens deeper than ``max_depth`` replaced by
    ``null``, and how many were. One regex pass over strings and brackets (no recursion);
    an unterminated value is left as it is, for the parser to refuse."""
    out: list[bytes] = []
    depth, last, cut_at, pruned = 0, 0, -1, 0
    for token in _JSON_TOKEN.finditer(body):
        char = body[token.start()]
        if char == 0x22:  # a string: its brackets are text
            continue
        if char in b"[{":
            depth += 1
            if depth == max_depth + 1:
                out.append(body[last:token.start()])
                cut_at = token.start()
        else:
            if depth == max_depth + 1 and cut_at >= 0:
                out.append(b"null")
                last, cut_at, pruned = token.end(), -1, pruned + 1
            depth -= 1
    out.append(body[cut_at if cut_at >= 0 else last:])
    return b"".join(out), pruned


# Keys of the OpenAI request shapes (all lower case). Go's encoding/json matches object keys
# case-insensitively, the last match winning, so `"Messages"` beside `"messages"` (or `"Content"`
# in a message) is what a Go upstream reads while the adapter reads the lower-case one.
_SHAPE_KEYS = frozenset(
    {"messages", "prompt", "input", "instructions", "content", "role", "text", "tools", "functions", "function",
     "description", "parameters", "arguments", "name", "tool_calls", "reasoning_content", "model", "user", "type"}
)  # fmt: skip


def case_variant_keys(request: Any, limit: int = 20) -> list[str]:
    """Paths of keys that are a case variant of an OpenAI shape key (``Messages``, ``CONTENT``)
    or of another key of the same object, at most ``limit``. Only the objects a server decodes
    into its request types are looked at (the request, its messages or input items, their
    content parts and tool calls, the tools and their functions): a JSON Schema's properties or
    ``metadata`` are maps, matched exactly by Go too, where ``"Name"`` beside ``"name"`` is no
    trick. Keys other than the shape's are named by position (``<key 2>``), never quoted.

    (It walked every container and built each one's path first: 400 levels over 50,000 empty
    lists, a 152 KB body, took 166 MB; a hostile review, 2026-12-06.)"""
    from pipeline.schemas import key_label

    found: list[str] = []

    def check(path: str, node: Any) -> None:
        if not isinstance(node, dict):
            return
        seen: set[str] = set()
        for position, key in enumerate(node):
            if isinstance(key, str) and len(found) < limit:
                low = key.casefold()
                if (key != low and low in _SHAPE_KEYS) or low in seen:
                    found.append(f"{path}{key_label(key, position)}")
                seen.add(low)

    def items(node: Any, key: str) -> list[Any]:
        value = node.get(key) if isinstance(node, dict) else None
        return value if isinstance(value, list) else []

    check("", request)
    for list_key in ("messages", "input", "tools", "functions"):
        for i, item in enumerate(items(request, list_key)):
            check(f"{list_key}.{i}.", item)
            if isinstance(item, dict) and isinstance(item.get("function"), dict):
                check(f"{list_key}.{i}.function.", item["function"])
            for j, part in enumerate(items(item, "content")):
                check(f"{list_key}.{i}.content.{j}.", part)
            for j, call in enumerate(items(item, "tool_calls")):
                check(f"{list_key}.{i}.tool_calls.{j}.", call)
                if isinstance(call, dict):
                    check(f"{list_key}.{i}.tool_calls.{j}.function.", call.get("function"))
            if len(found) >= limit:
                return found
    return found


def exchange_to_logs(exchange: Exchange, deployment: str | None, max_bytes: int | None = None) -> list[InferenceLog]:
    """Parse the raw bytes of an exchange (JSON or SSE) and adapt them to inference logs.

    The request is parsed as the upstream parses it (``json.loads``: the last of duplicate keys
    wins, as it does for the model), so what is logged is what the model read (values nested
    past Python's parser read as null: :func:`parse_request`), and read by the
    exchange's route, not by which keys it holds. A stream cut mid-event keeps the events before
    the cut (``metadata.stream_cut``).

    ``request_id`` is the gateway's own id: the upstream's response id need not be unique
    (Ollama's ``/v1`` numbers them ``chatcmpl-0..998``), and two exchanges sharing one would
    overwrite each other in the sinks, which upsert by ``request_id``. The upstream's id is
    kept as ``metadata.upstream_id``."""
    request, not_utf8, pruned, trailing = parse_request(exchange.request_body)
    # A compressed response is inflated within what max_tee_bytes leaves (a 306 KB gzip body
    # became a 300 MB completion; a hostile review, 2026-12-07); past it, as a response over the
    # cap: an event stream keeps the events that fit, another response is left out.
    room = None if max_bytes is None else max(0, max_bytes - len(exchange.request_body))
    body, over = _decode_body(b"".join(exchange.response_body), exchange.content_encoding,
                              partial=not exchange.complete, max_length=room)  # fmt: skip
    response: Any
    cut = False
    if over and not exchange.streamed:
        response = None
    elif not 200 <= exchange.status < 300 or not body:
        response = None  # an upstream error: the prompt is still logged, with the status
    elif exchange.streamed:
        response, cut = _parse_sse(body)
    else:
        response = json.loads(body)
    metadata: dict[str, Any] = {"gateway_id": exchange.gateway_id, "upstream_status": exchange.status}
    if not_utf8:
        metadata["request_not_utf8"] = True
    if over:
        metadata["response_truncated"] = True
    if pruned:
        metadata["request_pruned_values"] = pruned  # nested deeper than MAX_REQUEST_DEPTH: read as null
    if trailing:
        metadata["request_trailing_chars"] = trailing  # after the first JSON value: not read
    if variants := case_variant_keys(request):
        metadata["case_variant_keys"] = variants  # what a case-insensitive upstream may read instead
    if cut or exchange.upstream_cut:
        metadata["stream_cut"] = True
    if exchange.ttft_ms is not None:
        metadata["ttft_ms"] = round(exchange.ttft_ms, 3)
    if exchange.upstream_cut:
        # The upstream failed mid-body (it was logged as client_disconnected): stream_cut, as for
        # a stream cut inside an event, and the error's type.
        metadata["upstream_error"] = exchange.upstream_cut
    elif not exchange.complete:
        metadata["client_disconnected"] = True
    metadata.update(exchange.extra_metadata)
    return from_openai_all(
        request,
        response,
        endpoint=exchange.route,
        request_id=exchange.gateway_id,
        timestamp=exchange.started_at,
        deployment=deployment,
        tenant_id=exchange.tenant_id,
        user_id=exchange.user_id,
        latency_ms=round(exchange.latency_ms, 3),
        metadata=metadata,
    )


def parse_sse(body: bytes) -> list[dict[str, Any]]:
    """The JSON payloads of an SSE body (``data:`` lines; ``[DONE]`` and comments skipped)."""
    return _parse_sse(body)[0]


def _parse_sse(body: bytes) -> tuple[list[dict[str, Any]], bool]:
    """:func:`parse_sse`, and whether the last event was cut off (an unterminated block that
    does not parse: the upstream or the client went away mid-event; it is left out)."""
    events: list[dict[str, Any]] = []
    blocks = body.replace(b"\r\n", b"\n").split(b"\n\n")
    for i, block in enumerate(blocks):
        data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
        if not data:
            continue
        payload = b"\n".join(data)
        if payload.strip() == b"[DONE]":
            continue
        try:
            value = json.loads(payload)
        except ValueError:
            if i == len(blocks) - 1:  # no blank line after it: the stream ended inside this event
                return events, True
            raise
        if not isinstance(value, dict):
            raise AdapterError(f"stream event {len(events)}: expected a JSON object, got {type(value).__name__}")
        if "error" in value and "choices" not in value:
            continue  # an in-stream error event (vLLM sends one on abort): no content
        events.append(value)
    return events, False


def _decode_body(
    body: bytes, encoding: str | None, partial: bool = False, max_length: int | None = None
) -> tuple[bytes, bool]:
    """The body without its content encoding, at most ``max_length`` bytes of it, and whether
    it held more. ``partial``: the transfer was cut, keep what decompresses. A corrupt body
    raises AdapterError."""
    if not encoding or encoding == "identity":
        return body, False
    if encoding not in ("gzip", "deflate"):
        raise AdapterError(f"content-encoding {encoding!r} is not supported for logging")
    # gzip: a gzip header; deflate: a zlib stream, or a raw one as some servers send.
    wbits = [31] if encoding == "gzip" else [15, -15]
    for bits in wbits:
        inflater = zlib.decompressobj(bits)
        try:
            # One byte past the room tells "exactly fits" from "held more".
            out = inflater.decompress(body, 0 if max_length is None else max_length + 1)
        except zlib.error:
            continue
        if max_length is not None and len(out) > max_length:
            return out[:max_length], True
        if inflater.eof or partial:
            return out, False
    raise AdapterError(f"content-encoding {encoding}: the body is corrupt or cut short")
