"""Clients that send a request slowly, or never finish it (a hostile review, 2026-12-06).

uvicorn times a connection only while it is idle between requests. Before
``gateway.head_timeout_s``, ``max_head_bytes`` and ``body_timeout_s``:
- 300 connections that each sent half a request head held a gateway limited to 256 open files,
  and every other client got 502 for as long as they stayed (90 s and counting; a /tmp probe);
- one header line that never ended grew the gateway from 71 to 346 MB in 200 MB sent;
- bodies sent slowly and never finished held their share of ``max_inflight_request_bytes`` for
  as long as their clients kept the connections, so other clients got 503 all that time.

A real upstream (tests/fixtures/vllm_like.py) and the gateway served by uvicorn as the CLI serves
it, both on free ports; raw sockets play the clients.
"""

from __future__ import annotations

import contextlib
import socket
import time

import httpx
import pytest
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from pipeline.gateway import server
from pipeline.gateway.server import serve_in_thread
from tests.fixtures.vllm_like import Reply, VllmLike
from tests.unit.test_gateway_hostile_app import CHAT_HEAD, _chat_body, _gateway, _inflight, _start_upload, _wait_for

FAST = {"head_timeout_s": 0.5, "body_timeout_s": 0.5}


@pytest.fixture(params=[HttpToolsProtocol, H11Protocol], ids=["httptools", "h11"])
def protocol(request, monkeypatch):
    """Both HTTP implementations uvicorn may pick (httptools when installed, else h11)."""
    monkeypatch.setattr(server, "AutoHTTPProtocol", request.param)
    return request.param


def _connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=10)


def _until_closed(sock: socket.socket, timeout_s: float = 10.0) -> tuple[bytes, float]:
    """Everything the gateway sent until it closed the connection, and how long that took."""
    started = time.monotonic()
    data = b""
    with contextlib.closing(sock):
        sock.settimeout(timeout_s)
        while True:
            try:
                piece = sock.recv(65536)
            except ConnectionResetError:
                break
            if not piece:
                break
            data += piece
    return data, time.monotonic() - started


def _count(metrics, route: str, status: str) -> float | None:
    return metrics.registry.get_sample_value("mm_gateway_requests_total", {"route": route, "status": status})


def test_half_a_head_is_answered_408_and_closed_and_a_silent_connection_is_closed(tmp_path, protocol):
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, **FAST)
        with serve_in_thread(app) as url:
            half = _connect(url)
            half.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n")  # and nothing more
            silent = _connect(url)
            answer, took = _until_closed(half)
            nothing, _ = _until_closed(silent)
            served = httpx.post(f"{url}/v1/chat/completions", content=_chat_body("hello"))
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower(), answer
    assert b'"code": "head_timeout"' in answer
    assert took < 5
    assert nothing == b""  # nothing to answer: no request had begun
    assert _count(metrics, "unknown", "head_timeout") == 2
    assert served.status_code == 200 and len(upstream.requests) == 1 and len(producer.logs) == 1


def test_a_head_over_max_head_bytes_is_answered_431_before_more_is_held(tmp_path, protocol):
    """An endless header line: httptools kept every byte of it (71 -> 346 MB for 200 MB sent)."""
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, _, metrics = _gateway(upstream_url, tmp_path, max_head_bytes=8192)
        with serve_in_thread(app) as url:
            sock = _connect(url)
            sent = 0
            with contextlib.suppress(OSError):  # the gateway closes while we still send
                sock.sendall(CHAT_HEAD + b"X-Pad: ")
                for _ in range(512):
                    sock.sendall(b"a" * 65536)
                    sent += 65536
            answer, _ = _until_closed(sock)
    assert sent < 512 * 65536  # closed: 32 MiB could not all be sent (socket buffers hold a few)
    if protocol is HttpToolsProtocol:  # h11 refuses an unfinished head over 16 KiB itself, with its own 400
        assert answer.startswith(b"HTTP/1.1 431 ") and b'"code": "head_too_large"' in answer, answer[:200]
        assert _count(metrics, "unknown", "head_too_large") == 1
    else:
        assert answer.startswith(b"HTTP/1.1 4"), answer[:200]
    assert upstream.requests == []


