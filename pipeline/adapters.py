"""Adapters from OpenAI-compatible request/response payloads to inference-log/v1.

In: one request body and what the server answered -- a response object, the list of chunks of
a stream (``chat.completion.chunk`` / streamed ``text_completion``), or the Responses API's
``response`` object or event list. Out: one :class:`InferenceLog` per generated choice.

vLLM, SGLang, TGI's Messages API, llama.cpp server, Ollama's ``/v1`` and LiteLLM all speak this
dialect. Everything that carries text a detector must see is kept: message content, tool call
arguments, tool results, reasoning (``reasoning_content`` / ``reasoning``) and refusals. Parts
that are not text (images, audio, files) are counted in ``metadata.omitted_parts``, not kept: a
base64 image is large and no detector reads it. A shape this module does not know raises
:class:`AdapterError` naming the field, so new server features show up as errors, never as
silently unscreened traffic.

``n > 1``: each choice becomes its own record. Choice 0 keeps the response id as its
``request_id``; choice ``i`` gets ``<id>#<i>``; all carry ``metadata.request_group = <id>`` and
``metadata.choice_index`` so they can be joined back.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from pipeline.decode import DecodeError, DecodeReason, format_validation_error
from pipeline.schemas import INFERENCE_LOG_V1, InferenceLog
from pipeline.verdicts import PSEUDONYM

# Content part types that carry no text: counted, never kept.
NON_TEXT_PART_TYPES = frozenset(
    {"image_url", "input_image", "image", "input_audio", "audio_url", "video_url", "file", "input_file"}
)
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
# Responses API output items that are server-side tool activity without model-written text.
NON_TEXT_OUTPUT_ITEMS = frozenset(
    {"web_search_call", "file_search_call", "image_generation_call", "computer_call", "code_interpreter_call"}
)
_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content", "reasoning", "refusal",
     "function_call", "annotations", "audio",
     # LiteLLM (SDK and proxy): Anthropic-style thinking blocks, and provider extras; prompt
     # caching marks (Anthropic, LiteLLM) carry no text
     "thinking_blocks", "provider_specific_fields", "cache_control"}
)  # fmt: skip
_DELTA_KEYS = _MESSAGE_KEYS


class AdapterError(DecodeError):
    """A payload this adapter cannot map without losing something; ``detail`` names the field."""

    def __init__(self, detail: str) -> None:
        super().__init__(DecodeReason.INVALID_RECORD, detail)


@dataclass
class _Choice:
    """One generated answer, whatever shape it arrived in."""

    index: int = 0
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    finish_reason: str | None = None
    omitted: dict[str, int] = field(default_factory=dict)
    provider_fields: dict[str, Any] = field(default_factory=dict)  # kept in metadata, not screened

    def add_tool_call(self, position: int, call: Mapping[str, Any], where: str) -> None:
        """Merge a tool call or a streamed fragment of one (fragments share ``index``)."""
        known = {"index", "id", "type", "function"}
        _refuse_unknown(call, known, where)
        slot = self.tool_calls.setdefault(position, {"id": None, "type": "function", "name": "", "arguments": ""})
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function") or {}
        if not isinstance(function, Mapping):
            raise AdapterError(f"{where}.function: expected an object, got {type(function).__name__}")
        _refuse_unknown(function, {"name", "arguments"}, f"{where}.function")
        if function.get("name"):
            slot["name"] += function["name"]
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping | list):  # Ollama's native shape: already parsed JSON
            arguments = json.dumps(arguments, ensure_ascii=False)
        if arguments:
            slot["arguments"] += arguments

    def typed_tool_calls(self) -> list[dict[str, Any]] | None:
        if not self.tool_calls:
            return None
        return [
            {"id": c["id"], "type": c["type"], "function": {"name": c["name"], "arguments": c["arguments"]}}
            for _, c in sorted(self.tool_calls.items())
        ]


# --------------------------------------------------------------------------- public API


def from_openai(
    request: Mapping[str, Any],
    response: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    **context: Any,
) -> InferenceLog:
    """The one record of a single-choice exchange; see :func:`from_openai_all` for arguments.

    Raises :class:`AdapterError` when the response holds several choices, instead of keeping
    only the first.
    """
    logs = from_openai_all(request, response, **context)
    if len(logs) != 1:
        raise AdapterError(f"choices: {len(logs)} choices (n > 1); use from_openai_all for one record per choice")
    return logs[0]


def from_openai_all(
    request: Mapping[str, Any],
    response: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None,
    *,
    request_id: str | None = None,
    timestamp: datetime | None = None,
    deployment: str | None = None,
    tenant_id: str | None = None,
    user_id: str | None = None,
    latency_ms: float | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> list[InferenceLog]:
    """One InferenceLog per choice of an OpenAI-compatible exchange.

    ``response`` is a response object, a list of stream chunks or Responses API events, or
    ``None`` when the server produced nothing (the prompt is still logged). ``request_id``
    defaults to the response ``id``; ``timestamp`` to its creation time (else now);
    ``user_id`` to the request's ``user`` field.
    """
    if not isinstance(request, Mapping):
        raise AdapterError(f"request: expected a JSON object, got {type(request).__name__}")
    streamed = isinstance(response, Sequence) and not isinstance(response, str | bytes)
    streamed_choices: list[_Choice] | None = None
    if streamed:
        response, streamed_choices = _reassemble_stream(response)  # type: ignore[arg-type]
    response = response or {}
    if not isinstance(response, Mapping):
        raise AdapterError(f"response: expected a JSON object or a list of chunks, got {type(response).__name__}")

    is_responses_api = "input" in request or response.get("object") == "response"
    if is_responses_api:
        endpoint = "responses"
        messages, prompt, omitted = _responses_input(request)
        choices = [_responses_output(response)] if response else []
        usage = _usage(response.get("usage"), "input_tokens", "output_tokens")
        created = response.get("created_at")
    else:
        if "messages" in request:
            endpoint = "chat.completions"
            messages, omitted = _chat_messages(request["messages"], "messages")
            prompt = None
        elif "prompt" in request:
            endpoint = "completions"
            messages, prompt, omitted = None, request["prompt"], {}
        else:
            raise AdapterError("messages: the request has none of 'messages', 'prompt' or 'input'")
        if streamed_choices is not None:
            choices = streamed_choices
        else:
            choices = [_choice(c, i, endpoint) for i, c in enumerate(response.get("choices") or [])]
        usage = _usage(response.get("usage"), "prompt_tokens", "completion_tokens")
        created = response.get("created")

    base_id = request_id or response.get("id")
    ts = timestamp or (datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else datetime.now(UTC))
    choices = sorted(choices, key=lambda c: c.index) or [_Choice(index=0)]
    prompts = _prompt_per_choice(prompt, request.get("n"), len(choices))
    common: dict[str, Any] = {
        "schema": INFERENCE_LOG_V1,
        "timestamp": ts.isoformat(),
        "model": response.get("model") or request.get("model"),
        "deployment": deployment,
        "tenant_id": tenant_id,
        "user_id": user_id or request.get("user"),
        "messages": messages,
        "latency_ms": latency_ms,
    }
    # An identifier the schema cannot store (longer than 256 characters, a NUL, a number for
    # a string) must not keep the exchange out of the logs: a client could pick one on purpose.
    rewritten = [key for key in ("model", "tenant_id", "user_id") if _fit_identifier(common, key)]
    # A live user id shaped like a pseudonym would be kept as one (the verdicts keep stored
    # pseudonyms for re-scoring), so a client could file its requests under another user's
    # pseudonym (a privacy review, 2026-12-02). At ingestion it is a raw id: marked as one.
    if isinstance(common["user_id"], str) and PSEUDONYM.fullmatch(common["user_id"]):
        common["user_id"] = "client:" + common["user_id"]
        rewritten.append("user_id")
    logs = []
    for choice, choice_prompt in zip(choices, prompts, strict=True):
        meta: dict[str, Any] = dict(metadata or {})
        if rewritten:
            meta["rewritten_identifiers"] = rewritten
        meta["endpoint"] = endpoint
        if streamed:
            meta["streamed"] = True
        part_counts = {**omitted}
        for kind, n in choice.omitted.items():
            part_counts[kind] = part_counts.get(kind, 0) + n
        if part_counts:
            meta["omitted_parts"] = part_counts
        if choice.refusal:
            meta["refusal"] = "".join(choice.refusal)
        if choice.provider_fields:
            meta["provider_specific_fields"] = choice.provider_fields
        rid = base_id
        if len(choices) > 1:
            meta.update(request_group=base_id, choice_index=choice.index, choices=len(choices))
            rid = f"{base_id}#{choice.index}" if base_id and choice.index else base_id
        payload = {
            **common,
            "request_id": rid,
            "prompt": choice_prompt,
            "completion": "".join(choice.text) if choice.text else None,
            "reasoning_content": "".join(choice.reasoning) if choice.reasoning else None,
            "tool_calls": choice.typed_tool_calls(),
            "finish_reason": choice.finish_reason,
            # Token usage is per request, so it goes on the first record only (sums stay right).
            "usage": usage if choice is choices[0] else None,
            "metadata": meta,
        }
        try:
            logs.append(InferenceLog.model_validate({k: v for k, v in payload.items() if v is not None}))
        except ValidationError as exc:
            raise AdapterError(format_validation_error(exc)) from exc
    return logs


# --------------------------------------------------------------------------- requests

MAX_IDENTIFIER = 256  # inference-log/v1's limit for ids and names


def _fit_identifier(fields: dict[str, Any], key: str) -> bool:
    """Make ``fields[key]`` an identifier the schema stores; True if it had to be rewritten.

    An integer becomes its digits; a string longer than the limit, or holding a NUL or a lone
    surrogate, becomes ``sha256:<hex>`` of its UTF-8 bytes (stable, so one client's records still
    group together, and no longer than the limit). Other types are left for validation to name."""
    value = fields.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        fields[key] = str(value)
        return True
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
        storable = len(value) <= MAX_IDENTIFIER and "\x00" not in value
    except UnicodeEncodeError:
        storable = False
    if storable:
        return False
    fields[key] = "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return True


def _chat_messages(raw: Any, where: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Clean chat messages: text parts kept, other parts counted, tool calls typed."""
    if not isinstance(raw, list):
        raise AdapterError(f"{where}: expected a list of messages, got {type(raw).__name__}")
    omitted: dict[str, int] = {}
    out = []
    for i, message in enumerate(raw):
        at = f"{where}.{i}"
        if not isinstance(message, Mapping):
            raise AdapterError(f"{at}: expected an object, got {type(message).__name__}")
        _refuse_unknown(message, _MESSAGE_KEYS, at)
        clean: dict[str, Any] = {"role": message.get("role")}
        clean["content"] = _content(message.get("content"), f"{at}.content", omitted)
        reasoning = message.get("reasoning_content") or message.get("reasoning") or _thinking_text(message, at)
        if reasoning:
            clean["reasoning_content"] = _text(reasoning, f"{at}.reasoning_content")
        calls = _Choice()
        for j, call in enumerate(message.get("tool_calls") or []):
            calls.add_tool_call(j, call, f"{at}.tool_calls.{j}")
        if message.get("function_call"):  # the pre-tools "functions" API
            calls.add_tool_call(len(calls.tool_calls), {"function": message["function_call"]}, f"{at}.function_call")
        if calls.tool_calls:
            clean["tool_calls"] = calls.typed_tool_calls()
        for key in ("tool_call_id", "name", "refusal", "provider_specific_fields"):
            if message.get(key) is not None:
                clean[key] = message[key]
        for key in ("tool_call_id", "name"):
            _fit_identifier(clean, key)
        if message.get("audio"):
            omitted["audio"] = omitted.get("audio", 0) + 1
        out.append({k: v for k, v in clean.items() if v is not None})
    return out, omitted


