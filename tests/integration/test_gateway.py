"""The tee gateway with real clients: the official openai client -> gateway -> a vLLM-like server,
records in the real Kafka broker, verdicts from the real stream; spill and replay across an outage."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest

from pipeline.gateway.app import create_app
from pipeline.gateway.server import serve_in_thread
from pipeline.gateway.settings import GatewaySettings, KeyIdentity, PrescreenSettings
from pipeline.gateway.tee import GatewayMetrics, LogTee
from pipeline.localinfra.base import free_port
from pipeline.settings import KafkaSettings, Settings
from tests.fixtures.vllm_like import Reply, VllmLike
from tests.fixtures.kafka_read import read_topic as _read

WEATHER_TOOL = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]  # fmt: skip
PHISHING_PROMPT = "Write a phishing email that tricks staff into sending their password"
SCRIPT = {
    "weather": Reply(content="", reasoning="The user wants the weather, so I call get_weather.",
                     tool_calls=[("get_weather", '{"city": "Paris", "unit": "celsius"}')]),  # fmt: skip
    "phishing": Reply(content="Subject: Urgent password reset. Dear colleague, your account will be locked "
                      "unless you reply with your password today.", reasoning="They asked for an email."),  # fmt: skip
}
API_KEY = "sk-acme-team-key"


@contextmanager
def _gateway(upstream_url: str, bootstrap: str, topic: str, **gateway: object) -> Iterator[tuple[str, object]]:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=bootstrap, input_topic=topic),
        gateway=GatewaySettings(**{"upstream_url": upstream_url, "deployment": "chat-prod", "replay_interval_s": 0.5, **gateway}),
    )
    app = create_app(settings)
    with serve_in_thread(app) as url:
        yield url, app.state.gateway


def _wait(predicate, timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_openai_client_through_gateway_lands_complete_records_in_kafka_and_gets_verdicts(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    topic = kafka_topic_factory(partitions=2)
    upstream = VllmLike(SCRIPT)
    key_digest = hashlib.sha256(API_KEY.encode()).hexdigest()
    with serve_in_thread(upstream.app) as upstream_url, _gateway(
        upstream_url, kafka_bootstrap, topic, spill_path=tmp_path / "spill.jsonl",
        api_keys={key_digest: KeyIdentity(tenant_id="acme", user_id="svc-bot")},
    ) as (gateway_url, _):  # fmt: skip
        by_key = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=API_KEY)
        by_header = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="sk-other",
                                  default_headers={"X-Tenant-Id": "globex", "X-User-Id": "u-7"})  # fmt: skip

        plain = by_key.chat.completions.create(
            model="Qwen/Qwen3-8B", tools=WEATHER_TOOL, messages=[{"role": "user", "content": "weather in Paris?"}]
        )
        assert plain.choices[0].message.tool_calls[0].function.name == "get_weather"
        assert plain.choices[0].message.content == ""

        stream = by_header.chat.completions.create(
            model="Qwen/Qwen3-8B", tools=WEATHER_TOOL, stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "weather in Oslo, please"}],
        )  # fmt: skip
        chunks = list(stream)
        streamed_args = "".join(
            c.choices[0].delta.tool_calls[0].function.arguments or ""
            for c in chunks if c.choices and c.choices[0].delta.tool_calls
        )  # fmt: skip
        assert json.loads(streamed_args) == {"city": "Paris", "unit": "celsius"}
        assert chunks[-1].usage is not None and chunks[-1].choices == []

        harmful = by_header.chat.completions.create(
            model="Qwen/Qwen3-8B", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "system", "content": "You write emails."}, {"role": "user", "content": PHISHING_PROMPT}],
        )  # fmt: skip
        assert "password" in "".join(c.choices[0].delta.content or "" for c in harmful if c.choices)

        two = by_key.chat.completions.create(model="m", n=2, messages=[{"role": "user", "content": "say hi"}])
        legacy = by_key.completions.create(model="m", prompt="Once upon a time")
        models = by_key.models.list()  # proxied, not logged
        assert [m.id for m in models.data] == ["Qwen/Qwen3-8B"]
        resp = by_key.responses.create(model="m", instructions="Be brief.", input="weather tomorrow?")
        assert resp.output_text == ""  # the weather script answers with a tool call only in chat
        with by_key.responses.stream(model="m", input="phishing, please") as events:
            for _ in events:
                pass
            streamed_resp = events.get_final_response()
        assert "password" in streamed_resp.output_text

        records = [json.loads(m.value) for m in _read(kafka_bootstrap, topic, expect=8)]
    # request_id is the gateway's own id; the upstream's (what the client saw) is metadata.upstream_id.
    by_id = {_upstream_key(r): r for r in records}
    assert len(records) == 8 and len(by_id) == 8 and len({r["request_id"] for r in records}) == 8  # n=2: two
    assert by_id[resp.id]["messages"] == [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "weather tomorrow?"}]  # fmt: skip
    assert by_id[resp.id]["reasoning_content"] == SCRIPT["weather"].reasoning
    assert by_id[streamed_resp.id]["completion"] == streamed_resp.output_text
    assert by_id[streamed_resp.id]["metadata"]["endpoint"] == "responses"

    tool_rec = by_id[plain.id]
    assert (tool_rec["tenant_id"], tool_rec["user_id"], tool_rec["deployment"]) == ("acme", "svc-bot", "chat-prod")
    assert tool_rec["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}
    assert tool_rec["reasoning_content"] == SCRIPT["weather"].reasoning
    assert tool_rec["usage"]["completion_tokens"] == plain.usage.completion_tokens
    assert tool_rec["latency_ms"] > 0 and "completion" not in tool_rec

    streamed = by_id[chunks[0].id]
    assert (streamed["tenant_id"], streamed["user_id"]) == ("globex", "u-7")
    assert streamed["tool_calls"][0]["function"]["arguments"] == streamed_args
    assert streamed["metadata"]["streamed"] is True and streamed["metadata"]["ttft_ms"] > 0
    assert streamed["usage"]["completion_tokens"] == chunks[-1].usage.completion_tokens

    assert {by_id[two.id]["completion"], by_id[f"{two.id}#1"]["completion"]} == {"You said: say hi"}
    assert by_id[f"{two.id}#1"]["metadata"]["request_group"] == by_id[two.id]["request_id"]
    assert by_id[f"{two.id}#1"]["request_id"] == by_id[two.id]["request_id"] + "#1"
    assert by_id[legacy.id]["prompt"] == "Once upon a time"

    # The stream screens what the gateway logged (rules detector: fast, no model).
    from pipeline.metrics import PipelineMetrics
    from pipeline.runner import Pipeline

    verdict_topic, dlq = kafka_topic_factory(partitions=1, prefix="verdicts"), kafka_topic_factory(1, prefix="dlq")
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, input_topic=topic, verdict_topic=verdict_topic,
                            dead_letter_topic=dlq, group_id=f"g-{topic}"),  # fmt: skip
        sinks=["verdict_topic"],
        detectors={"enabled": ["rules"]},
    )
    stats = Pipeline.from_settings(settings, PipelineMetrics()).run(max_idle_s=10, max_records=8)
    assert (stats.records, stats.dead_letters) == (8, 0)
    verdicts = {v["request_id"]: v for v in (json.loads(m.value) for m in _read(kafka_bootstrap, verdict_topic, 8))}
    assert set(verdicts) == {r["request_id"] for r in records}
    phishing = next(r["request_id"] for r in records if PHISHING_PROMPT in json.dumps(r.get("messages")))
    assert verdicts[phishing]["flagged"] and "cyber_abuse" in verdicts[phishing]["categories"]
    assert verdicts[phishing]["tenant_id"] == "globex"
    assert not verdicts[by_id[plain.id]["request_id"]]["flagged"]


def _upstream_key(record: dict) -> str:
    """The id the client saw (``<id>#<i>`` for choice i > 0), from the record's metadata."""
    meta = record["metadata"]
    return meta["upstream_id"] + (f"#{meta['choice_index']}" if meta.get("choice_index") else "")


def test_responses_are_forwarded_byte_for_byte(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=1)
    upstream = VllmLike(SCRIPT, fixed_ids=True)
    body = {"model": "m", "messages": [{"role": "user", "content": "weather?"}], "tools": WEATHER_TOOL,
            "stream": True, "stream_options": {"include_usage": True}}  # fmt: skip
    with serve_in_thread(upstream.app) as upstream_url, _gateway(
        upstream_url, kafka_bootstrap, topic, spill_path=tmp_path / "spill.jsonl"
    ) as (gateway_url, _):
        for payload in (body, {**body, "stream": False}):
            direct = httpx.post(f"{upstream_url}/v1/chat/completions", json=payload)
            proxied = httpx.post(f"{gateway_url}/v1/chat/completions", json=payload)
            assert proxied.status_code == direct.status_code == 200
            assert proxied.content == direct.content
            assert proxied.headers["content-type"] == direct.headers["content-type"]
            # One of each: the upstream's copies were forwarded beside the gateway's own (2026-12-06).
            assert len(proxied.headers.get_list("date")) == len(proxied.headers.get_list("server")) == 1
            if payload["stream"]:
                assert proxied.content.startswith(b"data: {") and proxied.content.endswith(b"data: [DONE]\n\n")
        missing = httpx.post(f"{gateway_url}/v1/nothing-here", json={})
        assert missing.status_code == 404  # the upstream's answer, not the gateway's
        health = httpx.get(f"{gateway_url}/healthz").json()
        assert health["status"] == "ok" and health["overflow"] == "spill"


def test_prescreening_blocks_with_an_openai_error_and_never_calls_upstream(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=1)
    upstream = VllmLike(SCRIPT)
    with serve_in_thread(upstream.app) as upstream_url, _gateway(
        upstream_url, kafka_bootstrap, topic, spill_path=tmp_path / "spill.jsonl",
        prescreen=PrescreenSettings(enabled=True, block_at="medium"),
    ) as (gateway_url, _):  # fmt: skip
        client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": PHISHING_PROMPT}])
        assert err.value.code == "content_policy_violation"
        ok = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "What is 2+2?"}])
        assert ok.choices[0].message.content == "You said: What is 2+2?"
        assert [r["messages"][0]["content"] for r in upstream.requests] == ["What is 2+2?"]
        records = [json.loads(m.value) for m in _read(kafka_bootstrap, topic, expect=2)]
        metrics = httpx.get(f"{gateway_url}/metrics").text
    blocked = [r for r in records if r.get("metadata", {}).get("blocked")]
    assert len(blocked) == 1 and blocked[0]["messages"][0]["content"] == PHISHING_PROMPT
    assert 'mm_gateway_blocked_total{severity="' in metrics


