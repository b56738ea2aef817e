"""Serving an ASGI app with uvicorn: in the foreground (the CLI) or in a thread (tests, benchmarks).

uvicorn picks uvloop and httptools when installed (they are in the ``gateway`` extra): on two
cores they are what lets one proxy process reach hundreds of requests per second.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

UVICORN_OPTIONS: dict[str, Any] = {"loop": "auto", "http": "auto", "log_level": "warning", "access_log": False}


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
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, lifespan="on", **UVICORN_OPTIONS))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
    return server.started


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on a free port in a daemon thread; yields its base URL, shuts down after."""
    sock = bind(host, 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", **UVICORN_OPTIONS))
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
