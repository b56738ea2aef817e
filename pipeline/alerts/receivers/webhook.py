"""Webhook in Alertmanager's format (version 4), signed with HMAC-SHA256 over timestamp and body.

The body is exactly what Alertmanager's webhook receiver sends, so receivers written for
Alertmanager read it unchanged; what Alertmanager does not have travels in headers.

Headers of every request:
- ``X-MM-Timestamp``: Unix seconds when this attempt was signed;
- ``X-MM-Signature``: ``v1=`` + hex HMAC-SHA256(secret, timestamp + "." + body);
- ``Idempotency-Key``: the same for every attempt of one notification (dedup on it).
Receivers check with :func:`verify_signature` (or the stdlib-only snippet in docs/alerting.md).
Signing the timestamp lets receivers reject replays older than their tolerance.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

import httpx

from pipeline.alerts.model import WebhookMessage
from pipeline.alerts.receivers.base import Receiver
from pipeline.alerts.transport import post_within

TIMESTAMP_HEADER = "X-MM-Timestamp"
SIGNATURE_HEADER = "X-MM-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_VERSION = "v1"


class SignatureError(ValueError):
    """A webhook request is not signed by the shared secret, or is too old."""


def sign(secret: str | bytes, timestamp: int, body: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    digest = hmac.new(key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def signed_headers(secret: str | bytes, body: bytes, idempotency_key: str, now: float | None = None) -> dict[str, str]:
    ts = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: sign(secret, ts, body),
        IDEMPOTENCY_HEADER: idempotency_key,
    }


def verify_signature(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: bytes,
    tolerance_s: float = 300.0,
    *,
    now: float | None = None,
) -> None:
    """Raise :class:`SignatureError` unless ``body`` was signed with ``secret`` within
    ``tolerance_s`` of now. ``headers`` lookup is case-insensitive; ``body`` must be the raw
    bytes as received (re-serialised JSON will not verify). Several comma-separated ``v1=``
    values are accepted, so a sender can sign with an old and a new secret while rotating."""
    lower = {k.lower(): v for k, v in headers.items()}
    raw_ts = lower.get(TIMESTAMP_HEADER.lower())
    raw_sig = lower.get(SIGNATURE_HEADER.lower())
    if not raw_ts or not raw_sig:
        raise SignatureError(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        ts = int(raw_ts)
    except ValueError as exc:
        raise SignatureError(f"{TIMESTAMP_HEADER} is not an integer") from exc
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance_s:
        raise SignatureError(f"timestamp {ts} is outside the {tolerance_s:g}s tolerance")
    expected = sign(secret, ts, body)
    if not any(hmac.compare_digest(expected, candidate.strip()) for candidate in raw_sig.split(",")):
        raise SignatureError("signature does not match the body")


class WebhookReceiver(Receiver):
    name = "webhook"

    def send(self, client: httpx.Client, message: WebhookMessage, idempotency_key: str) -> httpx.Response:
        assert self.settings.secret is not None  # enforced by ReceiverSettings
        body = message.to_json().encode()
        # Signed with the wall clock: the timestamp is about this transmission's freshness
        # (replay window), whatever time the alerts are about.
        headers = signed_headers(self.settings.secret.get_secret_value(), body, idempotency_key)
        return post_within(
            client, self.settings.url.get_secret_value(), content=body, headers=headers, timeout_s=self.settings.timeout_s
        )
