"""A LiteLLM callback that logs every call to Kafka as inference-log/v1.

In: LiteLLM's success/failure callbacks (SDK ``litellm.callbacks`` or the proxy's
``litellm_settings.callbacks``). Out: records produced through :class:`GatewayProducer` by the
gateway's :class:`LogTee`, so LiteLLM gets the gateway's guarantees: the callback only queues
(never blocks or fails a call), a full queue or a broker outage follows ``gateway.overflow``
(spill to a file, replayed later, or drop and count).

Identity: ``tenant_id`` from the call's ``metadata.tenant_id``, else the proxy key's team;
``user_id`` from the call's ``user``, else the proxy's end user or key owner.

SDK::

    import litellm
    from pipeline.integrations.litellm import MisuseMonitorLogger
    litellm.callbacks = [MisuseMonitorLogger()]   # settings from MM_* / MM_CONFIG, as everywhere

LiteLLM proxy (``config.yaml``)::

    litellm_settings:
      callbacks: pipeline.integrations.litellm.proxy_handler_instance
"""

from __future__ import annotations

import atexit
import copy
import json
import logging
from datetime import datetime
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from pipeline.adapters import TOOL_REQUEST_KEYS, from_openai_all
from pipeline.gateway.tee import GatewayMetrics, LogTee, check_paths
from pipeline.schemas import InferenceLog
from pipeline.settings import Settings, load_settings

log = logging.getLogger(__name__)

# LiteLLM's CallTypes values that carry a prompt the adapter reads (chat, completions and the
# Responses API); the text and Responses calls were skipped until a hostile review (2026-12-04).
_TEXT_CALLS = frozenset({"text_completion", "atext_completion"})
_RESPONSES_CALLS = frozenset({"responses", "aresponses"})
_CHAT_CALLS = frozenset({"completion", "acompletion"})
_LOGGED_CALLS = _CHAT_CALLS | _TEXT_CALLS | _RESPONSES_CALLS
# Where log_pre_api_call keeps a chat call's messages as sent, in the call's details.
_SENT_KEY = "_misuse_monitor_sent_messages"
# Where LiteLLM keeps the loggers it calls (litellm.callbacks is copied into the others).
_LITELLM_CALLBACK_LISTS = (
    "callbacks", "success_callback", "_async_success_callback", "failure_callback", "_async_failure_callback",
    "input_callback",
)


