"""Adapters from OpenAI-compatible request/response payloads to inference-log/v1.

In: one request body and what the server answered -- a response object, the list of chunks of
a stream (``chat.completion.chunk`` / streamed ``text_completion``), or the Responses API's
``response`` object or event list. Out: one :class:`InferenceLog` per generated choice.

vLLM, SGLang, TGI's Messages API, llama.cpp server, Ollama's ``/v1`` and LiteLLM all speak this
dialect. Everything that carries text a detector must see is kept: message content, tool call
arguments, tool results, reasoning (``reasoning_content`` / ``reasoning``) and refusals. Parts
that are not text (images, audio, files) are counted in ``metadata.omitted_parts``, not kept: a
base64 image is large and no detector reads it. A content part, input or output item type this
module does not know raises :class:`AdapterError` naming the field's path (never a value from
the payload), so new server features show up as errors, never as silently unscreened traffic;
a content part of an unknown type is the exception: its strings are screened as text and its
path is listed in ``metadata.unknown_fields``, as for keys. An unknown key of a message, delta or tool call (Mistral's ``prefix``, a client's own extra)
does not: the rest of the message is still screened and the key's path is listed in
``metadata.unknown_fields``, since refusing the exchange kept its whole prompt unscreened.

The request is read by the route it was sent to (``endpoint``), as the upstream reads it; a
text-bearing key of another route's shape is named in ``metadata.ignored_fields``.

``n > 1``: each choice becomes its own record. The first choice keeps the ``request_id``
(given, else the response id); the ``i``-th gets ``<id>#<i>``; all carry
``metadata.request_group = <id>`` and ``metadata.choice_index`` so they can be joined back.
A given ``request_id`` that is not the response's id keeps the latter as ``metadata.upstream_id``.
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
from pipeline.schemas import INFERENCE_LOG_V1, InferenceLog, ToolDefinition, bounded_tool, json_strings, readable_tool
from pipeline.verdicts import ingested_user_id

# Content part types that carry no text: counted, never kept.
NON_TEXT_PART_TYPES = frozenset(
    {"image_url", "input_image", "image", "input_audio", "audio_url", "video_url", "file", "input_file"}
)
TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
# Parts whose text sits under another key: vLLM renders a ``thinking`` part (Anthropic-style
# blocks sent back in the history) into the prompt the model reads, whatever the role.
TEXT_PART_KEYS = {"refusal": "refusal", "thinking": "thinking"}
# Responses API output items that are server-side tool activity without model-written text.
NON_TEXT_OUTPUT_ITEMS = frozenset(
    {"web_search_call", "file_search_call", "image_generation_call", "computer_call", "code_interpreter_call"}
)
_MESSAGE_KEYS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "reasoning_content", "reasoning", "thinking", "refusal",
     "function_call", "annotations", "audio",
     # LiteLLM (SDK and proxy): Anthropic-style thinking blocks, and provider extras; prompt
     # caching marks (Anthropic, LiteLLM) carry no text
     "thinking_blocks", "provider_specific_fields", "cache_control"}
)  # fmt: skip
_DELTA_KEYS = _MESSAGE_KEYS
# Top-level request keys that carry the text of each route's shape (what its upstream reads).
_ROUTE_TEXT_KEYS = {
    "chat.completions": frozenset({"messages"}),
    "completions": frozenset({"prompt"}),
    "responses": frozenset({"input", "instructions"}),
}
MAX_UNKNOWN_FIELDS = 20  # paths listed in metadata.unknown_fields; a client could send thousands
# Request keys whose text the upstream reads but no inference-log/v1 field holds (metadata.unscreened_fields).
UNSCREENED_REQUEST_KEYS = ("documents", "suffix")
# Request keys that offer the model tools: screened as ``tools`` (inference-log/v1).
TOOL_REQUEST_KEYS = ("tools", "functions")
# Above this much JSON, the tools are kept as their name and screened text (the schemas dropped).
TOOLS_MAX_BYTES = 64 * 1024


def _tool_definitions(request: Mapping[str, Any], metadata: dict[str, Any]) -> list[Any] | None:
    """The tools a request offers the model (chat ``tools``, legacy ``functions``), as
    inference-log/v1 ``tools``: chat templates render their names, descriptions and argument
    schemas into the prompt, so a tool can carry an injection. inference-log/v1 reads any entry
    leniently (an entry it cannot read becomes the text of its strings), so no tool keeps the
    exchange from the detectors. Each tool is cut to :data:`TOOL_MAX_DEPTH` levels (a deep dummy
    tool made the record a ``too_deep`` dead letter), and tools over :data:`TOOLS_MAX_BYTES` are
    kept as their name and screened text (``metadata.tools_compacted``): 170 ordinary MCP tools
    made a record over the stream's 1 MiB limit (a hostile review, 2026-12-06)."""
    tools: list[Any] = []
    for key in TOOL_REQUEST_KEYS:
        offered = request.get(key)
        if offered in (None, "", [], {}):
            continue
        for item in offered if isinstance(offered, list) else [offered]:
            tool = {"type": "function", "function": item} if key == "functions" and isinstance(item, Mapping) else item
            tools.append(bounded_tool(tool))
    if not tools:
        return None
    if len(json.dumps(tools, ensure_ascii=False, default=str)) > TOOLS_MAX_BYTES:
        compact = []
        for tool in tools:
            if (readable := readable_tool(tool)) is None:
                continue
            read = ToolDefinition.model_validate(readable)
            name = read.name or (read.function.name if read.function else None)
            compact.append({"type": read.type or "function", "function": {"name": name, "description": read.text}})
        metadata["tools_compacted"] = True
        tools = compact
    return tools or None


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
    unknown_fields: list[str] = field(default_factory=list)  # paths of keys we do not map
    # Streamed fragments without ``index``: position in the chunk -> the slot it last fed.
    unindexed_slots: dict[int, int] = field(default_factory=dict)

    def add_tool_call(self, position: int, call: Any, where: str) -> None:
        """Merge a tool call or a streamed fragment of one (fragments share ``index``)."""
        if not isinstance(call, Mapping):
            raise AdapterError(f"{where}: expected an object, got {type(call).__name__}")
        _note_unknown(call, {"index", "id", "type", "function"}, where, self.unknown_fields)
        slot = self.tool_calls.setdefault(position, {"id": None, "type": "function", "name": "", "arguments": ""})
        if call.get("id"):
            slot["id"] = call["id"]
        if call.get("type"):
            slot["type"] = call["type"]
        function = call.get("function") or {}
        if not isinstance(function, Mapping):
            raise AdapterError(f"{where}.function: expected an object, got {type(function).__name__}")
        _note_unknown(function, {"name", "arguments"}, f"{where}.function", self.unknown_fields)
        slot["name"] += _text(function.get("name"), f"{where}.function.name")
        arguments = function.get("arguments")
        if isinstance(arguments, Mapping | list):  # Ollama's native shape: already parsed JSON
            arguments = json.dumps(arguments, ensure_ascii=False)
        slot["arguments"] += _text(arguments, f"{where}.function.arguments")

    def unindexed_position(self, j: int, call: Mapping[str, Any]) -> int:
        """The slot of a streamed fragment without ``index`` at position ``j`` of its chunk.

        Such fragments used to be keyed by ``j`` alone, so two calls sent in separate chunks
        merged into one (a hostile review, B6). A fragment whose ``id`` differs from its slot's
        starts a new call; one without an id continues the call last fed from ``j``."""
        position = self.unindexed_slots.get(j, j)
        slot = self.tool_calls.get(position)
        function = call.get("function")
        names_one = isinstance(function, Mapping) and bool(function.get("name"))
        if slot is not None and (
            (call.get("id") and slot["id"] and slot["id"] != call["id"])
            # No id, but a function name where the slot has one already: a second call (its
            # name and arguments were merged into the first's: "fg", '{"x":"ONE"}{"x":"TWO"}').
            or (not call.get("id") and names_one and slot["name"])
        ):
            position = max(self.tool_calls) + 1
        self.unindexed_slots[j] = position
        return position

    def typed_tool_calls(self) -> list[dict[str, Any]] | None:
        if not self.tool_calls:
            return None
        out = []
        for _, c in sorted(self.tool_calls.items()):
            # A call id or a function name the schema cannot store (300 characters, a NUL: a
            # client's forged history, or a model's) refused the whole exchange (2026-12-06).
            ident = {"id": c["id"], "type": c["type"], "name": c["name"]}
            for key in ident:
                _fit_identifier(ident, key)
            out.append({"id": ident["id"], "type": ident["type"], "function": {"name": ident["name"], "arguments": c["arguments"]}})
        return out


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
    endpoint: str | None = None,
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
    ``None`` when the server produced nothing (the prompt is still logged). ``endpoint`` is the
    route the request was sent to (``chat.completions``, ``completions``, ``responses``): the
    request is then read as that route's upstream reads it; without it the shape is inferred
    from the keys present. ``request_id`` defaults to the response ``id``; ``timestamp`` to its
    creation time (else now); ``user_id`` to the request's ``user`` field.
    """
    if not isinstance(request, Mapping):
        raise AdapterError(f"request: expected a JSON object, got {type(request).__name__}")
    if endpoint is not None and endpoint not in _ROUTE_TEXT_KEYS:
        raise AdapterError(f"endpoint: expected one of {', '.join(sorted(_ROUTE_TEXT_KEYS))}")
    streamed = isinstance(response, Sequence) and not isinstance(response, str | bytes)
    streamed_choices: list[_Choice] | None = None
    if streamed:
        response, streamed_choices = _reassemble_stream(response)  # type: ignore[arg-type]
    response = response or {}
    if not isinstance(response, Mapping):
        raise AdapterError(f"response: expected a JSON object or a list of chunks, got {type(response).__name__}")

    shape = _request_shape(request, response, endpoint)
    unknown: list[str] = []
    if shape == "responses":
        messages, prompt, omitted = _responses_input(request, unknown)
        choices = [_responses_output(response)] if response else []
        usage = _usage(response.get("usage"), "input_tokens", "output_tokens")
        created, created_key = response.get("created_at"), "created_at"
    else:
        if shape == "chat.completions":
            messages, omitted = _chat_messages(request["messages"], "messages", unknown)
            prompt = None
        else:
            messages, prompt, omitted = None, request["prompt"], {}
        if streamed_choices is not None:
            choices = streamed_choices
        else:
            choices = [_choice(c, i, shape) for i, c in enumerate(_list(response.get("choices"), "choices"))]
        usage = _usage(response.get("usage"), "prompt_tokens", "completion_tokens")
        created, created_key = response.get("created"), "created"
    # Foreign keys are not screened: the upstream of this route does not read them, so the model
    # never saw that text, and logging it as the conversation would misstate what it read (a
    # decoy could also raise alerts at will). Naming them keeps the oddity visible.
    ignored = sorted(
        key for keys in _ROUTE_TEXT_KEYS.values() for key in keys
        if key not in _ROUTE_TEXT_KEYS[shape] and request.get(key) not in (None, "", [], {})
    )  # fmt: skip
    # Text the upstream does read but inference-log/v1 has no field for: vLLM's `documents`, a
    # completion's `suffix`. Not screened; named, so it is not silent.
    unscreened = sorted(key for key in UNSCREENED_REQUEST_KEYS if request.get(key) not in (None, "", [], {}))
    tool_notes: dict[str, Any] = {}
    tools = _tool_definitions(request, tool_notes)

    upstream_id = response.get("id")
    base_id = request_id or upstream_id
    ts = timestamp or _created_at(created, created_key)
    choices = sorted(choices, key=lambda c: c.index) or [_Choice(index=0)]
    if _token_ids(prompt):
        # vLLM and SGLang take a prompt as token ids, which only the model's tokenizer turns back
        # into text: not screened, and named. The exchange is still logged: refusing it kept the
        # text completion away from the detectors too (a hostile review, 2026-12-07). The prompt
        # is logged empty (the schema wants one), with "prompt" in metadata.unscreened_fields.
        unscreened = sorted({*unscreened, "prompt"})
        prompt = ""
    prompts = _prompt_per_choice(prompt, request.get("n"), len(choices))
    common: dict[str, Any] = {
        "schema": INFERENCE_LOG_V1,
        "timestamp": ts.isoformat(),
        "model": response.get("model") or request.get("model"),
        "deployment": deployment,
        "tenant_id": tenant_id,
        "user_id": user_id or request.get("user"),
        "messages": messages,
        "tools": tools,
        "latency_ms": latency_ms,
    }
    # An identifier the schema cannot store (longer than 256 characters, a NUL, a number for
    # a string) must not keep the exchange out of the logs: a client could pick one on purpose.
    rewritten = [key for key in ("model", "tenant_id", "user_id") if _fit_identifier(common, key)]
    # A live user id shaped like a pseudonym would be kept as one (the verdicts keep stored
    # pseudonyms for re-scoring), so a client could file its requests under another user's
    # pseudonym (a privacy review, 2026-12-02). At ingestion it is a raw id: marked as one.
    if isinstance(common["user_id"], str) and (marked := ingested_user_id(common["user_id"])) != common["user_id"]:
        common["user_id"] = marked
        rewritten.append("user_id")
    logs = []
    for position, (choice, choice_prompt) in enumerate(zip(choices, prompts, strict=True)):
        meta: dict[str, Any] = dict(metadata or {})
        if rewritten:
            meta["rewritten_identifiers"] = rewritten
        meta["endpoint"] = shape
        if endpoint is not None and endpoint != shape:
            meta["route"] = endpoint
        if ignored:
            meta["ignored_fields"] = ignored
        if unscreened:
            meta["unscreened_fields"] = unscreened
        meta.update(tool_notes)
        if isinstance(upstream_id, str) and upstream_id and upstream_id != base_id:
            meta["upstream_id"] = upstream_id
        unknown_fields = list(dict.fromkeys([*unknown, *choice.unknown_fields]))
        if unknown_fields:
            meta["unknown_fields"] = unknown_fields[:MAX_UNKNOWN_FIELDS]
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
            # By position, not by the upstream's index: two choices claiming one index (or one
            # index repeated across n) must not share a request_id, the sinks' upsert key.
            rid = f"{base_id}#{position}" if base_id and position else base_id
        completion = "".join(choice.text) if choice.text else None
        if shape == "completions" and request.get("echo") is True and isinstance(choice_prompt, str) and completion:
            # `echo: true` returns the prompt before the generated text: it was screened as the
            # model's output, and the user's words made it "complied" (2026-12-06).
            meta["echo"] = True
            if completion.startswith(choice_prompt):
                completion = completion[len(choice_prompt):] or None
        payload = {
            **common,
            "request_id": rid,
            "prompt": choice_prompt,
            "completion": completion,
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


def _request_shape(request: Mapping[str, Any], response: Mapping[str, Any], endpoint: str | None) -> str:
    """The shape to read the request as: its route's when it carries that route's text.

    Inferring it from the keys present let one key hide another: ``input`` on the chat route
    was read as a Responses request and ``messages`` on the completions route won over
    ``prompt``, while the upstream read the other (a hostile review, B1). Without a route, or
    when the request lacks the route's keys (the upstream refuses it; its text is still
    logged), the keys decide as before."""
    if endpoint is not None and any(request.get(key) is not None for key in _ROUTE_TEXT_KEYS[endpoint]):
        return endpoint
    if "input" in request or response.get("object") == "response":
        return "responses"
    if "messages" in request:
        return "chat.completions"
    if "prompt" in request:
        return "completions"
    raise AdapterError("messages: the request has none of 'messages', 'prompt' or 'input'")


def _created_at(created: Any, where: str) -> datetime:
    """The response's Unix creation time as a datetime (now if it has none)."""
    if isinstance(created, bool) or not isinstance(created, int | float):
        return datetime.now(UTC)
    try:
        return datetime.fromtimestamp(created, UTC)
    except (OverflowError, ValueError, OSError) as exc:
        raise AdapterError(f"{where}: not a representable Unix time") from exc


