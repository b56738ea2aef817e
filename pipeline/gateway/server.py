"""Serving an ASGI app with uvicorn: in the foreground (the CLI) or in a thread (tests, benchmarks).

uvicorn picks uvloop and httptools when installed (they are in the ``gateway`` extra): on two
cores they are what lets one proxy process reach hundreds of requests per second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

UVICORN_OPTIONS: dict[str, Any] = {"loop": "auto", "log_level": "warning", "access_log": False}


class _ConnectionDeadlines:
    """Mixed into the HTTP protocol uvicorn picks (httptools, else h11): the limits uvicorn lacks.

    uvicorn times a connection only while it is idle between requests (``timeout_keep_alive``).
    A connection that sends half a request head and stops was held for good, and httptools kept
    every byte of an unfinished head: in a hostile review (2026-12-06) 300 such connections made
    a gateway limited to 256 open files answer every other client 502 for as long as they stayed
    (90 s and counting), and one endless header line grew it from 71 to 346 MB in 200 MB. Here:

    - the head of each request must be complete within ``head_timeout_s`` of the connection
      opening (or of the request's first byte, on a kept-alive connection) and within
      ``max_head_bytes``; else ``408`` (``431``) and the connection is closed. A connection that
      sent nothing is closed without an answer;
    - a request answered before its body was read whole (a refusal: 413, 503) has
      ``drain_timeout_s`` for the rest of its body, which uvicorn reads and discards so that the
      client reads its answer rather than a reset; then the connection is closed.

    The time a body may take while the app reads it is the app's (``gateway.body_timeout_s``).
    A head is complete when uvicorn starts a new request cycle: both protocols set ``self.cycle``
    then. Beyond that this reads only a cycle's ``more_body`` and ``response_complete`` and
    extends ``on_response_complete``, the same in both; tests/unit/test_gateway_slow_clients.py
    runs on each.
    """

    head_timeout_s: float
    drain_timeout_s: float
    max_head_bytes: int
    on_refused: Callable[[str], None]
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    cycle: Any

    def connection_made(self, transport: asyncio.Transport) -> None:
        self._deadline: asyncio.TimerHandle | None = None
        self._timing_head = False
        self._head_bytes = 0
        super().connection_made(transport)  # type: ignore[misc]
        self._time_head()

    def _time_head(self) -> None:
        self._timing_head, self._head_bytes = True, 0
        self._deadline = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _untime(self) -> None:
        self._timing_head = False
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def data_received(self, data: bytes) -> None:
        before = self.cycle
        if self._deadline is None and (before is None or not before.more_body):
            self._time_head()  # bytes after a whole request: the next request's head
        super().data_received(data)  # type: ignore[misc]
        if self.cycle is not before:
            self._untime()  # a head is complete: the request is the app's now
        elif self._timing_head:
            # Counted per read, after it is parsed: a head that arrives whole in one read passes
            # whatever its size (measured on loopback: 100 KB passed, 200 KB got 431). What is
            # bounded is the memory an unfinished head can hold.
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes and not self.transport.is_closing():
                self._refuse(431, "Request Header Fields Too Large", "head_too_large",
                             f"The request head is over this gateway's limit of {self.max_head_bytes} bytes.")  # fmt: skip

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        cycle = self.cycle  # a pipelined request started by the call above has no response yet
        if cycle is not None and cycle.response_complete and cycle.more_body and not self.transport.is_closing():
            self._untime()  # answered before its body was read whole: the rest has a deadline
            self._deadline = self.loop.call_later(self.drain_timeout_s, self.transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        self._untime()
        super().connection_lost(exc)  # type: ignore[misc]

    def _head_timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self._refuse(408, "Request Timeout", "head_timeout",
                         f"The request head did not arrive within this gateway's {self.head_timeout_s:g} s.")  # fmt: skip

    def _refuse(self, status: int, phrase: str, reason: str, message: str) -> None:
        """Answer ``status`` and close where the answer cannot cut into another (part of a head
        arrived, no response is on its way), else close only. Counted either way."""
        answerable = self._head_bytes > 0 and (self.cycle is None or self.cycle.response_complete)
        self._untime()
        self.on_refused(reason)
        if answerable:
            body = json.dumps({"error": {"message": message, "type": "invalid_request_error", "param": None,
                                         "code": reason}}).encode()  # fmt: skip
            self.transport.write(b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
                                 b"connection: close\r\n\r\n%s" % (status, phrase.encode(), len(body), body))  # fmt: skip
        self.transport.close()


def http_protocol(app: Any) -> Any:
    """What uvicorn serves ``app`` with: for the gateway's app (it carries its ``Gateway``), the
    protocol with its connection deadlines from its settings; for any other app, uvicorn's own."""
    gateway = getattr(getattr(app, "state", None), "gateway", None)
    if gateway is None:
        return "auto"
    settings = gateway.settings
    limits = {"head_timeout_s": settings.head_timeout_s, "drain_timeout_s": settings.body_timeout_s,
              "max_head_bytes": settings.max_head_bytes, "on_refused": staticmethod(gateway.refused_by_server)}  # fmt: skip
    return type("GatewayHTTPProtocol", (_ConnectionDeadlines, AutoHTTPProtocol), limits)


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (port 0: a free one, read back with ``getsockname``).

    Bound here rather than by uvicorn so that the caller learns the real port before serving
    (``gateway --port 0`` printed port 0) and a busy port is an OSError it can phrase.
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def serve(app: Any, sock: socket.socket) -> bool:
    """Serve on ``sock`` until SIGINT/SIGTERM; the app's lifespan drains the logging queue on the
    way out. Returns False if the server never started (its lifespan failed; uvicorn logged why)."""
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on", http=http_protocol(app), **UVICORN_OPTIONS))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return server.started


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on a free port in a daemon thread; yields its base URL, shuts down after."""
    sock = bind(host, 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", http=http_protocol(app), **UVICORN_OPTIONS))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"uvicorn-{port}")
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout_s)
        sock.close()
