"""Webhook signing: what a receiver checks with verify_signature."""

from __future__ import annotations

import time

import pytest

from pipeline.alerts.receivers.webhook import SignatureError, sign, signed_headers, verify_signature

SECRET = "whsec-test"
BODY = b'{"status":"firing","alerts":[]}'


def test_signed_request_verifies() -> None:
    headers = signed_headers(SECRET, BODY, "key-1")
    verify_signature(SECRET, headers, BODY, tolerance_s=300)
    # Header names are case-insensitive, as HTTP frameworks hand them over differently.
    verify_signature(SECRET, {k.lower(): v for k, v in headers.items()}, BODY, tolerance_s=300)
    assert headers["Idempotency-Key"] == "key-1"


def test_tampered_body_fails() -> None:
    headers = signed_headers(SECRET, BODY, "key-1")
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, headers, BODY.replace(b"firing", b"resolved"), tolerance_s=300)


def test_wrong_secret_fails() -> None:
    headers = signed_headers("other-secret", BODY, "key-1")
    with pytest.raises(SignatureError):
        verify_signature(SECRET, headers, BODY, tolerance_s=300)


def test_tampered_timestamp_fails() -> None:
    headers = signed_headers(SECRET, BODY, "key-1")
    headers["X-MM-Timestamp"] = str(int(headers["X-MM-Timestamp"]) + 1)
    with pytest.raises(SignatureError, match="does not match"):
        verify_signature(SECRET, headers, BODY, tolerance_s=300)


def test_replayed_old_request_fails_outside_tolerance() -> None:
    old = time.time() - 600
    headers = signed_headers(SECRET, BODY, "key-1", now=old)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_signature(SECRET, headers, BODY, tolerance_s=300)
    verify_signature(SECRET, headers, BODY, tolerance_s=300, now=old + 10)


def test_missing_headers_fail() -> None:
    with pytest.raises(SignatureError, match="missing"):
        verify_signature(SECRET, {}, BODY)


def test_any_of_several_signatures_verifies_during_secret_rotation() -> None:
    ts = int(time.time())
    headers = {"X-MM-Timestamp": str(ts), "X-MM-Signature": f"{sign('old', ts, BODY)}, {sign(SECRET, ts, BODY)}"}
    verify_signature(SECRET, headers, BODY)


def test_the_stdlib_snippet_in_the_docs_verifies_our_signatures() -> None:
    """Receivers copy this snippet from docs/alerting.md; it must keep agreeing with the signer."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[3] / "docs" / "alerting.md").read_text()
    snippet = doc.split("Without it (standard library only):", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(snippet, namespace)  # noqa: S102 - our own documentation
    verify = namespace["verify"]
    headers = signed_headers(SECRET, BODY, "key-1")
    assert verify(SECRET.encode(), headers, BODY) is True  # type: ignore[operator]
    assert verify(SECRET.encode(), headers, BODY + b" ") is False  # type: ignore[operator]


def test_the_receiver_drops_a_request_whose_sender_died_mid_body() -> None:
    """A sender killed mid-request (kill -9) left a short body, which the receiver recorded as a
    delivery with a bad signature and test_alert_crash.py then failed on (one rehearsal in about
    twenty-five, 2026-12-04). A request shorter than its Content-Length is not a request."""
    import socket

    from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

    body = b'{"alert": "x"}'
    with WebhookReceiverServer(secret="s3cret") as receiver:
        host, port = receiver.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(b"POST /hook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n" + body)
            conn.shutdown(socket.SHUT_WR)  # the rest never comes
            conn.settimeout(10)
            assert conn.recv(1024) == b""  # no answer: the connection is closed
        headers = signed_headers("s3cret", body, "key-1")
        import httpx

        done = httpx.post(receiver.url, content=body, headers=headers, timeout=10)
        assert done.status_code == 200
        assert [r.signature_ok for r in receiver.requests] == [True]  # only the whole request
