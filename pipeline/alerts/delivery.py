"""The dispatcher: runs the notifying stage and delivers the outbox, in a thread or standalone.

The stage is the :class:`~pipeline.alerts.alertmanager.AlertmanagerPusher` (default: it posts
alerts straight to Alertmanager, the outbox stays empty) or the direct notifier
(:class:`~pipeline.alerts.grouping.Notifier`, which fills the outbox delivered here).

Retries use a small scheduler of our own rather than tenacity: a retry must survive a restart
and must not hold a thread while it waits, so its state is the outbox row itself
(``attempts``, ``next_attempt_at``) and the wait is "not due yet". The delay is capped
exponential backoff with jitter: ``min(max, initial * 2**(attempts-1)) * uniform(0.5, 1)``; the
jitter spreads the retries of many rows after a receiver comes back. A row older than
``dead_letter_after_s`` is dead-lettered instead of retried.

Guarantee: at least once per idempotency key. A row is marked delivered only after a 2xx; a
crash before that (even mid-request) leaves it pending and it is sent again, with the same key.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import httpx
from sqlalchemy.engine import Engine

from pipeline.alerts.metrics import AlertMetrics
from pipeline.alerts.outbox import Outbox, OutboxItem
from pipeline.alerts.receivers.base import Receiver
from pipeline.alerts.settings import DeliverySettings
from pipeline.alerts.transport import alert_client

log = logging.getLogger(__name__)

RETRYABLE_4XX = frozenset({408, 425, 429})


class Stage(Protocol):
    """What the dispatcher runs first in every tick."""

    def tick(self) -> int: ...

    def pending(self) -> int:
        """Alerts decided but not yet handed on (besides the outbox)."""
        ...


def backoff_delay(attempts: int, initial_s: float, max_s: float, rng: random.Random) -> float:
    """Delay before the next try after ``attempts`` failed tries (>= 1)."""
    base = min(max_s, initial_s * 2 ** max(0, attempts - 1))
    return base * rng.uniform(0.5, 1.0)


def claim_batch_size(settings: DeliverySettings, timeouts_s: list[float]) -> int:
    """Rows to claim per tick: at most ``batch_size``, and few enough that sending them all to
    receivers that never answer (each attempt taking its timeout, ``concurrency`` at a time) ends
    before the claim expires. A tick waits for its whole batch: 50 rows to a black-holed
    webhook (4 workers, 5 s timeout) took 62.5 s, longer than the 60 s claim, and held up every
    other receiver meanwhile (a hostile review, 2026-12)."""
    slowest = max(timeouts_s, default=0.0)
    if slowest <= 0:
        return settings.batch_size
    # 80%: leave the rest of the claim for the database writes around the sends.
    rounds = max(1, math.floor(0.8 * settings.claim_ttl_s / slowest))
    return max(1, min(settings.batch_size, rounds * settings.concurrency))


# How often a dispatcher deletes delivered rows older than delivery.keep_delivered_s.
PRUNE_EVERY_S = 600.0


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        notifier: Stage | None,
        receivers: Mapping[str, Receiver],
        settings: DeliverySettings,
        *,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.time,
        on_tick: Callable[[], None] | None = None,
        rng: random.Random | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        """``on_tick`` runs in every tick after the notifying stage (the alerts sink re-evaluates
        time-based rules there)."""
        self._outbox = Outbox(engine)
        self._notifier = notifier
        self._receivers = dict(receivers)
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._on_tick = on_tick
        self._rng = rng or random.Random()
        self._client = client or alert_client()
        self._pool = ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix="mm-alert-send")
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_prune = float("-inf")
        timeouts = [r.settings.timeout_s for r in self._receivers.values()]
        self._batch = claim_batch_size(settings, timeouts)
        if timeouts and settings.claim_ttl_s <= max(timeouts):
            # Not an error: at least once tolerates it, and short claims make crash tests fast.
            log.warning(
                "alerts.delivery.claim_ttl_s (%gs) is not longer than the slowest receiver timeout_s (%gs): a claim "
                "can expire mid-request and the row be sent twice (same idempotency key)", settings.claim_ttl_s, max(timeouts),
            )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Run :meth:`run_forever` in a daemon thread (the stream process does this)."""
        self._thread = threading.Thread(target=self.run_forever, name="mm-alert-dispatcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Skip the rest of the idle wait: new alerts were just committed."""
        self._wake.set()

    def request_stop(self) -> None:
        """Make :meth:`run_forever` return after the current tick (safe in a signal handler)."""
        self._stop.set()
        self._wake.set()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (if any) and release the HTTP client and sender pool."""
        self.request_stop()
        if self._thread is not None:
            self._thread.join(timeout_s)
        self._pool.shutdown(wait=True)
        self._client.close()

    def run_forever(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.run_once()
            except Exception:  # noqa: BLE001 - a DB hiccup must not kill the dispatcher; it retries next tick
                log.exception("alert dispatcher tick failed; retrying")
                busy = 0
            if not busy:
                self._wake.wait(self._settings.poll_interval_s)
                self._wake.clear()

    # ------------------------------------------------------------------ work
    def run_once(self) -> int:
        """One tick: re-evaluate, group into the outbox, deliver what is due. Returns rows handled."""
        # Hand on what is committed first; time-based re-evaluation can wait a loop.
        if self._notifier is not None:
            self._notifier.tick()
        if self._on_tick is not None:
            self._on_tick()
        now = self._clock()
        items = self._outbox.claim_due(now, self._batch, self._settings.claim_ttl_s)
        if items:
            list(self._pool.map(self._deliver, items))
        if now - self._last_prune >= PRUNE_EVERY_S:
            # Delivered rows were never deleted: the outbox grew by every notification, each
            # with its evidence, for as long as the database lived (an on-call review, 2026-12-06).
            self._last_prune = now
            self._outbox.prune_delivered(now - self._settings.keep_delivered_s)
        if self._metrics:
            stage_pending = self._notifier.pending() if self._notifier is not None else 0
            self._metrics.outbox_pending.set(self._outbox.pending_count() + stage_pending)
        return len(items)

    def drain(self, timeout_s: float) -> bool:
        """Tick until nothing is pending (tests, ``alerts test --send``); True when drained."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.run_once()
            if self._outbox.pending_count() == 0 and (self._notifier is None or self._notifier.pending() == 0):
                return True
            time.sleep(self._settings.poll_interval_s)
        return False

    def _deliver(self, item: OutboxItem) -> None:
        receiver = self._receivers.get(item.receiver)
        if receiver is None:
            # Left in the outbox: the receiver may come back in the config; dead-letters by age.
            self._fail(item, f"receiver {item.receiver!r} is not configured", retryable=True)
            return
        try:
            response = receiver.send(self._client, item.message, item.idempotency_key)
        except httpx.HTTPError as exc:
            self._fail(item, f"{type(exc).__name__}: {exc}", retryable=True)
            return
        except httpx.InvalidURL:  # not an HTTPError; the settings refuse such URLs, a row may be older
            self._fail(item, "the receiver's URL is not valid (httpx.InvalidURL; not shown: it may hold a credential)",
                       retryable=False)
            return
        except Exception as exc:  # noqa: BLE001 - one row's failure must not stop the tick for every other row
            # It raised out of run_once on every tick, and the row was never dead-lettered by age.
            log.exception("alert delivery %s to %s raised", item.idempotency_key, item.receiver)
            self._fail(item, f"{type(exc).__name__}", retryable=True)
            return
        status = response.status_code
        if 200 <= status < 300:
            now = self._clock()
            self._outbox.mark_delivered(item.id, now)
            if self._metrics:
                self._metrics.deliveries.labels(item.receiver, "delivered").inc()
                self._metrics.delivery_latency.labels(item.receiver).observe(max(0.0, now - item.created_at))
            return
        detail = f"HTTP {status}: {response.text[:200]}"
        retryable = status >= 500 or status in RETRYABLE_4XX
        self._fail(item, detail, retryable=retryable)

    def _fail(self, item: OutboxItem, error: str, *, retryable: bool) -> None:
        now = self._clock()
        attempts = item.attempts + 1
        m = self._metrics
        if m:
            m.deliveries.labels(item.receiver, "failed" if retryable else "rejected").inc()
        if not retryable:
            log.error("alert delivery %s to %s rejected: %s", item.idempotency_key, item.receiver, error)
            self._outbox.mark_dead(item.id, error)
            if m:
                m.dead_letters.labels(item.receiver).inc()
            return
        s = self._settings
        next_at = now + backoff_delay(attempts, s.retry_initial_s, s.retry_max_s, self._rng)
        if next_at - item.created_at > s.dead_letter_after_s:
            log.error("alert delivery %s to %s dead-lettered after %d attempts: %s", item.idempotency_key, item.receiver, attempts, error)
            self._outbox.mark_dead(item.id, f"gave up after {attempts} attempts: {error}")
            if m:
                m.dead_letters.labels(item.receiver).inc()
            return
        log.warning("alert delivery %s to %s failed (attempt %d), retry in %.1fs: %s", item.idempotency_key, item.receiver, attempts, next_at - now, error)
        self._outbox.mark_retry(item.id, next_at, error)
        if m:
            m.retries.labels(item.receiver).inc()
