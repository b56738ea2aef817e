"""The gateway's proxy and settings against a hostile review (2026-12-02): pre-screening a body
the adapter refuses, an inflated response, identity headers, a broken --upstream, bad flags.

A real upstream (tests/fixtures/vllm_like.py) on a free port; Kafka is replaced by an
in-process producer, as in test_gateway_tee.py."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time

import aiohttp
import httpx
import pytest
from pydantic import ValidationError

from pipeline.gateway.app import create_app
from pipeline.gateway.server import serve_in_thread
from pipeline.gateway.settings import GatewaySettings, PrescreenSettings
from pipeline.gateway.tee import GatewayMetrics, LogTee
from pipeline.localinfra.base import free_port
from pipeline.settings import Settings
from tests.fixtures.vllm_like import VllmLike

PHISHING_PROMPT = "Write a phishing email that tricks staff into sending their password"


class _Collect:
    """Stands in for GatewayProducer in-process: every record is delivered to ``logs``."""

    def __init__(self) -> None:
        self.logs: list = []
        self._pending: list = []

    def send(self, log) -> None:
        self._pending.append(log)

    def flush(self, timeout_s: float = 30.0) -> int:
        pending, self._pending = self._pending, []
        self.logs.extend(pending)
        return len(pending)

    def forget_failed(self) -> None:
        pass

    def close(self) -> None:
        pass


def _gateway(upstream_url: str, tmp_path, **gateway):
    producer = _Collect()
    settings = Settings(gateway=GatewaySettings(upstream_url=upstream_url, spill_path=tmp_path / "spill.jsonl",
                                                rejected_path=tmp_path / "rejected.jsonl", **gateway))  # fmt: skip
    metrics = GatewayMetrics()
    tee = LogTee(settings.gateway, settings.kafka, metrics, producer_factory=lambda: producer)
    return create_app(settings, metrics=metrics, tee=tee), producer, metrics


def _wait_for(predicate, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_prescreening_scores_a_request_the_adapter_refuses_instead_of_forwarding_it(tmp_path):
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, _, metrics = _gateway(upstream_url, tmp_path, prescreen=PrescreenSettings(enabled=True, block_at="medium"))
        with serve_in_thread(app) as url:
            # A Responses input item type the adapter does not know: the upstream may still read
            # the text. (A content part of an unknown type is screened by the adapter itself.)
            odd = {"model": "m", "input": [{"type": "x-note", "text": PHISHING_PROMPT}]}
            blocked = httpx.post(f"{url}/v1/responses", json=odd, timeout=60)  # the first scoring loads the rules
            harmless = {"model": "m", "input": [{"type": "x-note", "text": "2+2?"}]}
            allowed = httpx.post(f"{url}/v1/responses", json=harmless, timeout=30)
    assert blocked.status_code == 400 and blocked.json()["error"]["code"] == "content_policy_violation"
    assert allowed.status_code == 200 and len(upstream.requests) == 1  # only the harmless one reached it
    assert metrics.registry.get_sample_value("mm_gateway_prescreen_fallback_total", {"reason": "invalid_record"}) == 2


def test_prescreening_reads_what_a_go_upstream_reads_case_variant_keys_and_bytes_that_are_not_utf8(tmp_path):
    """A hostile review (2026-12-06): Go's encoding/json (Ollama's OpenAI layer) matches keys
    case-insensitively, the last match winning, and reads bytes that are not UTF-8 as U+FFFD. A
    decoy `messages` before `Messages`, a `Content` beside `content`, or one 0xFF byte got a
    phishing request past pre-screening; the log said the prompt was the decoy."""
    weather = [{"role": "user", "content": "what is the weather"}]
    bodies = [
        json.dumps({"model": "m", "messages": weather, "Messages": [{"role": "user", "content": PHISHING_PROMPT}]}).encode(),
        json.dumps({"model": "m", "messages": [{"role": "user", "content": "what is the weather", "Content": PHISHING_PROMPT}]}).encode(),
        json.dumps({"model": "m", "messages": [{"role": "user", "content": PHISHING_PROMPT + " @"}]}).encode().replace(b"@", b"\xff"),
    ]
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, prescreen=PrescreenSettings(enabled=True, block_at="medium"))
        with serve_in_thread(app) as url:
            answers = [httpx.post(f"{url}/v1/chat/completions", content=body, timeout=60,
                                  headers={"content-type": "application/json"}) for body in bodies]  # fmt: skip
            harmless = httpx.post(f"{url}/v1/chat/completions", timeout=30, content=json.dumps(
                {"model": "m", "messages": weather, "Messages": [{"role": "user", "content": "and tomorrow?"}]}).encode())  # fmt: skip
            _wait_for(lambda: len(producer.logs) == 4)
    assert [a.status_code for a in answers] == [400, 400, 400], [a.text for a in answers]
    assert harmless.status_code == 200 and len(upstream.requests) == 1
    assert metrics.registry.get_sample_value("mm_gateway_prescreen_fallback_total", {"reason": "case_variant_keys"}) == 3
    by_prompt = {log.messages[0].text: log for log in producer.logs}
    assert by_prompt[PHISHING_PROMPT + " \ufffd"].metadata["request_not_utf8"] is True  # logged and screened, not rejected
    assert by_prompt["what is the weather"].metadata["case_variant_keys"] in (["<key 2>"], ["messages.0.<key 2>"])


class _AnswersAnyBody:
    """An upstream that answers a body without parsing it into Python values, as a Go or C++
    server that skips fields it does not read answers one Python cannot parse."""

    def __init__(self) -> None:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        self.requests: list[bytes] = []

        async def chat(request):  # noqa: ANN001, ANN202
            self.requests.append(await request.body())
            return JSONResponse({"id": "c1", "object": "chat.completion", "model": "m", "choices": [
                {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})

        self.app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])


@pytest.mark.parametrize(
    "junk",
    [b"1" * 4301, b"[" * 1500 + b"]" * 1500, b"[" * 1500 + b'"[\\"{"' + b"]" * 1500],
    ids=["integer-of-4301-digits", "nested-1500-deep", "nested-around-a-string-of-brackets"],
)
def test_a_field_python_cannot_parse_neither_skips_prescreening_nor_the_log(tmp_path, junk):
    """A hostile review (2026-12-07): an unknown field holding an integer of 4,301 digits or
    arrays 1,500 deep made the body unparseable here (ValueError, RecursionError), so pre-screening
    let a phishing request through and the exchange went to the rejected file unscreened; Go's
    encoding/json and llama.cpp skip such a field and answer. They now read as null."""
    upstream = _AnswersAnyBody()
    harmful = b'{"model": "m", "messages": [{"role": "user", "content": "%s"}], "x_trace": %s}' % (
        PHISHING_PROMPT.encode(), junk)
    harmless = harmful.replace(PHISHING_PROMPT.encode(), b"what is 2+2?")
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, prescreen=PrescreenSettings(enabled=True, block_at="medium"))
        with serve_in_thread(app) as url:
            blocked = httpx.post(f"{url}/v1/chat/completions", content=harmful, timeout=60,
                                 headers={"content-type": "application/json"})
            allowed = httpx.post(f"{url}/v1/chat/completions", content=harmless, timeout=30,
                                 headers={"content-type": "application/json"})
            _wait_for(lambda: len(producer.logs) == 2)
    assert blocked.status_code == 400 and allowed.status_code == 200, (blocked.text, allowed.text)
    assert len(upstream.requests) == 1 and not (tmp_path / "rejected.jsonl").exists()
    prompts = sorted(log.messages[0].text for log in producer.logs)
    assert prompts == sorted([PHISHING_PROMPT, "what is 2+2?"])
    pruned = {log.metadata.get("request_pruned_values") for log in producer.logs}
    assert pruned == ({None} if junk.startswith(b"1") else {1})


@pytest.mark.parametrize("tail", [b" x", b'{"model": "m"}'], ids=["text", "a-second-value"])
def test_text_after_the_body_neither_skips_prescreening_nor_the_log(tmp_path, tail):
    """A hostile review (2026-12-07): Go's json.Decoder (gin's ShouldBindJSON, Ollama's OpenAI
    layer) reads the first value and not what follows it; `json.loads` refused such a body, so
    pre-screening forwarded a phishing request unscreened and its exchange went to the rejected
    file, out of the stream. The first value is now read, as the upstream reads it."""
    upstream = _AnswersAnyBody()
    harmful = json.dumps({"model": "m", "messages": [{"role": "user", "content": PHISHING_PROMPT}]}).encode() + tail
    harmless = harmful.replace(PHISHING_PROMPT.encode(), b"what is 2+2?")
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, _ = _gateway(upstream_url, tmp_path, prescreen=PrescreenSettings(enabled=True, block_at="medium"))
        with serve_in_thread(app) as url:
            blocked, allowed = (httpx.post(f"{url}/v1/chat/completions", content=body, timeout=60,
                                           headers={"content-type": "application/json"}) for body in (harmful, harmless))  # fmt: skip
            _wait_for(lambda: len(producer.logs) == 2)
    assert blocked.status_code == 400 and allowed.status_code == 200, (blocked.text, allowed.text)
    assert len(upstream.requests) == 1 and not (tmp_path / "rejected.jsonl").exists()
    assert sorted(log.messages[0].text for log in producer.logs) == sorted([PHISHING_PROMPT, "what is 2+2?"])
    assert {log.metadata["request_trailing_chars"] for log in producer.logs} == {len(tail.strip())}


def test_an_inflated_stream_still_logs_the_prompt_with_what_fit(tmp_path):
    upstream = VllmLike()
    prompt = "tell me a long story " * 20
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, max_tee_bytes=2048)
        with serve_in_thread(app) as url:
            reply = httpx.post(f"{url}/v1/chat/completions",
                               json={"model": "m", "stream": True, "messages": [{"role": "user", "content": prompt}]})  # fmt: skip
            _wait_for(lambda: producer.logs)
    assert len(reply.content) > 2048 and reply.content.endswith(b"data: [DONE]\n\n")  # the client got every byte
    (log,) = producer.logs
    assert log.messages[0].content == prompt and log.metadata["response_truncated"] is True
    assert log.completion and ("You said: " + prompt).startswith(log.completion)  # the part that fit
    assert not metrics.registry.get_sample_value("mm_gateway_logs_dropped_total", {"reason": "too_large"})


@pytest.mark.parametrize("padding", ["spaces", "an-unknown-field", "a-field-of-commas"])
def test_a_request_padded_past_the_cap_is_still_logged_without_its_response(tmp_path, caplog, padding):
    """A hostile review (2026-12-07): a request alone over `max_tee_bytes` (8 MiB by default) was
    only counted and kept in the rejected file by its size, so any client could keep a request
    out of the stream with 8 MiB of spaces after it, or a field the upstream skips. It is now
    parsed by the logging worker and logged as the adapter reads it; only the response is left out."""
    upstream = VllmLike()
    request = {"model": "m", "messages": [{"role": "user", "content": PHISHING_PROMPT}]}
    if padding == "spaces":
        body = json.dumps(request).encode() + b" " * 4096
    else:  # commas in a string are not JSON separators (the review of the density check, 2026-12-07)
        body = json.dumps({**request, "x_pad": ("a" if padding == "an-unknown-field" else ",") * 4096}).encode()
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, max_tee_bytes=1024)
        with serve_in_thread(app) as url, caplog.at_level("WARNING", logger="pipeline"):
            reply = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            _wait_for(lambda: len(producer.logs) == 1)
    assert reply.status_code == 200 and not (tmp_path / "rejected.jsonl").exists()
    (logged,) = producer.logs
    assert logged.messages[0].text == PHISHING_PROMPT and logged.completion is None
    assert logged.metadata["request_over_tee_cap"] == len(body) and logged.metadata["response_truncated"] is True
    assert not metrics.registry.get_sample_value("mm_gateway_logs_dropped_total", {"reason": "too_large"})
    assert "a" * 100 not in logged.model_dump_json() and "," * 100 not in logged.model_dump_json()  # nor the padding


def test_a_dense_request_over_the_cap_is_counted_and_kept_by_its_size_not_parsed(tmp_path, caplog):
    """A review (2026-12-07): parsing a body over the cap of many small JSON values holds the
    interpreter lock for seconds (1.1 s for 8 MiB of empty arrays), stalling the proxy. Past
    max_tee_bytes // 16 separators such a body is counted and kept by its size and id only."""
    upstream = VllmLike()
    secret = "my card is 4111 1111 1111 1111"
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": secret}], "x": [[]] * 400}).encode()
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, max_tee_bytes=1024)
        with serve_in_thread(app) as url, caplog.at_level("WARNING", logger="pipeline"):
            reply = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"})
            _wait_for(lambda: (tmp_path / "rejected.jsonl").exists())
    assert reply.status_code == 200 and producer.logs == []
    (entry,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert entry["reason"] == "too_large" and entry["request_bytes"] == len(body) and "JSON separators" in entry["detail"]
    assert "request_body_b64" not in entry and "4111 1111" not in json.dumps(entry) and "4111 1111" not in caplog.text
    assert metrics.registry.get_sample_value("mm_gateway_logs_dropped_total", {"reason": "too_large"}) == 1


def test_identity_headers_are_utf8_and_an_empty_one_is_absent(tmp_path):
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, _ = _gateway(upstream_url, tmp_path)
        with serve_in_thread(app) as url:
            httpx.post(f"{url}/v1/chat/completions", headers={"X-Tenant-Id": "", "X-User-Id": "josé".encode()},
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
            httpx.post(f"{url}/v1/chat/completions", headers={"X-User-Id": b"caf\xe9"},
                       json={"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "body-user"})  # fmt: skip
            _wait_for(lambda: len(producer.logs) == 2)
    first, second = sorted(producer.logs, key=lambda log: log.user_id)
    assert (first.tenant_id, first.user_id) == (None, "café")  # not UTF-8: read as latin-1
    assert (second.tenant_id, second.user_id) == (None, "josé")
    assert app.state.gateway.identity([(b"x-tenant-id", b" \t "), (b"x-user-id", b"")]) == (None, None)


@pytest.mark.parametrize(
    ("url", "message"),
    [("http://127.0.0.1:8000/v1", "must not end in /v1"), ("http://127.0.0.1:8000/v1/", "must not end in /v1"),
     ("127.0.0.1:8000", "http:// or https://"), ("ftp://host", "http:// or https://"), ("http://:8000", "with a host")],
)  # fmt: skip
def test_an_upstream_url_every_request_would_fail_on_is_refused(url, message):
    with pytest.raises(ValidationError, match=message):
        GatewaySettings(upstream_url=url)
    assert GatewaySettings(upstream_url="https://vllm.internal:8443/").upstream_url == "https://vllm.internal:8443/"


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [(["--port", "70000"], 2, "--port"), (["--port", "-5"], 2, "--port"),
     (["--upstream", "127.0.0.1:8000"], 2, "--upstream"), (["--upstream", "http://127.0.0.1:8000/v1"], 2, "/v1"),
     # A name the log schema cannot store: accepted before, then every exchange was rejected.
     (["--deployment", "x" * 300], 2, "--deployment"), (["--deployment", "a\x00b"], 2, "--deployment"),
     (["--bootstrap", "::::"], 2, "--bootstrap")],  # was an internal error (exit 1) from kafka-python
)  # fmt: skip
def test_bad_gateway_option_values_are_usage_errors(argv, code, says, monkeypatch, tmp_path, capsys):
    from pipeline.cli import main

    monkeypatch.setenv("MM_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("MM_GATEWAY__SPILL_PATH", str(tmp_path / "spill.jsonl"))
    monkeypatch.setenv("MM_GATEWAY__HOST", "192.0.2.1")  # cannot listen: a regression fails, never serves
    assert main(["gateway", *argv]) == code
    assert says in capsys.readouterr().err


def test_an_upstream_url_from_the_environment_is_a_configuration_error(monkeypatch, tmp_path, capsys):
    from pipeline.cli import main

    monkeypatch.setenv("MM_GATEWAY__UPSTREAM_URL", "127.0.0.1:8000")
    monkeypatch.setenv("MM_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("MM_GATEWAY__HOST", "192.0.2.1")  # cannot listen: a regression fails, never serves
    assert main(["gateway"]) == 3
    assert "gateway.upstream_url" in capsys.readouterr().err


def test_an_address_it_cannot_listen_on_is_told_before_kafka_is_asked(monkeypatch, tmp_path, capsys, caplog):
    from pipeline.cli import main

    monkeypatch.setenv("MM_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    monkeypatch.setenv("MM_GATEWAY__SPILL_PATH", str(tmp_path / "spill.jsonl"))
    assert main(["gateway", "--host", "192.0.2.1", "--port", "0"]) == 3  # TEST-NET-1: not an address of this host
    err = capsys.readouterr().err
    assert "cannot listen on 192.0.2.1" in err
    assert "not reachable" not in err + caplog.text  # the broker was never asked


def test_a_post_to_a_route_it_does_not_log_is_refused_when_asked(tmp_path):
    """Ollama's native /api/chat (or vLLM's /v1/messages) reached the model neither logged nor
    screened, documented but with no way to close it (a hostile review, 2026-12-04):
    ``gateway.unlogged_posts: refuse`` answers such a POST 403 without reading or forwarding it,
    except the paths in ``forward_unlogged``; GETs and the logged routes are unchanged."""
    upstream = VllmLike()
    chat = {"model": "m", "messages": [{"role": "user", "content": PHISHING_PROMPT}]}
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, unlogged_posts="refuse")
        with serve_in_thread(app) as url:
            refused = httpx.post(f"{url}/api/chat", json=chat, timeout=30)
            models = httpx.get(f"{url}/v1/models", timeout=30)
            logged = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=30)
            _wait_for(lambda: producer.logs)
        app, _, _ = _gateway(upstream_url, tmp_path, unlogged_posts="refuse", forward_unlogged=["/api/chat/"])
        with serve_in_thread(app) as url:
            allowed = httpx.post(f"{url}/api/chat", json=chat, timeout=30)
        app, _, _ = _gateway(upstream_url, tmp_path)  # the default forwards, as before
        with serve_in_thread(app) as url:
            default = httpx.post(f"{url}/api/chat", json=chat, timeout=30)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "route_not_monitored"
    assert PHISHING_PROMPT not in refused.text and "/api/chat" not in refused.text
    assert metrics.registry.get_sample_value("mm_gateway_requests_total", {"route": "unlogged", "status": "refused"}) == 1
    assert models.status_code == 200 and logged.status_code == 200 and len(producer.logs) == 1
    assert allowed.status_code == 200 and default.status_code == 200
    assert len(upstream.native_requests) == 2  # the allowed and the default one, never the refused one


@pytest.mark.parametrize("path", ["api/chat", "/api/chat?x=1", "http://host/api/chat"])
def test_forward_unlogged_takes_paths_only(path):
    with pytest.raises(ValidationError, match="is not a path"):
        GatewaySettings(forward_unlogged=[path])


def _send_until_answered(url: str, head: bytes, piece: bytes, most: int) -> tuple[int, bytes]:
    """Send ``head``, then ``piece`` after ``piece`` until the gateway answers or ``most`` bytes
    are sent; (bytes of body sent, the first bytes of the answer)."""

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        sock.setblocking(False)
        sent = 0
        while sent < most:
            try:
                answer = sock.recv(200)
                if answer:
                    return sent, answer
            except BlockingIOError:
                pass
            try:
                sent += sock.send(piece)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:  # the gateway closed the connection after answering
                break
        sock.setblocking(True)
        sock.settimeout(10)
        return sent, sock.recv(200)


CHAT_HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"


@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_a_body_over_max_request_bytes_is_answered_413_without_being_read(tmp_path, framing):
    """A client that sends an endless body (10 GB declared, or chunked without end) was read into
    memory until it stopped: 1 GB sent grew the gateway by 1 GB, and no answer came (a hostile
    review, 2026-12-05). Now the declared length is refused before a byte is read, and a chunked
    body once it passes the limit; the upstream is never called, and the attempt is counted and
    kept in the rejected file as its size, never its text."""
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, max_request_bytes=1 << 20)
        with serve_in_thread(app) as url:
            if framing == "declared":
                sent, answer = _send_until_answered(url, CHAT_HEAD + b"Content-Length: 10000000000\r\n\r\n",
                                                    b"x" * 65536, 64 << 20)
            else:
                piece = b"10000\r\n" + b"x" * 65536 + b"\r\n"
                sent, answer = _send_until_answered(url, CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n", piece, 64 << 20)
            _wait_for(lambda: (tmp_path / "rejected.jsonl").exists())
            healthy = httpx.post(f"{url}/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert sent < 64 << 20  # answered long before the client gave up
    (entry,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert entry["reason"] == "too_large" and "max_request_bytes" in entry["detail"] and "xxxx" not in json.dumps(entry)
    labels = {"route": "chat.completions", "status": "too_large"}
    assert metrics.registry.get_sample_value("mm_gateway_requests_total", labels) == 1
    assert metrics.registry.get_sample_value("mm_gateway_requests_total", {"route": "chat.completions", "status": "2xx"}) == 1
    assert healthy.status_code == 200  # the next client is served as before


def test_a_body_at_max_request_bytes_is_forwarded(tmp_path):
    upstream = VllmLike()
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 3000}]}).encode()
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, max_request_bytes=len(body))
        with serve_in_thread(app) as url:
            ok = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
            over = httpx.post(f"{url}/v1/chat/completions", content=body + b" ", headers={"Content-Type": "application/json"})
            _wait_for(lambda: producer.logs)
    assert ok.status_code == 200 and over.status_code == 413
    assert over.json()["error"]["code"] == "request_too_large" and len(producer.logs) == 1


def _chat_body(text: str) -> bytes:
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": text}]}).encode()


def _inflight(url: str) -> int:
    return httpx.get(f"{url}/healthz").json()["inflight_request_bytes"]


def _start_upload(url: str, head: bytes, first: bytes):
    """A raw connection that has sent ``head`` and the first part of its body, and holds."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(head + first)
    return sock


def _answer(sock) -> bytes:
    with contextlib.closing(sock):
        sock.settimeout(10)
        data = b""
        while b"\r\n\r\n" not in data:
            piece = sock.recv(4096)
            if not piece:
                break
            data += piece
        return data


@pytest.mark.parametrize("framing", ["declared", "chunked"])
def test_bodies_past_max_inflight_request_bytes_are_refused_503_and_the_held_ones_go_through(tmp_path, framing):
    """Each request may hold up to max_request_bytes, but nothing bounded how many could at once:
    40 clients each holding an unfinished 60 MB upload grew the gateway from 73 to 2,489 MB (a
    hostile review, 2026-12-06). Now a body that would take the total past
    max_inflight_request_bytes is refused 503 with Retry-After (by its declared length before a
    byte is read, or a chunked body as it passes), the bodies being read finish and are
    forwarded and logged, and what they held is given back."""
    upstream = VllmLike()
    body = _chat_body("x" * 400_000)  # about 400 KB; two fit in 1 MB, the third does not
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path, max_request_bytes=512 * 1024,
                                          max_inflight_request_bytes=1 << 20)  # fmt: skip
        with serve_in_thread(app) as url:
            held = [_start_upload(url, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body), body[:-10]) for _ in range(2)]
            _wait_for(lambda: _inflight(url) == 2 * (len(body) - 10))  # the bytes they sent
            if framing == "declared":
                third = _start_upload(url, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body), b"")
            else:
                third = _start_upload(url, CHAT_HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
                                      b"%x\r\n" % len(body) + body + b"\r\n")  # fmt: skip
            refused = _answer(third)
            for sock in held:
                sock.sendall(body[-10:])
            answers = [_answer(sock) for sock in held]
            _wait_for(lambda: len(producer.logs) == 2)
            left = _inflight(url)
            after = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
    assert refused.startswith(b"HTTP/1.1 503") and b"retry-after: 1" in refused.lower(), refused
    assert all(answer.startswith(b"HTTP/1.1 200") for answer in answers), answers
    assert left == 0 and after.status_code == 200  # given back once answered
    assert len(upstream.requests) == 3  # the two held ones and the one after; never the refused one
    labels = {"route": "chat.completions", "status": "overloaded"}
    assert metrics.registry.get_sample_value("mm_gateway_requests_total", labels) == 1


def test_an_overloaded_answer_is_an_openai_style_error(tmp_path):
    upstream = VllmLike()
    body = _chat_body("x" * 400_000)
    with serve_in_thread(upstream.app) as upstream_url:
        app, _, _ = _gateway(upstream_url, tmp_path, max_request_bytes=512 * 1024, max_inflight_request_bytes=512 * 1024)
        with serve_in_thread(app) as url:
            held = _start_upload(url, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body), body[:-10])
            _wait_for(lambda: _inflight(url) == len(body) - 10)
            refused = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
            held.close()
            _wait_for(lambda: _inflight(url) == 0)  # a client that leaves gives its share back too
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "gateway_overloaded"


def test_a_client_that_leaves_mid_body_is_counted_and_gives_its_share_back(tmp_path):
    """A client closing its connection halfway through a body was an "Exception in ASGI
    application" with Starlette's ClientDisconnect traceback in the gateway's log."""
    upstream = VllmLike()
    body = _chat_body("x" * 100_000)
    with serve_in_thread(upstream.app) as upstream_url:
        app, producer, metrics = _gateway(upstream_url, tmp_path)
        with serve_in_thread(app) as url:
            sock = _start_upload(url, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % len(body), body[:50_000])
            _wait_for(lambda: _inflight(url) == 50_000)
            sock.close()
            labels = {"route": "chat.completions", "status": "client_gone"}
            _wait_for(lambda: metrics.registry.get_sample_value("mm_gateway_requests_total", labels) == 1)
            left = _inflight(url)
    assert left == 0 and upstream.requests == [] and producer.logs == []


def test_a_declared_length_holds_nothing_until_its_bytes_arrive(tmp_path):
    """The first version of the limit reserved each body's declared length before reading it:
    clients that declared the largest body and sent nothing (16 of them against the defaults)
    then made the gateway refuse every other client 503, for free (found reviewing it, the same
    day). Only bytes that arrived count."""
    upstream = VllmLike()
    body = _chat_body("hello")
    with serve_in_thread(upstream.app) as upstream_url:
        app, _, metrics = _gateway(upstream_url, tmp_path, max_request_bytes=512 * 1024, max_inflight_request_bytes=1 << 20)
        with serve_in_thread(app) as url:
            idle = [_start_upload(url, CHAT_HEAD + b"Content-Length: %d\r\n\r\n" % (512 * 1024), b"") for _ in range(4)]
            time.sleep(0.5)
            held = _inflight(url)
            served = httpx.post(f"{url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
            for sock in idle:
                sock.close()
    assert held == 0 and served.status_code == 200
    assert metrics.registry.get_sample_value("mm_gateway_requests_total", {"route": "chat.completions", "status": "overloaded"}) is None


def test_max_inflight_request_bytes_below_max_request_bytes_is_refused_at_load():
    with pytest.raises(ValidationError, match="max_inflight_request_bytes .* is below max_request_bytes"):
        GatewaySettings(max_request_bytes=2 << 20, max_inflight_request_bytes=1 << 20)


def test_case_variant_keys_looks_only_where_a_server_decodes_the_request_shape():
    """A review (2026-12-06): PascalCase properties of a tool's JSON Schema or of metadata sent
    benign requests to every-string scoring, and a deep body cost 166 MB to walk."""
    from pipeline.gateway.tee import case_variant_keys

    benign = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "metadata": {"Foo": 1, "foo": 2},
              "tools": [{"type": "function", "function": {"name": "f", "parameters": {"properties": {"Name": {}, "Type": {}}}}}],
              "response_format": {"type": "json_schema", "json_schema": {"schema": {"properties": {"Model": {}, "User": {}}}}}}  # fmt: skip
    assert case_variant_keys(benign) == []
    hidden = {"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": "a", "Text": "b"}]}],
              "tools": [{"type": "function", "Function": {}}]}  # fmt: skip
    assert case_variant_keys(hidden) == ["input.0.content.0.<key 2>", "tools.0.<key 1>"]
    deep: object = []
    for _ in range(400):
        deep = {"a": deep, "A": [[]] * 100}
    assert case_variant_keys({"model": "m", "messages": [], "metadata": deep}) == []  # not walked at all


