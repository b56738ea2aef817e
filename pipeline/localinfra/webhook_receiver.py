"""A real local HTTP receiver for alert deliveries (tests, bench, and a reference receiver).

It does what a well-behaved production receiver should: verify the HMAC signature (when given
a secret) and drop repeated idempotency keys, answering 2xx to both so the sender stops
retrying. It records every request, can be taken "down" (503) and can hold requests open, so
tests can check what the dispatcher does while a receiver is failing or slow. Runs in a thread
of the current process (or ``python -m pipeline.localinfra.webhook_receiver --port N``).
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pipeline.alerts.receivers.webhook import IDEMPOTENCY_HEADER, SignatureError, verify_signature
from pipeline.localinfra.base import LOOPBACK, port_arg


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float
    duplicate: bool
    signature_ok: bool | None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiverServer:
    secret: str | None = None
    host: str = LOOPBACK
    port: int = 0
    tolerance_s: float = 300.0
    requests: list[ReceivedRequest] = field(default_factory=list)
    # key -> first accepted request: what a receiver that deduplicates keeps.
    accepted: dict[str, ReceivedRequest] = field(default_factory=dict)
    down: bool = False
    hold_s: float = 0.0
    # Requests received but not yet answered (tests check the sender's state meanwhile).
    in_flight: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> WebhookReceiverServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server naming
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender went away mid-body (kill -9): an aborted request, not a delivery
                    # with a bad signature (a flake of test_alert_crash.py, 2026-12-04).
                    self.close_connection = True
                    return
                owner._handle(self, body)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="webhook-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> WebhookReceiverServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        headers = {k: v for k, v in handler.headers.items()}
        with self._changed:
            self.in_flight += 1
            self._changed.notify_all()
        if self.hold_s:
            time.sleep(self.hold_s)
        signature_ok: bool | None = None
        if self.secret is not None:
            try:
                verify_signature(self.secret, headers, body, self.tolerance_s)
                signature_ok = True
            except SignatureError:
                signature_ok = False
        key = {k.lower(): v for k, v in headers.items()}.get(IDEMPOTENCY_HEADER.lower(), "")
        with self._changed:
            if self.down:
                status = 503
                duplicate = False
            elif signature_ok is False:
                status = 401
                duplicate = False
            else:
                duplicate = bool(key) and key in self.accepted
                status = 200
            req = ReceivedRequest(handler.path, headers, body, time.time(), duplicate, signature_ok)
            self.requests.append(req)
            if status == 200 and key and not duplicate:
                self.accepted[key] = req
            self.in_flight -= 1
            self._changed.notify_all()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.end_headers()
        handler.wfile.write(json.dumps({"duplicate": duplicate}).encode())

    def wait_for(self, predicate: Any, timeout_s: float) -> bool:
        """Block until ``predicate(self)`` is true (re-checked on every request)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(min(remaining, 0.2))
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=port_arg, default=0, help="0 (default): any free port")
    parser.add_argument("--secret", default=None)
    args = parser.parse_args(argv)
    try:
        server = WebhookReceiverServer(secret=args.secret, port=args.port).start()
    except OSError as exc:  # the port is taken: one line, exit 2 (README, "Exit codes")
        print(f"webhook_receiver: cannot listen on {LOOPBACK}:{args.port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(server.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
