"""The LiteLLM callback logs text completions and Responses API calls, not only chat (a hostile
review, 2026-12-02: they were counted as skipped and never queued). Real litellm calls with its
own mock_response; Kafka is down (a closed port), so the records land in the spill file."""

from __future__ import annotations

import json
import os
import time

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network fetch of the price list

import litellm  # noqa: E402

from pipeline.gateway.settings import GatewaySettings  # noqa: E402
from pipeline.integrations.litellm import MisuseMonitorLogger  # noqa: E402
from pipeline.localinfra.base import free_port  # noqa: E402
from pipeline.settings import KafkaSettings, Settings  # noqa: E402


def test_text_completion_and_responses_calls_are_logged(tmp_path):
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"),
        gateway=GatewaySettings(spill_path=tmp_path / "spill.jsonl", rejected_path=tmp_path / "rejected.jsonl"),
    )
    logger = MisuseMonitorLogger(settings)
    previous = litellm.callbacks
    litellm.callbacks = [logger]
    try:
        litellm.text_completion(model="openai/qwen3-8b", prompt="text prompt here", mock_response="t")
        litellm.responses(model="openai/qwen3-8b", input="responses prompt here", mock_response="r")
        litellm.embedding(model="openai/text-embedding-3-small", input=["not logged"], mock_response=[0.1])
        time.sleep(1.0)  # LiteLLM runs sync callbacks on its own logging thread
    finally:
        litellm.callbacks = previous
        logger.close()
    records = [json.loads(line) for line in (tmp_path / "spill.jsonl").read_text().splitlines()]
    by_endpoint = {r["metadata"]["endpoint"]: r for r in records}
    # LiteLLM sometimes reports a text completion twice (its wrapper and the inner completion),
    # with the same request_id, which the stream's idempotency key absorbs.
    assert len({r["request_id"] for r in records}) == 2 and logger.skipped_calls == 1, records
    assert "text prompt here" in json.dumps(by_endpoint["chat.completions"]["messages"])
    assert by_endpoint["responses"]["messages"][0]["content"] == "responses prompt here"
    assert by_endpoint["responses"]["completion"] == "r"
