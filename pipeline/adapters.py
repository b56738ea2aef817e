"""Adapters from common serving payloads to inference-log/v1.

OpenAI-compatible servers (vLLM, SGLang, TGI's Messages API, llama.cpp server, Ollama's
/v1) log a request body and a response body; a gateway pairs them and calls
:func:`from_openai`. Chat (``messages`` / ``choices[0].message``) and legacy completions
(``prompt`` / ``choices[0].text``) are both accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline.decode import DecodeError, DecodeReason, format_validation_error
from pipeline.schemas import INFERENCE_LOG_V1, InferenceLog


def from_openai(
    request: Mapping[str, Any],
    response: Mapping[str, Any] | None,
    *,
    request_id: str | None = None,
    timestamp: datetime | None = None,
    deployment: str | None = None,
    tenant_id: str | None = None,
    user_id: str | None = None,
    latency_ms: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> InferenceLog:
    """Build an InferenceLog from an OpenAI-compatible request and its response.

    ``request_id`` defaults to the response ``id``; ``timestamp`` to the response
    ``created`` time; ``user_id`` to the request's ``user`` field.
    """
    response = response or {}
    choice = (response.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    completion = message.get("content") if message else choice.get("text")
    if completion is None and message.get("tool_calls"):
        completion = "\n".join(str(tc.get("function", {}).get("arguments", "")) for tc in message["tool_calls"])
    prompt = request.get("prompt")
    if isinstance(prompt, list):  # legacy completions accept a list of prompts; one is logged
        prompt = "\n".join(str(p) for p in prompt)
    created = response.get("created")
    ts = timestamp or (datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else datetime.now(UTC))
    usage = response.get("usage")
    payload: dict[str, Any] = {
        "schema": INFERENCE_LOG_V1,
        "request_id": request_id or response.get("id"),
        "timestamp": ts.isoformat(),
        "model": response.get("model") or request.get("model"),
        "deployment": deployment,
        "tenant_id": tenant_id,
        "user_id": user_id or request.get("user"),
        "messages": request.get("messages"),
        "prompt": prompt,
        "completion": completion,
        "finish_reason": choice.get("finish_reason"),
        "usage": {k: usage.get(k) for k in ("prompt_tokens", "completion_tokens")} if usage else None,
        "latency_ms": latency_ms,
        "metadata": dict(metadata) if metadata else None,
    }
    try:
        return InferenceLog.model_validate({k: v for k, v in payload.items() if v is not None})
    except ValidationError as exc:
        raise DecodeError(DecodeReason.INVALID_RECORD, format_validation_error(exc)) from exc