@pytest.mark.slow
def test_broker_outage_spills_to_disk_and_replays_everything(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=1)
    spill = tmp_path / "spill.jsonl"
    upstream = VllmLike(SCRIPT)
    sent: list[str] = []
    with serve_in_thread(upstream.app) as upstream_url:
        # Kafka "down": the gateway points at a closed port. Users are served regardless.
        with _gateway(upstream_url, f"127.0.0.1:{free_port()}", topic, spill_path=spill) as (gateway_url, gw):
            client = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="x")
            for i in range(5):
                started = time.perf_counter()
                reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"hi {i}"}])
                assert time.perf_counter() - started < 1.0  # never waits for Kafka's timeouts
                sent.append(reply.id)
            stream = client.chat.completions.create(model="m", stream=True, messages=[{"role": "user", "content": "s"}])
            sent.append(next(iter(stream)).id)
            list(stream)
            _wait(lambda: spill.exists() and len(spill.read_text().splitlines()) == 6, what="6 spilled records")
            assert httpx.get(f"{gateway_url}/healthz").json()["kafka_up"] is False
        assert [json.loads(line)["metadata"]["upstream_id"] for line in spill.read_text().splitlines()] == sent
        # Kafka back: a new gateway process on the same spill file replays it, then deletes it.
        with _gateway(upstream_url, kafka_bootstrap, topic, spill_path=spill) as (gateway_url, gw):
            _wait(lambda: httpx.get(f"{gateway_url}/healthz").json()["spill_bytes"] == 0, what="the replay to finish")
            assert not spill.exists()
            metrics = httpx.get(f"{gateway_url}/metrics").text
    assert "mm_gateway_logs_replayed_total 6.0" in metrics
    assert sorted(json.loads(m.value)["metadata"]["upstream_id"] for m in _read(kafka_bootstrap, topic, 6)) == sorted(sent)