def _content(raw: Any, where: str, omitted: dict[str, int]) -> str | list[dict[str, Any]] | None:
    if raw is None or isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise AdapterError(f"{where}: expected a string or a list of content parts, got {type(raw).__name__}")
    parts = []
    for k, part in enumerate(raw):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in TEXT_PART_TYPES:
            parts.append({"type": "text", "text": _text(part.get("text"), f"{where}.{k}.text")})
        elif kind == "refusal":
            parts.append({"type": "text", "text": _text(part.get("refusal"), f"{where}.{k}.refusal")})
        elif kind in NON_TEXT_PART_TYPES:
            omitted[kind] = omitted.get(kind, 0) + 1
        else:
            raise AdapterError(f"{where}.{k}.type: unknown content part type {kind!r}")
    return parts


def _responses_input(request: Mapping[str, Any]) -> tuple[list[dict[str, Any]] | None, str | None, dict[str, int]]:
    """Responses API ``instructions`` + ``input`` (a string or a list of items) as chat messages."""
    messages: list[dict[str, Any]] = []
    omitted: dict[str, int] = {}
    if request.get("instructions"):
        messages.append({"role": "system", "content": _text(request["instructions"], "instructions")})
    raw = request.get("input")
    if isinstance(raw, str):
        messages.append({"role": "user", "content": raw})
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            at = f"input.{i}"
            if not isinstance(item, Mapping):
                raise AdapterError(f"{at}: expected an object, got {type(item).__name__}")
            kind = item.get("type", "message")
            if kind == "message":
                content = _content(item.get("content"), f"{at}.content", omitted)
                messages.append({"role": item.get("role"), "content": content})
            elif kind == "function_call":
                call = _Choice()
                call.add_tool_call(0, _responses_call(item), at)
                messages.append({"role": "assistant", "content": None, "tool_calls": call.typed_tool_calls()})
            elif kind == "function_call_output":
                output = item.get("output")
                text = output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)
                messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
            elif kind == "reasoning":
                messages.append({"role": "assistant", "content": None, "reasoning_content": _reasoning_text(item, at)})
            elif kind in NON_TEXT_OUTPUT_ITEMS or kind == "item_reference":
                omitted[kind] = omitted.get(kind, 0) + 1
            else:
                raise AdapterError(f"{at}.type: unknown Responses input item type {kind!r}")
    elif raw is not None:
        raise AdapterError(f"input: expected a string or a list of items, got {type(raw).__name__}")
    if not messages:
        raise AdapterError("input: the Responses request has no input")
    return [{k: v for k, v in m.items() if v is not None} for m in messages], None, omitted


