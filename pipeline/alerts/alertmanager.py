"""Alertmanager as the routing layer: post the alert table to ``POST /api/v2/alerts``.

This is the default (``alerts.notify: alertmanager``). The engine decides *that* something is
wrong; Alertmanager decides *who hears about it and when*: grouping, silences (``amtool silence
add``), inhibition, receivers and their retries. We do what Prometheus does as an alert source:

- every alert changed since the last successful post (new, extended, resolved) is posted at
  once, with ``startsAt``, ``endsAt`` (the engine always knows when an alert ends unless it is
  extended, so Alertmanager resolves it on time even if we go away), labels, annotations and a
  ``generatorURL`` drill-down;
- every ``resend_interval_s`` all firing and recently resolved alerts are posted again, because
  Alertmanager keeps alerts in memory only (a restarted Alertmanager learns them again);
- each peer URL of an Alertmanager cluster gets every alert (peers do not gossip alerts).

Alertmanager identifies alerts by their label set, so posting the same alert again updates it:
re-sends after a crash, or by several stream replicas sharing one alert database, are harmless.
Nothing is deleted before it was accepted: the read position only advances on a 2xx.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from pipeline.alerts import state as db
from pipeline.alerts.grouping import _alert_from_row
from pipeline.alerts.metrics import AlertMetrics
from pipeline.alerts.model import Alert, GeneratorLinks, PostableAlert
from pipeline.alerts.settings import AlertmanagerSettings
from pipeline.alerts.transport import alert_client, post_within

log = logging.getLogger(__name__)

RECEIVER_LABEL = "alertmanager"  # the ``receiver`` label of delivery metrics in this mode
_CHUNK = 500


def shown_url(url: str) -> str:
    """``url`` without a user and password, query or fragment: the settings hold Alertmanager
    URLs as secrets, and a proxy in front of one may take its token in the query
    (``?token=...``). Until a privacy review (2026-12-04) the query was logged, and ``alerts test
    --send`` printed the whole URL, password included."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit(parts._replace(netloc=netloc, query="…" if parts.query else "", fragment=""))


@dataclass
class _Peer:
    url: str

    @property
    def shown(self) -> str:
        """The URL as logs may show it (:func:`shown_url`)."""
        return shown_url(self.url)

    watermark: float | None = None  # updated_at of the newest alert this peer accepted
    sent: dict[str, tuple[float, float]] = field(default_factory=dict)  # fp -> (updated_at, ends_at) accepted
    last_full: float = float("-inf")
    failures: int = 0
    retry_at: float = float("-inf")
    backlog: int = 0