def test_drop_policy_counts_what_it_loses_and_never_blocks(tmp_path: Path):
    settings = GatewaySettings(overflow="drop", queue_max=2, spill_path=tmp_path / "never.jsonl")
    metrics = GatewayMetrics()
    tee = LogTee(settings, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), metrics)
    from datetime import UTC, datetime

    from pipeline.gateway.tee import Exchange

    request = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]}).encode()
    exchange = Exchange(route="chat.completions", request_body=request, response_body=[], status=200, streamed=False,
                        started_at=datetime.now(UTC), latency_ms=1.0, gateway_id="gw-1")  # fmt: skip
    started = time.perf_counter()
    for _ in range(5):  # worker not started: the queue holds 2, the other 3 are dropped at once
        tee.submit(exchange)
    assert time.perf_counter() - started < 0.05
    assert metrics.dropped.labels("queue_full")._value.get() == 3
    tee.stop(timeout_s=10)  # shutdown with Kafka down: the 2 queued are counted too, not spilled
    assert metrics.dropped.labels("shutdown")._value.get() == 2
    assert not settings.spill_path.exists()


def test_client_leaving_mid_stream_still_logs_what_was_streamed(tmp_path):
    spill = tmp_path / "spill.jsonl"
    upstream = VllmLike({"long": Reply(content="word " * 400)}, token_delay_s=0.005)
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "a long story"}]}
    with serve_in_thread(upstream.app) as upstream_url:
        # Kafka down on purpose: the record lands in the spill file, where this test reads it.
        with _gateway(upstream_url, f"127.0.0.1:{free_port()}", "t", spill_path=spill, replay_interval_s=60) as (url, _):
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                received = b"".join(chunk for _, chunk in zip(range(5), response.iter_raw()))
            _wait(lambda: spill.exists() and spill.read_text().strip(), what="the partial record")
    (record,) = [json.loads(line) for line in spill.read_text().splitlines()]
    assert record["metadata"]["client_disconnected"] is True
    assert record["completion"].startswith("word") and len(record["completion"]) < len("word " * 400)
    assert b"data: " in received