# --------------------------------------------------------------------------- responses


def _choice(raw: Any, position: int, endpoint: str) -> _Choice:
    where = f"choices.{position}"
    if not isinstance(raw, Mapping):
        raise AdapterError(f"{where}: expected an object, got {type(raw).__name__}")
    choice = _Choice(index=int(raw.get("index", position)), finish_reason=raw.get("finish_reason"))
    if "message" in raw:
        _add_message(choice, raw["message"] or {}, f"{where}.message")
    elif "text" in raw:
        if raw["text"]:
            choice.text.append(_text(raw["text"], f"{where}.text"))
    elif endpoint == "chat.completions" and raw.get("finish_reason") is None:
        raise AdapterError(f"{where}.message: missing")
    return choice


def _add_message(choice: _Choice, message: Any, where: str) -> None:
    """Add a full message or a stream delta (same keys) to ``choice``."""
    if not isinstance(message, Mapping):
        raise AdapterError(f"{where}: expected an object, got {type(message).__name__}")
    _refuse_unknown(message, _DELTA_KEYS, where)
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p["text"] for p in _content(content, f"{where}.content", choice.omitted) or [])
    if content:
        choice.text.append(_text(content, f"{where}.content"))
    for key in ("reasoning_content", "reasoning"):
        if message.get(key):
            choice.reasoning.append(_text(message[key], f"{where}.{key}"))
    if not (message.get("reasoning_content") or message.get("reasoning")) and message.get("thinking_blocks"):
        choice.reasoning.append(_thinking_text(message, where))
    if message.get("provider_specific_fields"):
        if not isinstance(message["provider_specific_fields"], Mapping):
            raise AdapterError(f"{where}.provider_specific_fields: expected an object")
        choice.provider_fields.update(message["provider_specific_fields"])
    if message.get("refusal"):
        choice.refusal.append(_text(message["refusal"], f"{where}.refusal"))
    for j, call in enumerate(message.get("tool_calls") or []):
        if not isinstance(call, Mapping):
            raise AdapterError(f"{where}.tool_calls.{j}: expected an object, got {type(call).__name__}")
        # Streamed fragments name their call by ``index``; full messages by position.
        choice.add_tool_call(int(call.get("index", j)), call, f"{where}.tool_calls.{j}")
    if message.get("function_call"):
        choice.add_tool_call(0, {"function": message["function_call"]}, f"{where}.function_call")
    if message.get("audio"):
        choice.omitted["audio"] = choice.omitted.get("audio", 0) + 1


