"""Serving an ASGI app with uvicorn: in the foreground (the CLI) or in a thread (tests, benchmarks).

uvicorn picks uvloop and httptools when installed (they are in the ``gateway`` extra): on two
cores they are what lets one proxy process reach hundreds of requests per second.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

UVICORN_OPTIONS: dict[str, Any] = {"loop": "auto", "http": "auto", "log_level": "warning", "access_log": False}


def serve(app: Any, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; the app's lifespan drains the logging queue on the way out."""
    uvicorn.run(app, host=host, port=port, lifespan="on", **UVICORN_OPTIONS)


@contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on a free port in a daemon thread; yields its base URL, shuts down after."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
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