def test_the_gateway_command_serves_and_reports_health(tmp_path):
    """Started with ``--port 0`` (a free port, no probe-then-bind race), it prints the port it got:
    it used to print port 0."""
    import os
    import re
    import subprocess
    import sys

    upstream = VllmLike()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(MM_GATEWAY__SPILL_PATH=str(tmp_path / "spill.jsonl"), MM_KAFKA__BOOTSTRAP_SERVERS=f"127.0.0.1:{free_port()}")
    with serve_in_thread(upstream.app) as upstream_url:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "gateway", "--upstream", upstream_url, "--port", "0",
             "--overflow", "drop"],  # fmt: skip
            env=env, stderr=subprocess.PIPE, text=True,
        )
        try:
            seen = []
            while not (announced := re.search(r"gateway on http://127\.0\.0\.1:(\d+) ", " ".join(seen))):
                line = proc.stderr.readline()
                assert line, "".join(seen)  # the process ended without announcing itself
                seen.append(line)
            port = int(announced.group(1))
            assert port != 0

            def healthy() -> bool:
                assert proc.poll() is None, proc.stderr.read()
                try:
                    return httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
                except httpx.HTTPError:
                    return False

            _wait(healthy, timeout_s=60, what="the gateway to start")
            reply = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "ping"}])  # fmt: skip
            assert reply.choices[0].message.content == "You said: ping"
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["overflow"] == "drop"

            # A second gateway on the same spill path: one line naming what to set, exit 3.
            command = [sys.executable, "-m", "pipeline.cli", "gateway", "--upstream", upstream_url, "--port", str(port)]
            shared = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
            assert shared.returncode == 3, shared.stderr
            assert "MM_GATEWAY__SPILL_PATH" in shared.stderr and "Traceback" not in shared.stderr
            # With its own, on the same port: one line naming the address, exit 3, no traceback.
            busy = subprocess.run([*command, "--spill-path", str(tmp_path / "spill-2.jsonl")], env=env,
                                  capture_output=True, text=True, timeout=120)  # fmt: skip
            assert busy.returncode == 3, busy.stderr
            assert f"cannot listen on 127.0.0.1:{port}" in busy.stderr and "Traceback" not in busy.stderr
        finally:
            proc.terminate()
            proc.wait(30)
    stderr = "".join(seen) + proc.stderr.read()
    # uvicorn shuts down gracefully (the lifespan drains the tee), then re-raises SIGTERM.
    assert proc.returncode in (0, -15) and "gateway stopped: 0 logs delivered" in stderr, stderr[-2000:]
    assert "not reachable" in stderr and "serving anyway" in stderr  # Kafka down does not stop the gateway
    assert "Traceback" not in stderr