MAX_IDENTIFIER = 256  # inference-log/v1's limit for ids and names


def _fit_identifier(fields: dict[str, Any], key: str) -> bool:
    """Make ``fields[key]`` an identifier the schema stores; True if it had to be rewritten.

    An integer becomes its digits; a string longer than the limit, or holding a NUL or a lone
    surrogate, becomes ``sha256:<hex>`` of its UTF-8 bytes (stable, so one client's records still
    group together, and no longer than the limit); any other value (a bool, a float, an object)
    becomes ``sha256:`` of its JSON."""
    value = fields.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        fields[key] = str(value)
        return True
    if value is None:
        return False
    if not isinstance(value, str):
        # `user: true`, `1.5`, `{"id": "x"}`: llama.cpp and Ollama ignore the field and answer,
        # so refusing the record kept the exchange unscreened (a review, 2026-12-06).
        blob = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        fields[key] = "sha256:" + hashlib.sha256(blob.encode("utf-8", "surrogatepass")).hexdigest()
        return True
    try:
        value.encode("utf-8")
        storable = len(value) <= MAX_IDENTIFIER and "\x00" not in value
    except UnicodeEncodeError:
        storable = False
    if storable:
        return False
    fields[key] = "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()
    return True


def _chat_messages(raw: Any, where: str, unknown: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Clean chat messages: text parts kept, other parts counted, tool calls typed; the paths
    of keys not mapped are added to ``unknown``."""
    if not isinstance(raw, list):
        raise AdapterError(f"{where}: expected a list of messages, got {type(raw).__name__}")
    omitted: dict[str, int] = {}
    out = []
    for i, message in enumerate(raw):
        at = f"{where}.{i}"
        if not isinstance(message, Mapping):
            raise AdapterError(f"{at}: expected an object, got {type(message).__name__}")
        _note_unknown(message, _MESSAGE_KEYS, at, unknown)
        clean: dict[str, Any] = {"role": _role(message.get("role"))}
        clean["content"] = _content(message.get("content"), f"{at}.content", omitted, unknown)
        # vLLM's and SGLang's reasoning_content (renamed reasoning), Ollama's and the gpt-oss chat
        # template's thinking (unscreened until a hostile review, 2026-12-07), LiteLLM's blocks;
        # each distinct text once (servers send one text under two names).
        # A value that is not a string (a server's structured reasoning) is read as its strings.
        texts = (value if isinstance(value, str) else "\n".join(json_strings(value))
                 for value in (message.get("reasoning_content"), message.get("reasoning"), message.get("thinking"),
                               _thinking_text(message, at)))  # fmt: skip
        reasoning = "\n".join(dict.fromkeys(text for text in texts if text))
        if reasoning:
            clean["reasoning_content"] = reasoning
        calls = _Choice()
        for j, call in enumerate(_list(message.get("tool_calls"), f"{at}.tool_calls")):
            calls.add_tool_call(j, call, f"{at}.tool_calls.{j}")
        if message.get("function_call"):  # the pre-tools "functions" API
            calls.add_tool_call(len(calls.tool_calls), {"function": message["function_call"]}, f"{at}.function_call")
        if calls.tool_calls:
            clean["tool_calls"] = calls.typed_tool_calls()
        unknown.extend(calls.unknown_fields)
        for key in ("tool_call_id", "name", "refusal", "provider_specific_fields"):
            if message.get(key) is not None:
                clean[key] = message[key]
        for key in ("tool_call_id", "name"):
            _fit_identifier(clean, key)
        if message.get("audio"):
            omitted["audio"] = omitted.get("audio", 0) + 1
        out.append({k: v for k, v in clean.items() if v is not None})
    return out, omitted


MAX_ROLE = 32  # inference-log/v1's limit for a message role
UNNAMED_ROLE = "unrecognised"


def _role(value: Any) -> Any:
    """A role the schema cannot store (33 characters, a NUL) as UNNAMED_ROLE: a role the schema
    does not name is screened as the user's turn, and refusing it kept the exchange out
    (2026-12-06). A missing role is left for validation to name."""
    if value is None or (isinstance(value, str) and 0 < len(value) <= MAX_ROLE and "\x00" not in value):
        return value
    return UNNAMED_ROLE


def _content(
    raw: Any, where: str, omitted: dict[str, int], unknown: list[str]
) -> str | list[dict[str, Any]] | None:
    if raw is None or isinstance(raw, str):
        return raw
    if not isinstance(raw, list):
        raise AdapterError(f"{where}: expected a string or a list of content parts, got {type(raw).__name__}")
    parts = []
    for k, part in enumerate(raw):
        if isinstance(part, str):  # vLLM reads a plain string in a parts list as a text part
            parts.append({"type": "text", "text": part})
            continue
        kind = _type_of(part)
        if kind in TEXT_PART_TYPES:
            parts.append({"type": "text", "text": _text(part.get("text"), f"{where}.{k}.text")})
        elif kind in TEXT_PART_KEYS:
            key = TEXT_PART_KEYS[kind]
            parts.append({"type": "text", "text": _text(part.get(key), f"{where}.{k}.{key}")})
        elif kind in NON_TEXT_PART_TYPES:
            omitted[kind] = omitted.get(kind, 0) + 1
        elif isinstance(part, Mapping):
            # A part type this module does not know: its text is screened and its path named in
            # metadata.unknown_fields. Refusing it kept the whole exchange unscreened, and a
            # server may read it (a `thinking` part did that before it was known; a hostile
            # review, 2026-12-07).
            if len(unknown) < MAX_UNKNOWN_FIELDS:
                unknown.append(f"{where}.{k}.type")
            parts.append({"type": "text", "text": "\n".join(json_strings({k: v for k, v in part.items() if k != "type"}))})
        else:
            raise AdapterError(f"{where}.{k}: expected an object or a string, got {type(part).__name__}")
    return parts


def _responses_input(
    request: Mapping[str, Any], unknown: list[str]
) -> tuple[list[dict[str, Any]] | None, str | None, dict[str, int]]:
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
            kind = _type_of(item, "message")
            if kind == "message":
                content = _content(item.get("content"), f"{at}.content", omitted, unknown)
                messages.append({"role": _role(item.get("role")), "content": content})
            elif kind == "function_call":
                call = _Choice()
                call.add_tool_call(0, _responses_call(item), at)
                unknown.extend(call.unknown_fields)
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
                raise AdapterError(f"{at}.type: unknown Responses input item type")
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
    choice = _Choice(index=_index(raw.get("index", position), f"{where}.index"), finish_reason=raw.get("finish_reason"))
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
    _note_unknown(message, _DELTA_KEYS, where, choice.unknown_fields)
    content = message.get("content")
    if isinstance(content, list):
        parts = _content(content, f"{where}.content", choice.omitted, choice.unknown_fields)
        content = "".join(p["text"] for p in parts or [])
    if content:
        choice.text.append(_text(content, f"{where}.content"))
    # One field, as on the request side: servers that send both (vLLM while renaming
    # ``reasoning_content`` to ``reasoning``) send the same text twice.
    # (Ollama and the gpt-oss template name it ``thinking``.)
    key = next((k for k in ("reasoning_content", "reasoning", "thinking") if message.get(k)), None)
    if key is not None:
        choice.reasoning.append(_text(message[key], f"{where}.{key}"))
    elif message.get("thinking_blocks"):
        choice.reasoning.append(_thinking_text(message, where))
    if message.get("provider_specific_fields"):
        if not isinstance(message["provider_specific_fields"], Mapping):
            raise AdapterError(f"{where}.provider_specific_fields: expected an object")
        choice.provider_fields.update(message["provider_specific_fields"])
    if message.get("refusal"):
        choice.refusal.append(_text(message["refusal"], f"{where}.refusal"))
    for j, call in enumerate(_list(message.get("tool_calls"), f"{where}.tool_calls")):
        at = f"{where}.tool_calls.{j}"
        if not isinstance(call, Mapping):
            raise AdapterError(f"{at}: expected an object, got {type(call).__name__}")
        # Streamed fragments name their call by ``index``; full messages by position.
        position = _index(call["index"], f"{at}.index") if "index" in call else choice.unindexed_position(j, call)
        choice.add_tool_call(position, call, at)
    if message.get("function_call"):
        choice.add_tool_call(0, {"function": message["function_call"]}, f"{where}.function_call")
    if message.get("audio"):
        choice.omitted["audio"] = choice.omitted.get("audio", 0) + 1


def _responses_output(response: Mapping[str, Any]) -> _Choice:
    choice = _Choice(finish_reason=_responses_finish(response))
    for i, item in enumerate(_list(response.get("output"), "output")):
        at = f"output.{i}"
        kind = _type_of(item)
        if kind == "message":
            for k, part in enumerate(_list(item.get("content"), f"{at}.content")):
                if not isinstance(part, Mapping):
                    raise AdapterError(f"{at}.content.{k}: expected an object, got {type(part).__name__}")
                part_kind = part.get("type")
                if part_kind == "output_text":
                    choice.text.append(_text(part.get("text"), f"{at}.content.{k}.text"))
                elif part_kind == "refusal":
                    choice.refusal.append(_text(part.get("refusal"), f"{at}.content.{k}.refusal"))
                else:
                    raise AdapterError(f"{at}.content.{k}.type: unknown output content type")
        elif kind == "reasoning":
            text = _reasoning_text(item, at)
            if text:
                choice.reasoning.append(text)
        elif kind in ("function_call", "custom_tool_call"):
            choice.add_tool_call(len(choice.tool_calls), _responses_call(item), at)
        elif kind in NON_TEXT_OUTPUT_ITEMS:
            choice.omitted[kind] = choice.omitted.get(kind, 0) + 1
        else:
            raise AdapterError(f"{at}.type: unknown Responses output item type")
    return choice


def _responses_call(item: Mapping[str, Any]) -> dict[str, Any]:
    arguments = item.get("arguments", item.get("input", ""))
    return {"id": item.get("call_id") or item.get("id"), "function": {"name": item.get("name", ""), "arguments": arguments}}


def _reasoning_text(item: Mapping[str, Any], where: str) -> str:
    texts = []
    for key in ("summary", "content"):
        for k, part in enumerate(_list(item.get(key), f"{where}.{key}")):
            if not isinstance(part, Mapping):
                raise AdapterError(f"{where}.{key}.{k}: expected an object, got {type(part).__name__}")
            texts.append(_text(part.get("text"), f"{where}.{key}.{k}.text"))
    return "\n".join(t for t in texts if t)


def _responses_finish(response: Mapping[str, Any]) -> str | None:
    status = response.get("status")
    if status == "incomplete":
        details = response.get("incomplete_details") or {}
        if not isinstance(details, Mapping):
            raise AdapterError(f"incomplete_details: expected an object, got {type(details).__name__}")
        return details.get("reason") or "incomplete"
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
        for j, part in enumerate(_list(chunk.get("choices"), f"response.{i}.choices")):
            at = f"response.{i}.choices.{j}"
            if not isinstance(part, Mapping):
                raise AdapterError(f"{at}: expected an object, got {type(part).__name__}")
            index = _index(part.get("index", 0), f"{at}.index")
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
    # A function call and a refusal stream as deltas too; a stream cut before their `.done`
    # lost them without a trace (a review, 2026-12-06).
    calls: dict[int, dict[str, Any]] = {}
    arguments: dict[int, list[str]] = {}
    refusals: dict[int, list[str]] = {}
    for i, event in enumerate(events):
        kind = event.get("type", "")
        at = f"response.{i}"
        if kind in ("response.completed", "response.incomplete", "response.failed"):
            final = event.get("response")
            if final is not None and not isinstance(final, Mapping):
                raise AdapterError(f"{at}.response: expected an object, got {type(final).__name__}")
        elif isinstance(event.get("response"), Mapping):
            snapshot = dict(event["response"])
        elif kind == "response.output_item.done":
            item = event.get("item") or {}
            if not isinstance(item, Mapping):
                raise AdapterError(f"{at}.item: expected an object, got {type(item).__name__}")
            items[_index(event.get("output_index", len(items)), f"{at}.output_index")] = dict(item)
        elif kind == "response.output_text.delta":
            index = _index(event.get("output_index", 0), f"{at}.output_index")
            texts.setdefault(index, []).append(_text(event.get("delta"), f"{at}.delta"))
        elif kind in ("response.reasoning_text.delta", "response.reasoning_summary_text.delta"):
            index = _index(event.get("output_index", 0), f"{at}.output_index")
            reasoning.setdefault(index, []).append(_text(event.get("delta"), f"{at}.delta"))
        elif kind == "response.output_item.added" and isinstance(event.get("item"), Mapping):
            if event["item"].get("type") == "function_call":
                calls[_index(event.get("output_index", 0), f"{at}.output_index")] = dict(event["item"])
        elif kind == "response.function_call_arguments.delta":
            index = _index(event.get("output_index", 0), f"{at}.output_index")
            arguments.setdefault(index, []).append(_text(event.get("delta"), f"{at}.delta"))
        elif kind == "response.refusal.delta":
            index = _index(event.get("output_index", 0), f"{at}.output_index")
            refusals.setdefault(index, []).append(_text(event.get("delta"), f"{at}.delta"))
    if final is not None:
        return dict(final)
    output = []
    for index in sorted(set(items) | set(texts) | set(reasoning) | set(calls) | set(arguments) | set(refusals)):
        if index in items:
            output.append(items[index])
        elif index in calls or index in arguments:
            call = calls.get(index, {"type": "function_call", "name": ""})
            output.append({**call, "arguments": call.get("arguments") or "".join(arguments.get(index, []))})
        elif index in texts or index in refusals:
            parts = [{"type": "output_text", "text": "".join(texts[index])}] if index in texts else []
            if index in refusals:
                parts.append({"type": "refusal", "refusal": "".join(refusals[index])})
            output.append({"type": "message", "content": parts})
        else:
            output.append({"type": "reasoning", "summary": [{"type": "summary_text", "text": "".join(reasoning[index])}]})
    return {**snapshot, "object": "response", "status": "incomplete", "output": output}


# --------------------------------------------------------------------------- helpers


def _token_ids(prompt: Any) -> bool:
    """A legacy completions prompt given as token ids: ``[1, 2]`` or ``[[1, 2], [3]]``."""

    def ids(value: Any) -> bool:
        return isinstance(value, list) and bool(value) and all(isinstance(i, int) and not isinstance(i, bool) for i in value)

    return ids(prompt) or (isinstance(prompt, list) and bool(prompt) and all(ids(p) for p in prompt))


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
        per_prompt = _index(n, "n") if n else 1
        if count == 1 and per_prompt == 1 and len(prompt) > 1:
            return ["\n".join(prompt)]  # no response (or an error): every prompt in one record
        if count != len(prompt) * per_prompt:
            raise AdapterError(f"choices: {count} choices for {len(prompt)} prompts with n={per_prompt}")
        return [prompt[i // per_prompt] for i in range(count)]
    raise AdapterError("prompt: expected a string or a list of strings (or of token ids)")


def _usage(raw: Any, prompt_key: str, completion_key: str) -> dict[str, Any] | None:
    if not isinstance(raw, Mapping):
        return None
    usage = {"prompt_tokens": raw.get(prompt_key), "completion_tokens": raw.get(completion_key)}
    details_key = "completion_tokens_details" if raw.get("completion_tokens_details") else "output_tokens_details"
    details = raw.get(details_key) or {}
    if not isinstance(details, Mapping):
        raise AdapterError(f"usage.{details_key}: expected an object, got {type(details).__name__}")
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


MAX_KEY_IN_PATH = 64  # characters of an unknown key kept in its path; longer names are cut


def _note_unknown(obj: Mapping[str, Any], known: Iterable[str], where: str, unknown: list[str]) -> None:
    """Add the paths of non-empty keys we do not map to ``unknown`` (never their values).

    Raising here kept the whole exchange out of the logs for one extra key (Mistral's
    ``prefix: true``; a hostile review, B2), so the message's known text went unscreened too."""
    known = frozenset(known)
    for key, value in obj.items():
        if key not in known and value not in (None, "", [], {}) and len(unknown) < MAX_UNKNOWN_FIELDS:
            unknown.append(f"{where}.{str(key)[:MAX_KEY_IN_PATH]}")


def _type_of(obj: Any, default: str | None = None) -> str | None:
    """An object's ``type`` if it is a string (a list there made ``in {...}`` raise TypeError)."""
    kind = obj.get("type", default) if isinstance(obj, Mapping) else None
    return kind if isinstance(kind, str) else None


def _index(value: Any, where: str) -> int:
    """A choice, tool-call or output index; anything but an integer raises AdapterError."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise AdapterError(f"{where}: expected an integer, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list[Any]:
    """A list field (absent or empty: no items); anything else raises AdapterError."""
    if not value:
        return []
    if not isinstance(value, list):
        raise AdapterError(f"{where}: expected a list, got {type(value).__name__}")
    return value
