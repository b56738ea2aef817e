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