def _responses_output(response: Mapping[str, Any]) -> _Choice:
    choice = _Choice(finish_reason=_responses_finish(response))
    for i, item in enumerate(response.get("output") or []):
        at = f"output.{i}"
        kind = item.get("type") if isinstance(item, Mapping) else None
        if kind == "message":
            for k, part in enumerate(item.get("content") or []):
                part_kind = part.get("type")
                if part_kind == "output_text":
                    choice.text.append(_text(part.get("text"), f"{at}.content.{k}.text"))
                elif part_kind == "refusal":
                    choice.refusal.append(_text(part.get("refusal"), f"{at}.content.{k}.refusal"))
                else:
                    raise AdapterError(f"{at}.content.{k}.type: unknown output content type {part_kind!r}")
        elif kind == "reasoning":
            text = _reasoning_text(item, at)
            if text:
                choice.reasoning.append(text)
        elif kind in ("function_call", "custom_tool_call"):
            choice.add_tool_call(len(choice.tool_calls), _responses_call(item), at)
        elif kind in NON_TEXT_OUTPUT_ITEMS:
            choice.omitted[kind] = choice.omitted.get(kind, 0) + 1
        else:
            raise AdapterError(f"{at}.type: unknown Responses output item type {kind!r}")
    return choice


def _responses_call(item: Mapping[str, Any]) -> dict[str, Any]:
    arguments = item.get("arguments", item.get("input", ""))
    return {"id": item.get("call_id") or item.get("id"), "function": {"name": item.get("name", ""), "arguments": arguments}}