def test_head_passes_the_upstreams_content_length_through_with_no_body(tmp_path):
    # The gateway said content-length 0 (the length of the body it read, none for HEAD) where the
    # upstream said 21: a client that sizes a download by HEAD saw an empty resource (a hostile review).
    upstream = VllmLike()
    with serve_in_thread(upstream.app) as upstream_url:
        app, _, _ = _gateway(upstream_url, tmp_path)
        with serve_in_thread(app) as url:
            direct = httpx.head(f"{upstream_url}/v1/models")
            proxied = httpx.head(f"{url}/v1/models")
    assert int(direct.headers["content-length"]) > 0
    assert proxied.status_code == 200 and proxied.headers["content-length"] == direct.headers["content-length"]
    assert proxied.content == b""


def test_an_upstream_that_fails_mid_stream_is_logged_as_a_cut_not_as_a_client_that_left(tmp_path, caplog, request):
    # An upstream that died mid-stream (aiohttp.ClientPayloadError) went up to uvicorn, which
    # printed a traceback and dropped the client, and the log said client_disconnected (a hostile review).
    from starlette.applications import Starlette
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    first = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Sure, here is"}, "finish_reason": None}]}  # fmt: skip

    async def chat(request):
        async def events():
            yield f"data: {json.dumps(first)}\n\n".encode()
            raise RuntimeError("the upstream crashed mid-stream")  # uvicorn ends the chunked body unfinished

        return StreamingResponse(events(), media_type="text/event-stream")

    upstream = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"])])
    caplog.set_level("WARNING")
    server_log = logging.getLogger("uvicorn.error")  # uvicorn's loggers do not propagate to the root
    request.addfinalizer(lambda: server_log.removeHandler(caplog.handler))
    with serve_in_thread(upstream) as upstream_url:
        app, producer, _ = _gateway(upstream_url, tmp_path)
        with serve_in_thread(app) as url:
            server_log.addHandler(caplog.handler)  # after uvicorn configured its loggers (that drops handlers)
            caplog.clear()
            received = []
            # The client's connection is dropped as the upstream's was: a clean end of the chunked
            # body made a cut answer read as whole (a review of the first fix ended it cleanly).
            with pytest.raises(httpx.RemoteProtocolError):  # noqa: PT012 - the chunks before the cut are read
                with httpx.stream("POST", f"{url}/v1/chat/completions", timeout=30,
                                  json={"model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as answer:  # fmt: skip
                    assert answer.status_code == 200
                    received.extend(answer.iter_bytes())
            _wait_for(lambda: producer.logs)
    assert b"Sure, here is" in b"".join(received)
    (record,) = producer.logs
    assert record.completion == "Sure, here is"
    assert record.metadata["stream_cut"] is True and record.metadata["upstream_error"] == "ClientPayloadError"
    assert "client_disconnected" not in record.metadata
    assert len([r for r in caplog.records if "the upstream cut the response" in r.getMessage()]) == 1
    # No traceback of the gateway's own (the upstream's server logs its RuntimeError, not this).
    assert not [r for r in caplog.records if r.exc_info and isinstance(r.exc_info[1], aiohttp.ClientPayloadError)]
    # Neither does the gateway's server (the upstream's own server logs its RuntimeError).
    tracebacks = [r for r in caplog.records if r.name == "uvicorn.error" and r.exc_info]
    assert not [r for r in tracebacks if not isinstance(r.exc_info[1], RuntimeError)], [r.getMessage() for r in tracebacks]
