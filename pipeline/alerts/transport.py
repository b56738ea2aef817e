"""POST with a deadline on the whole exchange, for every outbound alert request.

httpx's ``timeout`` bounds each network operation, not the request: a receiver, an Alertmanager
peer or a proxy in front of one that answers a byte just before each read times out holds the
request for as long as it likes (a hostile review, 2026-12-07: 25 bytes trickled at 0.2 s kept a
0.3 s webhook attempt for 5 s, past its 1 s claim, so the row was sent again; one peer trickling
its reply held the next peer's post for 30 s). httpx has no total timeout and a blocked read is
not woken by closing its socket, so a timer shuts the connection's socket down at the deadline:
the read returns, and the attempt fails as a timeout (retried like any other).

The socket is taken from httpcore's ``trace`` events when the connection is opened (and again
after its TLS handshake, which wraps it) and, for a
kept-alive connection, from the response's ``network_stream`` once its headers are in. The clients
made here keep no idle connections, so every attempt opens one and is bounded from its first byte;
a client given by a caller that reuses connections is bounded from the reply's headers on.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from typing import Any

import httpx

# Read at most this much of a reply: only the status and the first 200 characters are used, and a
# fast endless body would otherwise fill the process's memory before the deadline.
MAX_REPLY_BYTES = 64 * 1024


def alert_client() -> httpx.Client:
    """The HTTP client for alert delivery: no redirects followed (a receiver's 3xx is an
    answer, not a place to post evidence to), no idle connections kept (see the module doc)."""
    return httpx.Client(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0))


class _Deadline:
    """Shut down every socket the request uses once ``timeout_s`` has passed."""

    def __init__(self, timeout_s: float) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False
        self._timer = threading.Timer(timeout_s, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        # TLS wraps (and detaches) the TCP socket: the wrapped one is watched from its handshake
        # on, or a trickling HTTPS receiver (every Slack webhook) outlived the deadline until its
        # headers were in (a review of this change, 2026-12-07).
        if event in ("connection.connect_tcp.complete", "connection.connect_unix_socket.complete",
                     "connection.start_tls.complete"):  # fmt: skip
            self.watch(info.get("return_value"))

    def watch(self, stream: Any) -> None:  # an httpcore NetworkStream, or None
        sock = stream.get_extra_info("socket") if stream is not None else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            _shut(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed: the request ended as the deadline came
        pass


def post_within(
    client: httpx.Client, url: str, *, content: bytes, headers: Mapping[str, str], timeout_s: float
) -> httpx.Response:
    """POST ``content`` and read the reply (its first :data:`MAX_REPLY_BYTES`) in about
    ``timeout_s`` in all. Raises ``httpx.TimeoutException`` when no status came by the deadline,
    and any other ``httpx.HTTPError`` as ``client.post`` would. A reply whose status came in time
    is returned with as much of its body as came by the deadline."""
    deadline = _Deadline(timeout_s)
    request = client.build_request(
        "POST", url, content=content, headers=dict(headers), timeout=timeout_s, extensions={"trace": deadline.trace}
    )
    body = bytearray()
    with deadline:
        try:
            response = client.send(request, stream=True)
        except httpx.HTTPError as exc:
            if deadline.fired:
                raise httpx.TimeoutException(f"no reply within {timeout_s:g}s", request=request) from exc
            raise
        try:
            deadline.watch(response.extensions.get("network_stream"))
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= MAX_REPLY_BYTES:
                    break
        except httpx.HTTPError:
            # The status is the answer and it came in time: a 2xx whose body is slow was still
            # accepted (sending it again would notify twice); what came of an error's body is kept.
            if not deadline.fired:
                raise
        finally:
            response.close()
    kept = {k: v for k, v in response.headers.items() if k.lower() not in ("content-encoding", "content-length", "transfer-encoding")}
    return httpx.Response(response.status_code, headers=kept, content=bytes(body[:MAX_REPLY_BYTES]), request=request)