def test_a_kept_alive_connection_times_the_head_of_its_next_request(tmp_path, protocol):
    upstream = VllmLike()
    body = _chat_body("hello")
    with serve_in_thread(upstream.app) as upstream_url:
        app, _, metrics = _gateway(upstream_url, tmp_path, **FAST)
        with serve_in_thread(app) as url:
            sock = _connect(url)
            sock.sendall(CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body)
            first = sock.recv(65536)
            sock.sendall(b"POST /v1/chat/comp")  # the next request begins, and stops
            rest, _ = _until_closed(sock)
    assert first.startswith(b"HTTP/1.1 200 "), first[:200]
    assert rest.startswith(b"HTTP/1.1 408 "), rest[:200]
    assert _count(metrics, "unknown", "head_timeout") == 1 and len(upstream.requests) == 1


def test_requests_that_take_their_time_in_the_app_are_not_cut(tmp_path, protocol):
    """The deadlines are on what the client sends: a streamed answer that takes several head
    timeouts, two requests pipelined in one send, and a kept-alive connection idle between
    requests for less than uvicorn's keep-alive are all served whole."""
    upstream = VllmLike(script={"long story": Reply(content="word " * 40)}, token_delay_s=0.05)  # 50 pieces
    slow = b'{"model": "m", "stream": true, "messages": [{"role": "user", "content": "tell me a long story"}]}'
    body = _chat_body("hello")
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, **FAST)
        with serve_in_thread(app) as url:
            started = time.monotonic()
            streamed = httpx.post(f"{url}/v1/chat/completions", content=slow, timeout=30)
            took = time.monotonic() - started
            with httpx.Client(base_url=url) as client:
                again = [client.post("/v1/chat/completions", content=body).status_code for _ in range(2)]
                time.sleep(1.0)  # two head timeouts, idle: uvicorn's keep-alive (5 s) is the one that applies
                again.append(client.post("/v1/chat/completions", content=body).status_code)
            sock = _connect(url)
            one = CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body) + body
            sock.sendall(one + one)
            sock.settimeout(10)
            answers = b""
            while answers.count(b"HTTP/1.1 200 ") < 2:
                piece = sock.recv(65536)
                assert piece, answers
                answers += piece
            sock.close()
    assert took > 4 * FAST["head_timeout_s"], took  # the stream really took longer than a head may
    assert streamed.status_code == 200 and streamed.text.rstrip().endswith("data: [DONE]")
    assert again == [200, 200, 200]
    _wait_for(lambda: len(producer.logs) == 6)
    assert _count(metrics, "unknown", "head_timeout") is None


def test_a_body_not_all_there_in_time_is_answered_408_and_gives_back_what_it_held(tmp_path, protocol):
    """Bodies sent slowly held max_inflight_request_bytes for as long as their clients stayed:
    here two of them fill it, a third client gets 503 until body_timeout_s frees it, then 200."""
    upstream = VllmLike()
    body = _chat_body("x" * 400_000)
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, max_request_bytes=512 * 1024,
                                          max_inflight_request_bytes=1 << 20, body_timeout_s=1.5)  # fmt: skip
        with serve_in_thread(app) as url:
            held = [_start_upload(url, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body), body[:-10]) for _ in range(2)]
            _wait_for(lambda: _inflight(url) == 2 * (len(body) - 10))
            refused = httpx.post(f"{url}/v1/chat/completions", content=body)
            answers = [_until_closed(sock)[0] for sock in held]
            left = _inflight(url)
            served = httpx.post(f"{url}/v1/chat/completions", content=body)
    assert refused.status_code == 503
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 ") and b'"code":"request_timeout"' in answer, answer[:300]
    assert left == 0 and served.status_code == 200
    assert _count(metrics, "chat.completions", "body_timeout") == 2
    assert len(upstream.requests) == 1 and len(producer.logs) == 1  # the slow ones were never forwarded


def test_the_rest_of_a_refused_body_has_a_deadline_too(tmp_path, protocol):
    """A body refused 413 by its declared length is read and thrown away, so that the client
    reads the answer instead of a reset; a client that goes on sending it for ever was held for
    ever. Now the connection is closed body_timeout_s after the answer."""
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, _, metrics = _gateway(upstream_url, tmp_path, max_request_bytes=64 * 1024, **FAST)
        with serve_in_thread(app) as url:
            sock = _connect(url)
            sock.sendall(CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % (1 << 30))
            sock.settimeout(10)
            answer = sock.recv(65536)
            started = time.monotonic()
            closed_after = None
            with contextlib.suppress(OSError):
                while time.monotonic() - started < 10:
                    sock.sendall(b"x" * 1024)  # a trickle, never the whole gigabyte
                    time.sleep(0.05)
            closed_after = time.monotonic() - started
            sock.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert closed_after < 5, closed_after
    assert _count(metrics, "chat.completions", "too_large") == 1 and upstream.requests == []