class MisuseMonitorLogger(CustomLogger):
    """LiteLLM CustomLogger -> inference-log/v1 -> Kafka (off the call path)."""

    def __init__(self, settings: Settings | None = None, *, metrics: GatewayMetrics | None = None) -> None:
        super().__init__()
        self.settings = settings or load_settings()
        # As `misuse-monitor gateway` at its start (ConfigError): a spill or rejected path that
        # cannot be written was accepted, and every log of an outage was then lost, counted only
        # in a registry nothing served (a hostile review, 2026-12-07).
        check_paths(self.settings.gateway)
        self.metrics = metrics or GatewayMetrics()
        # One tee per process: the proxy's --num_workers N builds one per worker, and workers on
        # one spill file lost and duplicated each other's logs (a hostile review). Each takes a
        # spill file of its own beside gateway.spill_path and replays those of workers that are gone.
        self.tee = LogTee(self.settings.gateway, self.settings.kafka, self.metrics, per_process_spill=True)
        self.tee.start()
        self.skipped_calls = 0  # embeddings, images, ...: no prompt text, not logged
        self._closed = False

    def close(self) -> None:
        """Detach from LiteLLM, then deliver (or spill) what is queued; LiteLLM has no shutdown
        hook, so this is atexit too.

        LiteLLM copies ``litellm.callbacks`` into its own success and failure lists on first use
        and will not add a second logger of the same class: restoring ``litellm.callbacks`` left a
        closed logger in those lists, still called, and a new logger was never called at all
        (found 2026-12-04: every call after a close-and-recreate was lost)."""
        import litellm

        self._closed = True
        for name in _LITELLM_CALLBACK_LISTS:
            callbacks = getattr(litellm, name, None)
            if isinstance(callbacks, list):
                callbacks[:] = [c for c in callbacks if c is not self]
        self.tee.stop()

    def log_pre_api_call(self, model: Any, messages: Any, kwargs: dict) -> None:
        """Copies a chat call's messages before the call is made. LiteLLM reports a completed call
        on its own thread after ``completion()`` has returned to the app, with the app's message
        dicts (it copies the list, not the messages): an app that reused or redacted them at once
        had its harmful prompt logged as the text it put there afterwards (a hostile review,
        2026-12-07). Never raises into the call."""
        try:
            if kwargs.get("call_type") in _CHAT_CALLS:
                # In the call's own details, which LiteLLM hands to the report too (sync, async and
                # streamed calls): the copy goes with the call, also one that never reports (a
                # stream the app abandons). A map of them held such calls' prompts (a review, 2026-12-07).
                kwargs[_SENT_KEY] = copy.deepcopy([_plain(m) for m in kwargs.get("messages") or []])
        except Exception:  # noqa: BLE001 - the call must never fail for its log; the report copies it then
            log.debug("litellm: could not copy a call's messages before it was made", exc_info=True)

    # LiteLLM calls the sync pair for completion() and the async pair for acompletion().
    def log_success_event(self, kwargs: dict, response_obj: Any, start_time: datetime, end_time: datetime) -> None:
        self._submit(kwargs, response_obj, start_time, end_time)

    def log_failure_event(self, kwargs: dict, response_obj: Any, start_time: datetime, end_time: datetime) -> None:
        self._submit(kwargs, None, start_time, end_time)

    async def async_log_success_event(self, kwargs: dict, response_obj: Any, start_time: datetime, end_time: datetime) -> None:
        self._submit(kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(self, kwargs: dict, response_obj: Any, start_time: datetime, end_time: datetime) -> None:
        self._submit(kwargs, None, start_time, end_time)

    def _submit(self, kwargs: dict, response_obj: Any, start_time: datetime, end_time: datetime) -> None:
        if kwargs.get("call_type") not in _LOGGED_CALLS:
            self.skipped_calls += 1
            return
        view, response = _snapshot(kwargs, response_obj)
        build = _deferred(view, response, start_time, end_time, self.settings)
        if self._closed:  # a call LiteLLM reported after close(): no worker left, spill it here
            # Through the tee's own conversion: an AdapterError raised into LiteLLM's thread here.
            self.tee.keep_undelivered(self.tee.adapt(build), "closed")
            return
        # A copy of what the conversion reads is taken here; the conversion runs on the tee's worker thread.
        self.tee.submit_deferred(build)


def _snapshot(kwargs: dict, response_obj: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """What :func:`call_to_logs` reads of a call, copied when LiteLLM reports it, so that the
    worker reads it as it was then, whatever the app does with its objects later (a chat call's
    messages are copied earlier still: log_pre_api_call). An answer the app changes before
    LiteLLM reports the call is logged as changed: LiteLLM hands it over only then. Only the keys
    read are taken: LiteLLM's parameters hold API keys and objects (spans, clients) that are not
    data."""
    params = kwargs.get("litellm_params") or {}
    standard = kwargs.get("standard_logging_object") or {}
    proxy = standard.get("metadata") or {}
    exception = kwargs.get("exception")
    view = {
        "call_type": kwargs.get("call_type"),
        "litellm_call_id": kwargs.get("litellm_call_id"),
        "mm_request": _request_copy(kwargs),
        "litellm_params": {"metadata": {"tenant_id": copy.deepcopy((params.get("metadata") or {}).get("tenant_id"))}},
        "standard_logging_object": {
            "metadata": {key: proxy.get(key) for key in _PROXY_IDENTITY_KEYS if key in proxy},
            "end_user": standard.get("end_user"),
            "error_str": standard.get("error_str"),
        },
        "custom_llm_provider": kwargs.get("custom_llm_provider"),
        "exception": str(exception) if exception is not None else None,
        "completion_start_time": kwargs.get("completion_start_time"),
        "stream": kwargs.get("stream"),
        "user": copy.deepcopy(kwargs.get("user")),
    }
    response = response_obj.model_dump() if response_obj is not None and hasattr(response_obj, "model_dump") else None
    return view, response


def _request_copy(kwargs: dict) -> dict[str, Any]:
    """A copy of the call's request; a chat call's messages as copied before the call was made
    (log_pre_api_call), so they are neither read from the app's dicts nor copied twice."""
    sent = kwargs.get(_SENT_KEY)
    if sent is None or kwargs.get("call_type") not in _CHAT_CALLS:
        return copy.deepcopy(_request(kwargs))
    request = _request({**kwargs, "messages": []})
    return {**copy.deepcopy(request), "messages": sent}


# The proxy's identity of a call (standard_logging_object.metadata) that _tenant and the user read.
_PROXY_IDENTITY_KEYS = ("user_api_key_hash", "user_api_key_team_id", "user_api_key_org_id", "user_api_key_user_id")


def _deferred(view: dict, response: dict[str, Any] | None, start_time: datetime, end_time: datetime, settings: Settings) -> Any:
    """The call's conversion, run later; its ``raw`` (the request in the OpenAI shape and the
    response, no LiteLLM parameters: they hold API keys) is what the rejected file keeps when the
    conversion fails. It kept only the reason, and the warning said the call was kept (a
    review, 2026-12-06). ``size`` is what it holds, for ``gateway.queue_max_bytes``: it counted 0,
    so 25 calls of 200 KB each stayed queued under a 1 MiB bound (a hostile review, 2026-12-07)."""

    def build() -> list[InferenceLog]:
        return call_to_logs(view, response, start_time, end_time, settings)

    def raw() -> dict[str, Any]:
        return {"call_type": view.get("call_type"), "litellm_call_id": view.get("litellm_call_id"),
                "request": view["mm_request"], "response": response}

    build.raw = raw  # type: ignore[attr-defined]
    build.size = len(json.dumps([view["mm_request"], response], default=str))  # type: ignore[attr-defined]
    return build


def _plain(message: Any) -> Any:
    """A message as a dict: LiteLLM's Message objects (pydantic) are dumped, dicts kept."""
    if hasattr(message, "model_dump"):
        return message.model_dump(exclude_none=True)
    return message


def _request(kwargs: dict) -> dict[str, Any]:
    """The call's request in the OpenAI shape the adapter reads for its call type."""
    call_type = kwargs.get("call_type")
    request: dict[str, Any] = {"model": kwargs.get("model")}
    if call_type in _RESPONSES_CALLS and kwargs.get("input") is not None:
        raw = kwargs["input"]
        request["input"] = [_plain(item) for item in raw] if isinstance(raw, list) else raw
        instructions = kwargs.get("instructions") or (kwargs.get("optional_params") or {}).get("instructions")
        if instructions:
            request["instructions"] = instructions
    elif call_type in _TEXT_CALLS and kwargs.get("prompt") is not None:
        request["prompt"] = kwargs["prompt"]
    else:
        # LiteLLM hands text calls over with the prompt as user messages. A multi-turn call
        # re-sends the previous answer as LiteLLM's own Message object.
        request["messages"] = [_plain(m) for m in kwargs.get("messages") or []]
    optional = kwargs.get("optional_params") or {}
    for key in TOOL_REQUEST_KEYS:  # screened: a tool's description can carry an injection
        if (offered := kwargs.get(key) or optional.get(key)) is not None:
            request[key] = [_plain(tool) for tool in offered] if isinstance(offered, list) else offered
    return request


def call_to_logs(
    kwargs: dict, response_obj: Any, start_time: datetime, end_time: datetime, settings: Settings
) -> list[InferenceLog]:
    """One LiteLLM chat, text or Responses call (response or failure) as inference logs, one per choice."""
    params = kwargs.get("litellm_params") or {}
    metadata = params.get("metadata") or {}
    standard = kwargs.get("standard_logging_object") or {}
    proxy = standard.get("metadata") or {}
    # A snapshot (_snapshot) holds the request already built, and the response as a dict.
    request = kwargs["mm_request"] if "mm_request" in kwargs else _request(kwargs)
    # LiteLLM's extra message fields (thinking_blocks, provider_specific_fields) are read by the adapter.
    if isinstance(response_obj, dict):
        response: dict[str, Any] | None = response_obj
    else:
        response = response_obj.model_dump() if response_obj is not None and hasattr(response_obj, "model_dump") else None
    extra: dict[str, Any] = {"source": "litellm", "litellm_call_id": kwargs.get("litellm_call_id")}
    if kwargs.get("custom_llm_provider"):
        extra["provider"] = kwargs["custom_llm_provider"]
    if response is None:
        extra["error"] = str(kwargs.get("exception") or standard.get("error_str") or "failed")[:500]
    first_token = kwargs.get("completion_start_time")
    if kwargs.get("stream") and isinstance(first_token, datetime):
        extra["ttft_ms"] = round((first_token - start_time).total_seconds() * 1000, 3)
    return from_openai_all(
        request,
        response,
        # LiteLLM's own call id is unique per call; a provider's response id need not be (kept as
        # metadata.upstream_id by the adapter).
        request_id=kwargs.get("litellm_call_id") or (response or {}).get("id"),
        timestamp=start_time.astimezone() if start_time.tzinfo is None else start_time,
        deployment=settings.gateway.deployment,
        tenant_id=_tenant(proxy, metadata),
        user_id=kwargs.get("user") or standard.get("end_user") or proxy.get("user_api_key_user_id"),
        latency_ms=max((end_time - start_time).total_seconds() * 1000, 0.0),
        metadata={k: v for k, v in extra.items() if v is not None},
    )


def _tenant(proxy: dict, metadata: dict) -> Any:
    """Behind the proxy, the key's team (else its organisation) is what the caller proved; the
    body's metadata is the client's to write (LiteLLM strips only its user_api_key_* keys from
    it), so a client could name another tenant (a review, 2026-12-06), and a key with no team
    still could (a hostile review, 2026-12-07): with a proxy key the body is never read. Without
    one (the SDK in-process), the call's own metadata."""
    if proxy.get("user_api_key_hash") or proxy.get("user_api_key_team_id"):
        return proxy.get("user_api_key_team_id") or proxy.get("user_api_key_org_id")
    return metadata.get("tenant_id")


def __getattr__(name: str) -> Any:
    """``proxy_handler_instance``: what a LiteLLM proxy config names, built on first use (no side
    effects at import), from the process's MM_* settings."""
    if name == "proxy_handler_instance":
        global _INSTANCE
        if _INSTANCE is None:
            _INSTANCE = MisuseMonitorLogger()
            atexit.register(_INSTANCE.close)
        return _INSTANCE
    raise AttributeError(name)


_INSTANCE: MisuseMonitorLogger | None = None