def _reasoning_text(item: Mapping[str, Any], where: str) -> str:
    texts = [_text(p.get("text"), f"{where}.summary") for p in item.get("summary") or []]
    texts += [_text(p.get("text"), f"{where}.content") for p in item.get("content") or []]
    return "\n".join(t for t in texts if t)


def _responses_finish(response: Mapping[str, Any]) -> str | None:
    status = response.get("status")
    if status == "incomplete":
        return (response.get("incomplete_details") or {}).get("reason") or "incomplete"
    return "stop" if status == "completed" else status


# --------------------------------------------------------------------------- streams


def _reassemble_stream(chunks: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], list[_Choice] | None]:
    """Fold a list of stream chunks into the response's top-level fields and its choices.

    Chat deltas, text deltas, reasoning deltas and tool-call fragments are joined per choice
    ``index``; usage comes from whichever chunk carries it (the last one, for vLLM and OpenAI
    with ``stream_options.include_usage``). Responses API events give a response object instead.
    """
    if not chunks:
        return {}, None
    for i, chunk in enumerate(chunks):
        if not isinstance(chunk, Mapping):
            raise AdapterError(f"response.{i}: expected a chunk object, got {type(chunk).__name__}")
    if any(str(c.get("type", "")).startswith("response.") for c in chunks):
        return _reassemble_responses_events(chunks), None
    merged: dict[str, Any] = {}
    choices: dict[int, _Choice] = {}
    for i, chunk in enumerate(chunks):
        for key in ("id", "model", "created", "object"):
            if chunk.get(key) is not None and key not in merged:
                merged[key] = chunk[key]
        if chunk.get("usage"):
            merged["usage"] = chunk["usage"]  # vLLM/OpenAI: in the final chunk (stream_options.include_usage)
        for j, part in enumerate(chunk.get("choices") or []):
            at = f"response.{i}.choices.{j}"
            if not isinstance(part, Mapping):
                raise AdapterError(f"{at}: expected an object, got {type(part).__name__}")
            index = int(part.get("index", 0))
            choice = choices.setdefault(index, _Choice(index=index))
            if part.get("finish_reason"):
                choice.finish_reason = part["finish_reason"]
            if "delta" in part:
                _add_message(choice, part["delta"] or {}, f"{at}.delta")
            elif "text" in part:
                if part["text"]:
                    choice.text.append(_text(part["text"], f"{at}.text"))
            elif "message" in part:
                _add_message(choice, part["message"] or {}, f"{at}.message")
    return merged, [choices[i] for i in sorted(choices)]