class AlertmanagerPusher:
    """Runs in the dispatcher's tick (a thread of the stream, or ``alerts dispatch``)."""

    # Rows committed this late after their updated_at are still picked up.
    READ_SLACK_S = 5.0
    RETENTION_EVERY_S = 10.0

    def __init__(
        self,
        engine: Engine,
        settings: AlertmanagerSettings,
        links: GeneratorLinks,
        *,
        metrics: AlertMetrics | None = None,
        clock: Callable[[], float] = time.time,
        client: httpx.Client | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._links = links
        self._metrics = metrics
        self._clock = clock
        self._client = client or alert_client()
        self._peers = [_Peer(u.get_secret_value().rstrip("/") + "/api/v2/alerts") for u in settings.urls]
        # A resolved alert is re-sent with full syncs for this long, then its row may go.
        self._keep_resolved_s = 2 * settings.resend_interval_s + 60
        self._last_retention = float("-inf")

    def pending(self) -> int:
        """Changed alerts not yet accepted by every peer (the ``mm_alert_outbox_pending`` gauge)."""
        return max((p.backlog for p in self._peers), default=0)

    def tick(self) -> int:
        """Post what changed (or everything, when a full re-send is due); returns alerts posted."""
        now = self._clock()
        posted = 0
        for peer in self._peers:
            if now < peer.retry_at:
                continue
            # A clock stepped back made `now - last_full` negative: no full re-send (the one pass
            # that finds rows written under the watermark) until it caught up (2026-12-06).
            full = now - peer.last_full >= self._settings.resend_interval_s or now < peer.last_full
            alerts = self._to_send(peer, now, full)
            peer.backlog = len(alerts)
            if not alerts:
                if full:
                    peer.last_full = now
                continue
            if self._post(peer, alerts, now):
                posted += len(alerts)
                peer.backlog = 0
                for a in alerts:
                    peer.sent[a.fingerprint] = (a.updated_at, a.ends_at)
                    peer.watermark = max(peer.watermark or a.updated_at, a.updated_at)
                if full:
                    peer.last_full = now
        # Whatever the peers' backlogs: a full re-send posts only rows that ended at most
        # keep_resolved_s ago (_to_send), and a peer back from an outage longer than
        # resend_interval_s gets a full one, so no peer would be sent a row retention deletes. It
        # waited for every backlog to be empty: one unreachable peer stopped it for good, alert
        # rows (evidence, pseudonyms) were kept and the healthy peers' `sent` maps grew without
        # end (a hostile review, 2026-12-07). A stepped-back clock runs it again too.
        if not 0.0 <= now - self._last_retention < self.RETENTION_EVERY_S:
            self._last_retention = now
            self._retention(now)
        return posted

    def _to_send(self, peer: _Peer, now: float, full: bool) -> list[Alert]:
        t = db.alerts
        with self._engine.connect() as conn:
            if full or peer.watermark is None:
                rows = conn.execute(sa.select(t).where(t.c.ends_at >= now - self._keep_resolved_s)).mappings()
                return [_alert_from_row(r) for r in rows]
            probe = conn.execute(
                sa.select(t.c.fingerprint, t.c.updated_at, t.c.ends_at).where(t.c.updated_at >= peer.watermark - self.READ_SLACK_S)
            )
            stale = [fp for fp, updated_at, ends_at in probe if peer.sent.get(fp) != (updated_at, ends_at)]
            out: list[Alert] = []
            for i in range(0, len(stale), _CHUNK):
                rows = conn.execute(sa.select(t).where(t.c.fingerprint.in_(stale[i : i + _CHUNK]))).mappings()
                out += [_alert_from_row(r) for r in rows]
            return out

    def _post(self, peer: _Peer, alerts: Sequence[Alert], now: float) -> bool:
        error = ""
        refused: list[str] = []
        for i in range(0, len(alerts), _CHUNK):
            body = json.dumps([PostableAlert.of(a, self._links).model_dump() for a in alerts[i : i + _CHUNK]]).encode()
            try:
                response = post_within(
                    self._client, peer.url, content=body, headers={"Content-Type": "application/json"},
                    timeout_s=self._settings.timeout_s,
                )
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                break
            if response.status_code in (400, 422):
                # Alertmanager refuses this chunk's invalid alerts and keeps its valid ones: the
                # chunks after it still go out, and a retry would be refused the same way (it
                # kept the backlog above 0 for good, and retention never ran).
                refused.append(f"HTTP {response.status_code}: {response.text[:200]}")
            elif not 200 <= response.status_code < 300:
                error = f"HTTP {response.status_code}: {response.text[:200]}"
                break  # down, overloaded (429), or not allowed (401, 403, 404): retry later
        m = self._metrics
        if refused and not error:
            log.warning("Alertmanager at %s refused invalid alerts in %d of %d chunk(s) and kept the rest: %s",
                        peer.shown, len(refused), -(-len(alerts) // _CHUNK), refused[0])
            if m:
                m.deliveries.labels(RECEIVER_LABEL, "rejected").inc()
        if error:
            peer.failures += 1
            peer.retry_at = now + min(30.0, 0.5 * 2 ** (peer.failures - 1))
            log.warning("posting %d alerts to %s failed (attempt %d): %s", len(alerts), peer.shown, peer.failures, error)
            if m:
                m.deliveries.labels(RECEIVER_LABEL, "failed").inc()
                m.retries.labels(RECEIVER_LABEL).inc()
            return False
        peer.failures = 0
        peer.retry_at = float("-inf")
        if m:
            done = self._clock()
            m.deliveries.labels(RECEIVER_LABEL, "delivered").inc()
            for a in alerts:
                m.delivery_latency.labels(RECEIVER_LABEL).observe(max(0.0, done - a.updated_at))
        return True

    def _retention(self, now: float) -> None:
        """Alerts resolved long enough ago that every full re-send since carried the resolution."""
        horizon = now - self._keep_resolved_s
        with self._engine.begin() as conn:
            conn.execute(sa.delete(db.alerts).where(db.alerts.c.ends_at < horizon))
        # Also the bound of every peer's `sent`: what it holds ended within keep_resolved_s (or
        # goes on), the alerts a full re-send would post anyway.
        for peer in self._peers:
            peer.sent = {fp: v for fp, v in peer.sent.items() if v[1] >= horizon}

    def close(self) -> None:
        self._client.close()