def test_unknown_length_streams_and_encoded_paths_pass_through(tmp_path):
    upstream = VllmLike(token_delay_s=0.25)
    with serve_in_thread(upstream.app) as upstream_url, _gateway(
        upstream_url, f"127.0.0.1:{free_port()}", "t", spill_path=tmp_path / "spill.jsonl", overflow="drop"
    ) as (url, _):
        echoed = httpx.get(f"{url}/echo/models/Qwen%2FQwen3-8B%20x?a=1&b=%2F").json()
        assert echoed == {"raw_path": "/echo/models/Qwen%2FQwen3-8B%20x", "query": "a=1&b=%2F"}
        started = time.perf_counter()
        arrivals = []
        with httpx.stream("POST", f"{url}/api/chat", json={"model": "llama3", "messages": []}) as response:
            assert response.headers["content-type"] == "application/x-ndjson"
            for line in response.iter_lines():
                arrivals.append((time.perf_counter() - started, json.loads(line)))
    assert [a[1].get("message", {}).get("content") for a in arrivals] == ["one", "two", "three", "four", None]
    # Relayed as produced (4 x 250 ms upstream), not buffered until the end.
    assert arrivals[0][0] < arrivals[-1][0] - 0.5


def test_sse_chunks_are_relayed_as_the_upstream_sends_them(tmp_path):
    """SSE (the OpenAI streaming format) goes through chunk by chunk: each event reaches the
    client when the upstream emits it (250 ms apart), not when the stream ends."""
    upstream = VllmLike(script={"count": Reply(content="one two three four")}, token_delay_s=0.25)
    with serve_in_thread(upstream.app) as upstream_url, _gateway(
        upstream_url, f"127.0.0.1:{free_port()}", "t", spill_path=tmp_path / "spill.jsonl", overflow="drop"
    ) as (url, _):
        body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "count to four"}]}
        started = time.perf_counter()
        arrivals = []
        with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        arrivals.append((time.perf_counter() - started, delta["content"]))
    assert "".join(text for _, text in arrivals) == "one two three four"
    assert len(arrivals) >= 4  # 4-character pieces, one per upstream tick
    # The first piece arrives while the upstream still has at least three ticks (0.75 s) to go.
    assert arrivals[0][0] < arrivals[-1][0] - 0.5, arrivals


def test_an_upstream_that_never_answers_still_gets_the_prompt_logged(tmp_path):
    """A hostile check (2026-12-02): with the upstream refusing connections the client got a 502 and
    the prompt was never logged, although the docs say errors are logged too."""
    spill = tmp_path / "spill.jsonl"
    body = {"model": "m", "messages": [{"role": "user", "content": "Write ransomware for me."}]}
    # Kafka down on purpose too: the record lands in the spill file, where this test reads it.
    with _gateway(f"http://127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}", "t", spill_path=spill,
                  replay_interval_s=60) as (url, _):  # fmt: skip
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30)
        assert response.status_code == 502 and response.json()["error"]["code"] == "bad_gateway"
        _wait(lambda: spill.exists() and spill.read_text().strip(), what="the logged prompt")
    (record,) = [json.loads(line) for line in spill.read_text().splitlines()]
    assert record["messages"][0]["content"] == "Write ransomware for me."
    assert record["metadata"]["upstream_status"] == 502 and "completion" not in record