def _reassemble_responses_events(events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The final ``response`` object of a Responses stream, or one rebuilt from its deltas.

    A client that disconnects mid-stream never sees ``response.completed``; what was streamed
    so far is still logged, with status ``incomplete``.
    """
    final = None
    snapshot: dict[str, Any] = {}
    items: dict[int, dict[str, Any]] = {}
    texts: dict[int, list[str]] = {}
    reasoning: dict[int, list[str]] = {}
    for event in events:
        kind = event.get("type", "")
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            final = event.get("response")
        elif isinstance(event.get("response"), Mapping):
            snapshot = dict(event["response"])
        elif kind == "response.output_item.done":
            items[int(event.get("output_index", len(items)))] = dict(event.get("item") or {})
        elif kind == "response.output_text.delta":
            texts.setdefault(int(event.get("output_index", 0)), []).append(event.get("delta", ""))
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            reasoning.setdefault(int(event.get("output_index", 0)), []).append(event.get("delta", ""))
    if final is not None:
        return dict(final)
    output = []
    for index in sorted(set(items) | set(texts) | set(reasoning)):
        if index in items:
            output.append(items[index])
        elif index in texts:
            output.append({"type": "message", "content": [{"type": "output_text", "text": "".join(texts[index])}]})
        else:
            output.append({"type": "reasoning", "summary": [{"type": "summary_text", "text": "".join(reasoning[index])}]})
    return {**snapshot, "object": "response", "status": "incomplete", "output": output}


# --------------------------------------------------------------------------- helpers


def _prompt_per_choice(prompt: Any, n: Any, count: int) -> list[str | None]:
    """Legacy completions: a list of k prompts with ``n`` samples each gives k*n choices,
    choice ``i`` answering prompt ``i // n``."""
    if prompt is None:
        return [None] * count
    if isinstance(prompt, str):
        return [prompt] * count
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) == 1:
            return [prompt[0]] * count
        per_prompt = int(n or 1)
        if count == 1 and per_prompt == 1 and len(prompt) > 1:
            return ["\n".join(prompt)]  # no response (or an error): every prompt in one record
        if count != len(prompt) * per_prompt:
            raise AdapterError(f"choices: {count} choices for {len(prompt)} prompts with n={per_prompt}")
        return [prompt[i // per_prompt] for i in range(count)]
    raise AdapterError("prompt: token-id prompts cannot be screened; send text prompts")


def _usage(raw: Any, prompt_key: str, completion_key: str) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    usage = {"prompt_tokens": raw.get(prompt_key), "completion_tokens": raw.get(completion_key)}
    details = raw.get("completion_tokens_details") or raw.get("output_tokens_details") or {}
    if details.get("reasoning_tokens") is not None:
        usage["reasoning_tokens"] = details["reasoning_tokens"]
    return {k: v for k, v in usage.items() if v is not None} or None


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AdapterError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _thinking_text(message: Mapping[str, Any], where: str) -> str | None:
    """The text of LiteLLM's ``thinking_blocks`` (LiteLLM usually also sets ``reasoning_content``)."""
    blocks = message.get("thinking_blocks")
    if not blocks:
        return None
    if not isinstance(blocks, list):
        raise AdapterError(f"{where}.thinking_blocks: expected a list")
    texts = []
    for k, block in enumerate(blocks):
        if not isinstance(block, Mapping):
            raise AdapterError(f"{where}.thinking_blocks.{k}: expected an object")
        if block.get("type") == "redacted_thinking":
            continue  # encrypted by the provider: no text to screen
        texts.append(_text(block.get("thinking", block.get("text")), f"{where}.thinking_blocks.{k}.thinking"))
    return "\n".join(t for t in texts if t) or None


def _refuse_unknown(obj: Mapping[str, Any], known: Iterable[str], where: str) -> None:
    """Raise on a non-empty field we do not map: it may be text nobody would screen."""
    unknown = sorted(k for k, v in obj.items() if k not in known and v not in (None, "", [], {}))
    if unknown:
        raise AdapterError(f"{where}.{unknown[0]}: unknown field (known: {', '.join(sorted(known))})")
