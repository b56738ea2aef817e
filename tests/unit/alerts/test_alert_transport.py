"""Outbound alert requests end by their deadline, however slowly the other side answers.

A hostile review (2026-12-07): httpx's timeout bounds each read, so a receiver or Alertmanager peer
that sent a byte just before each read timed out held the request as long as it liked: a 0.3 s
webhook attempt took 5 s (past its 1 s claim: the row was sent again), and one trickling peer held
the post to the healthy peer for 30 s. The servers here are real sockets on free ports.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from pipeline.alerts.alertmanager import AlertmanagerPusher
from pipeline.alerts.delivery import Dispatcher
from pipeline.alerts.engine import AlertEngine
from pipeline.alerts.model import GeneratorLinks, WebhookMessage
from pipeline.alerts.outbox import Notification, Outbox
from pipeline.alerts.receivers.base import build_receivers
from pipeline.alerts.rules import parse_rules
from pipeline.alerts.settings import AlertmanagerSettings, DeliverySettings, ReceiverSettings
from pipeline.alerts.state import create_db_engine
from pipeline.alerts.transport import MAX_REPLY_BYTES, alert_client, post_within
from pipeline.localinfra.webhook_receiver import WebhookReceiverServer

# Long enough that only a deadline ends the exchange inside a test: 150 bytes, one per 0.2 s (30 s),
# each byte sooner than any timeout below, so no single read times out.
TRICKLE_BYTES, TRICKLE_GAP_S = 150, 0.2
# The bound asserted below: a few deadlines, far under the 30 s a trickle holds a request.
BOUND_S = 5.0


@contextmanager
def trickling_server(where: str) -> Iterator[str]:
    """An HTTP server that trickles its reply one byte at a time: the status line and headers
    (``where="head"``), or the body after a prompt ``200 OK`` and its headers (``"body"``); or a
    black hole that accepts connections (the kernel's backlog) and never answers (``"silent"``)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    stop = threading.Event()
    if where == "silent":
        try:
            yield f"http://127.0.0.1:{server.getsockname()[1]}"
        finally:
            server.close()
        return

    def handle(conn: socket.socket) -> None:
        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % TRICKLE_BYTES
                if where == "body":
                    conn.sendall(head)
                    slow = b"x" * TRICKLE_BYTES
                else:
                    slow = head + b"x" * TRICKLE_BYTES
                for byte in slow:
                    if stop.wait(TRICKLE_GAP_S):
                        return
                    conn.sendall(bytes([byte]))
            except OSError:
                pass

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        server.close()


def test_a_reply_whose_head_trickles_is_a_timeout_at_the_deadline() -> None:
    with trickling_server("head") as url, alert_client() as client:
        started = time.monotonic()
        with pytest.raises(httpx.TimeoutException, match="no reply within 0.4s"):
            post_within(client, url, content=b"{}", headers={}, timeout_s=0.4)
        assert time.monotonic() - started < BOUND_S


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:  # noqa: ANN001
    """A self-signed certificate for localhost (cryptography, a dependency of the lake's cipher)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))  # fmt: skip
    return folder / "cert.pem", folder / "key.pem"


def test_an_https_reply_whose_head_trickles_is_a_timeout_at_the_deadline(tls_files) -> None:  # noqa: ANN001
    """A review of this change (2026-12-07): TLS wraps the TCP socket the trace first saw, so an
    HTTPS receiver (every Slack webhook) trickling its head outlived the deadline."""
    import ssl

    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        stop = threading.Event()

        def answer() -> None:
            conn, _ = server.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                try:
                    tls.recv(65536)
                    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * TRICKLE_BYTES + b"\r\nContent-Length: 2\r\n\r\nok":
                        if stop.wait(TRICKLE_GAP_S):
                            return
                        tls.sendall(bytes([byte]))
                except OSError:
                    pass

        threading.Thread(target=answer, daemon=True).start()
        client = httpx.Client(verify=ssl.create_default_context(cafile=str(cert)), follow_redirects=False,
                              limits=httpx.Limits(max_keepalive_connections=0))
        started = time.monotonic()
        try:
            with pytest.raises(httpx.TimeoutException, match="no reply within 0.5s"):
                post_within(client, f"https://localhost:{server.getsockname()[1]}/", content=b"{}", headers={}, timeout_s=0.5)
            assert time.monotonic() - started < BOUND_S
        finally:
            stop.set()
            client.close()


def test_a_2xx_whose_body_trickles_is_accepted_at_the_deadline() -> None:
    """The status is the answer: sending the notification again would notify twice."""
    with trickling_server("body") as url, alert_client() as client:
        started = time.monotonic()
        response = post_within(client, url, content=b"{}", headers={}, timeout_s=0.4)
        assert time.monotonic() - started < BOUND_S
    assert response.status_code == 200 and len(response.content) < TRICKLE_BYTES


def test_a_kept_alive_connection_is_bounded_too() -> None:
    """A caller's client that reuses connections: the second request opens none, and its socket is
    taken from the reply (its body trickles here)."""
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(TRICKLE_BYTES))
            self.end_headers()
            self.wfile.flush()
            if self.path == "/slow":
                for _ in range(TRICKLE_BYTES):
                    time.sleep(TRICKLE_GAP_S)
                    self.wfile.write(b"x")
                    self.wfile.flush()
            else:
                self.wfile.write(b"x" * TRICKLE_BYTES)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with httpx.Client() as client:  # keeps connections alive
            assert post_within(client, f"{base}/fast", content=b"{}", headers={}, timeout_s=2).status_code == 200
            started = time.monotonic()
            response = post_within(client, f"{base}/slow", content=b"{}", headers={}, timeout_s=0.4)
            assert time.monotonic() - started < BOUND_S
    finally:
        server.shutdown()
        server.server_close()
    assert hits == ["/fast", "/slow"] and response.status_code == 200


def test_a_fast_endless_error_body_is_read_only_up_to_the_cap() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            conn, _ = server.accept()
            with conn:
                while b"\r\n\r\n" not in conn.recv(65536):
                    pass
                conn.sendall(b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n")
                chunk = b"e" * 65536
                try:
                    for _ in range(2048):  # 128 MiB if read to the end
                        conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                except OSError:
                    pass  # the client stopped reading

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with alert_client() as client:
            response = post_within(client, f"http://127.0.0.1:{server.getsockname()[1]}", content=b"{}", headers={},
                                   timeout_s=10)  # fmt: skip
    assert response.status_code == 500 and MAX_REPLY_BYTES <= len(response.content) < 2 * MAX_REPLY_BYTES
    assert response.text.startswith("eee")


def _message(receiver: str) -> WebhookMessage:
    return WebhookMessage(groupKey="g", status="firing", receiver=receiver, groupLabels={}, commonLabels={},
                          commonAnnotations={}, externalURL="", alerts=[])  # fmt: skip


@pytest.mark.parametrize("where", ["head", "body", "silent"])
def test_a_slow_receiver_neither_outlives_its_claims_nor_holds_up_the_others(tmp_path: Path, where: str) -> None:
    """A black-holed webhook held up every other receiver (an on-call review, 2026-12-06); one
    that trickles its reply did until the total deadline (a hostile review, 2026-12-07)."""
    with trickling_server(where) as slow_url, WebhookReceiverServer(secret="s") as fast:
        receivers = build_receivers([
            ReceiverSettings(name="slow", type="webhook", url=SecretStr(slow_url + "/"), secret=SecretStr("s"), timeout_s=0.3),
            ReceiverSettings(name="fast", type="webhook", url=SecretStr(fast.url), secret=SecretStr("s"), timeout_s=0.3),
        ])  # fmt: skip
        store = create_db_engine(f"sqlite:///{tmp_path / 'a.db'}")
        outbox = Outbox(store)
        now = time.time()
        with store.begin() as conn:
            for i in range(20):
                outbox.enqueue(conn, Notification(f"slow-{i}", "slow", "g", _message("slow")), now)
            outbox.enqueue(conn, Notification("fast-0", "fast", "g", _message("fast")), now + 0.001)
        settings = DeliverySettings(claim_ttl_s=1.0, concurrency=1, retry_initial_s=60)
        dispatcher = Dispatcher(store, None, receivers, settings)
        try:
            started = time.monotonic()
            dispatcher.run_once()
            tick_s = time.monotonic() - started
        finally:
            dispatcher.stop()
        states = {r.idempotency_key: r.state for r in outbox.rows(limit=100)}
    assert tick_s < settings.claim_ttl_s  # the batch ended before its claims expired (5 s before)
    assert states["fast-0"] == "delivered" and [r.path for r in fast.requests] == ["/"]
    # A head that never came is a failed attempt, retried later; a 200 whose body trickles was accepted.
    assert states["slow-0"] == ("delivered" if where == "body" else "pending")


def test_a_trickling_alertmanager_peer_does_not_hold_up_the_next_peer(tmp_path: Path, verdict) -> None:  # noqa: ANN001
    got: list[float] = []

    class Healthy(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            got.append(time.monotonic())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    healthy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthy)
    threading.Thread(target=healthy.serve_forever, daemon=True).start()
    store = create_db_engine(f"sqlite:///{tmp_path / 'am.db'}")
    engine = AlertEngine(parse_rules("version: 1\nrules:\n  - {name: crit, kind: verdict, severity: critical}\n"))
    engine.observe([verdict(at=time.time())])
    with store.begin() as conn:
        engine.save(conn)
    try:
        with trickling_server("head") as slow_url:
            settings = AlertmanagerSettings(
                urls=[SecretStr(slow_url), SecretStr(f"http://127.0.0.1:{healthy.server_address[1]}")], timeout_s=0.5
            )
            pusher = AlertmanagerPusher(store, settings, GeneratorLinks(base_url=""))
            started = time.monotonic()
            pusher.tick()
    finally:
        healthy.shutdown()
        healthy.server_close()
    assert len(got) == 1 and got[0] - started < BOUND_S  # 30 s before
    assert pusher.pending() == 1  # the trickling peer still owes the alert: retried later
