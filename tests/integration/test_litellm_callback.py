"""The LiteLLM callback: real litellm calls (its own mock_response, no provider) -> real broker."""

from __future__ import annotations

import asyncio
import json
import os
import time

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price list

import litellm  # noqa: E402 - after the variable above; pinned in the litellm extra, part of `all`
from kafka import KafkaConsumer  # noqa: E402

from pipeline.gateway.settings import GatewaySettings  # noqa: E402
from pipeline.integrations.litellm import MisuseMonitorLogger  # noqa: E402
from pipeline.settings import KafkaSettings, Settings  # noqa: E402


def _read(bootstrap: str, topic: str, expect: int, timeout_s: float = 30) -> list[dict]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest",
                             consumer_timeout_ms=1000)  # fmt: skip
    out: list = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expect and time.monotonic() < deadline:
        out.extend(consumer)
    consumer.close()
    return [json.loads(m.value) for m in out]


def test_litellm_calls_are_logged_once_each_with_identity_stream_and_failure(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=1)
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, input_topic=topic),
        gateway=GatewaySettings(deployment="litellm-prod", spill_path=tmp_path / "spill.jsonl"),
    )
    logger = MisuseMonitorLogger(settings)
    previous = litellm.callbacks
    litellm.callbacks = [logger]
    try:
        plain = litellm.completion(model="openai/qwen3-8b", messages=[{"role": "user", "content": "capital of France?"}],
                                   mock_response="Paris.", user="u-1", metadata={"tenant_id": "acme"})  # fmt: skip
        stream = litellm.completion(model="openai/qwen3-8b", stream=True, mock_response="Once upon a time",
                                    messages=[{"role": "user", "content": "tell me a story"}])  # fmt: skip
        assert "".join(c.choices[0].delta.content or "" for c in stream) == "Once upon a time"
        async def in_an_async_app():
            reply = await litellm.acompletion(
                model="openai/qwen3-8b", messages=[{"role": "user", "content": "async hello"}], mock_response="Hi!")  # fmt: skip
            await asyncio.sleep(1.0)  # an app's loop keeps running; LiteLLM's async callback is a task on it
            return reply

        async_reply = asyncio.run(in_an_async_app())
        with pytest.raises(Exception, match="upstream exploded"):
            litellm.completion(model="openai/qwen3-8b", messages=[{"role": "user", "content": "this one fails"}],
                               mock_response=Exception("upstream exploded"), num_retries=0)  # fmt: skip
        time.sleep(1.0)  # LiteLLM runs sync callbacks on its own logging thread
    finally:
        litellm.callbacks = previous
        logger.close()

    records = _read(kafka_bootstrap, topic, expect=4)
    by_prompt = {r["messages"][0]["content"]: r for r in records}
    assert len(records) == 4 and len(by_prompt) == 4, sorted(by_prompt)  # one record per call, none twice
    first = by_prompt["capital of France?"]
    # request_id is LiteLLM's call id (unique per call); the provider's response id is kept beside it.
    assert (first["metadata"]["upstream_id"], first["completion"]) == (plain.id, "Paris.")
    assert first["request_id"] == first["metadata"]["litellm_call_id"] != plain.id
    assert (first["tenant_id"], first["user_id"], first["deployment"]) == ("acme", "u-1", "litellm-prod")
    assert first["usage"]["completion_tokens"] == plain.usage.completion_tokens
    assert first["metadata"]["source"] == "litellm" and first["latency_ms"] >= 0
    assert by_prompt["tell me a story"]["completion"] == "Once upon a time"
    assert by_prompt["async hello"]["metadata"]["upstream_id"] == async_reply.id
    failed = by_prompt["this one fails"]
    assert "completion" not in failed and "upstream exploded" in failed["metadata"]["error"]


# A proxy worker on the same gateway.spill_path while Kafka is away from it (a closed port): it
# spills one call, stops and is gone.
_GONE_WORKER = """
import os, sys
from datetime import UTC, datetime
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
from pipeline.gateway.settings import GatewaySettings
from pipeline.integrations.litellm import MisuseMonitorLogger
from pipeline.localinfra.base import free_port
from pipeline.settings import KafkaSettings, Settings

worker = MisuseMonitorLogger(Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
                                      gateway=GatewaySettings(spill_path=sys.argv[1], rejected_path=sys.argv[2])))
now = datetime.now(UTC)
worker._submit({"call_type": "completion", "model": "m", "litellm_call_id": "call-of-a-gone-worker",
                "messages": [{"role": "user", "content": "left behind"}]}, None, now, now)
worker.close()
print(worker.tee.spill_path, flush=True)
os._exit(0)
"""


def test_what_a_gone_proxy_worker_spilled_is_delivered_by_a_live_one(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """`litellm --num_workers N`: each worker spills to a file of its own beside gateway.spill_path
    (they shared one, and lost and duplicated each other's logs; a hostile review), and a worker
    that is gone (crashed, or the proxy restarted with fewer workers) leaves its file to the others."""
    import subprocess
    import sys
    from pathlib import Path

    topic = kafka_topic_factory(partitions=1)
    spill, rejected = tmp_path / "spill.jsonl", tmp_path / "rejected.jsonl"
    live = MisuseMonitorLogger(Settings(
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, input_topic=topic),
        gateway=GatewaySettings(spill_path=spill, rejected_path=rejected, replay_interval_s=0.5),
    ))  # fmt: skip
    try:
        gone = subprocess.run([sys.executable, "-c", _GONE_WORKER, str(spill), str(rejected)], capture_output=True,
                              text=True, timeout=180, cwd=Path(__file__).parents[2])  # fmt: skip
        assert gone.returncode == 0, gone.stderr
        assert gone.stdout.strip() == str(tmp_path / "spill.1.jsonl")  # the live worker holds spill.jsonl
        records = _read(kafka_bootstrap, topic, expect=1)
    finally:
        live.close()
    assert [r["request_id"] for r in records] == ["call-of-a-gone-worker"]
    assert not (tmp_path / "spill.1.jsonl").exists() and not (tmp_path / "spill.1.jsonl.replaying").exists()
