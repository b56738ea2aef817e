"""The tee gateway: an ASGI reverse proxy in front of any OpenAI-compatible server.

In: client requests (any path and method). Out: the upstream's responses, byte for byte (status,
headers except hop-by-hop ones, body; SSE relayed chunk by chunk as it arrives, nothing held
back), and for ``/v1/chat/completions``, ``/v1/completions`` and ``/v1/responses`` a copy of the
finished exchange handed to :class:`LogTee`, which logs it to Kafka off the request path.

Own endpoints: ``/healthz`` (JSON: queue depth, Kafka state, spill size) and ``/metrics``
(Prometheus). They shadow the same paths upstream; scrape the upstream's metrics directly.

Upstream client: aiohttp, not httpx. Measured here (bench/bench_gateway.py, 2 cores): through
an httpx.AsyncClient the proxy's throughput fell as concurrency rose (565 req/s at 1 connection,
184 at 32), the pool-contention problem of encode/httpx#3215; aiohttp's connector does not.

Optional pre-screening (``gateway.prescreen.enabled``): the request alone is scored by the
configured detectors before it is forwarded; at or above ``block_at`` the client gets an
OpenAI-style 400 error (``code: content_policy_violation``) and the upstream is never called.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import anyio
import yarl
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from pipeline.decode import DecodeReason
from pipeline.gateway.settings import GatewaySettings
from pipeline.gateway.tee import Exchange, GatewayMetrics, LogTee, case_variant_keys, parse_request, rejected_later
from pipeline.logs import OncePer
from pipeline.settings import Settings

log = logging.getLogger(__name__)

# Paths whose exchanges are logged, with and without the /v1 prefix (llama.cpp serves both).
TEED_ROUTES = {
    "/v1/chat/completions": "chat.completions",
    "/chat/completions": "chat.completions",
    "/v1/completions": "completions",
    "/completions": "completions",
    "/v1/responses": "responses",
    "/responses": "responses",
}
# RFC 9110 section 7.6.1 connection-specific headers, plus the ones the HTTP layer recomputes.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
     b"transfer-encoding", b"upgrade", b"host", b"content-length"}
)  # fmt: skip
# Response headers the gateway's HTTP server writes itself: the upstream's copies were forwarded
# too, and clients got two of each (a hostile review, 2026-12-06).
SERVER_WRITTEN = frozenset({b"date", b"server"})
# A request's share of gateway.max_inflight_request_bytes: a one-item list in its ASGI scope, put
# there by _GiveBackBodies, which gives it back once the request is answered or its client is gone.
_HELD = "mm.request_bytes_held"


class UpstreamCut(Exception):
    """The upstream's body ended early: raised out of the relay so that the server drops the
    client's connection (no clean end of a cut answer), after one warning line and the tee."""


class _QuietUpstreamCut(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" traceback of an :class:`UpstreamCut`: the
    relay has said it in one line already (a traceback was printed per cut until a review)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:  # anyio's task groups wrap it
            exc = exc.exceptions[0]
        return not isinstance(exc, UpstreamCut)


_QUIET_UPSTREAM_CUT = _QuietUpstreamCut()


class _Refused(enum.Enum):
    """Why a request body was not read whole (the label in mm_gateway_requests_total{status})."""

    TOO_LARGE = "too_large"  # over max_request_bytes: 413
    OVERLOADED = "overloaded"  # over what max_inflight_request_bytes has left: 503
    CLIENT_GONE = "client_gone"  # the client closed the connection mid-body
    TIMED_OUT = "body_timeout"  # not all there within body_timeout_s: 408


def _header_text(value: bytes) -> str | None:
    """A header's value as text: UTF-8 as clients send it (``josé`` was stored as ``josÃ©``),
    latin-1 for bytes that are not UTF-8; empty or blank is no value (an empty ``X-Tenant-Id:``
    was stored as tenant "")."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("latin-1")
    return text if text.strip() else None


class Prescreener:
    """Scores a request before it is forwarded (the Scorer is built once, at startup)."""

    def __init__(self, settings: Settings, metrics: GatewayMetrics | None = None) -> None:
        from pipeline.scoring import Scorer

        gateway = settings.gateway
        detectors = settings.detectors.model_copy(update={"enabled": list(gateway.prescreen.detectors)})
        self.block_at = gateway.prescreen.block_at
        self._scorer = Scorer.from_settings(settings.model_copy(update={"detectors": detectors}))
        self.fallbacks = (metrics or GatewayMetrics()).prescreen_fallbacks

    def check(self, request: Any, request_id: str, endpoint: str | None = None) -> Any:
        """The most severe verdict if it reaches ``block_at``, else None.

        A body the adapter refuses (an unknown message field, a content part of an unknown type)
        may still be read by the upstream, so it is not forwarded unscreened: every string value
        in it is scored as one prompt. Forwarding it (until a hostile review, 2026-12-04) let a
        client skip pre-screening by adding one unknown field; refusing it would block requests
        the upstream accepts. Scoring the strings screens what the model could read, and blocks
        only what the detectors flag, the same rule as for a request the adapter understands.
        (A detector that fails still lets the request through, below: that is a broken detector,
        not something the client chose.) ``endpoint`` is the route the request came in on: it is
        read as that route's upstream reads it, as the tee logs it, so a decoy key of another
        route's shape cannot stand in for the text the model reads."""
        from pipeline.adapters import AdapterError, from_openai_all
        from pipeline.scoring import RecordError

        try:
            if case_variant_keys(request, limit=1):
                # `"Messages"` beside `"messages"`: a Go upstream (Ollama) reads the variant, the
                # adapter the lower-case key; a decoy there got a phishing request past
                # pre-screening (a hostile review, 2026-12-06). Every string is scored instead.
                self.fallbacks.labels("case_variant_keys").inc()
                log.warning("gateway: pre-screening %s: keys that differ only in case; scoring every string in it", request_id)
                logs = _best_effort_logs(request, request_id)
            else:
                logs = from_openai_all(request, None, endpoint=endpoint, request_id=request_id)
        except AdapterError as exc:
            # exc.detail can quote the request (a content part's type): only the reason is logged.
            self.fallbacks.labels(exc.reason.value).inc()
            log.warning("gateway: pre-screening %s: the adapter refused the request (%s); scoring every string in it",
                        request_id, exc.reason.value)  # fmt: skip
            logs = _best_effort_logs(request, request_id)
        worst = None
        for result in self._scorer.score_each(logs):
            if isinstance(result, RecordError):
                continue  # a detector failing on this request must not block it
            if worst is None or result.severity.rank > worst.severity.rank:
                worst = result
        return worst if worst is not None and worst.severity.rank >= self.block_at.rank else None

    def close(self) -> None:
        self._scorer.close()


def _best_effort_logs(request: Any, request_id: str) -> list[Any]:
    """One inference log whose prompt is every string value of ``request`` (none if it has none)."""
    from pipeline.schemas import INFERENCE_LOG_V1, InferenceLog, json_strings

    text = "\n".join(json_strings(request))
    if not text.strip():
        return []
    model = request.get("model") if isinstance(request, dict) else None
    if not (isinstance(model, str) and 0 < len(model) <= 256 and model.isprintable()):
        model = "unknown"
    return [InferenceLog.model_validate({"schema": INFERENCE_LOG_V1, "request_id": request_id, "model": model,
                                         "timestamp": datetime.now(UTC), "prompt": text,
                                         "metadata": {"prescreen_fallback": True}})]  # fmt: skip


class Gateway:
    """Holds the upstream client, the tee and the optional pre-screener for one app."""

    def __init__(self, settings: Settings, metrics: GatewayMetrics | None = None, tee: LogTee | None = None) -> None:
        self.settings: GatewaySettings = settings.gateway
        self.metrics = metrics or GatewayMetrics()
        self.tee = tee or LogTee(self.settings, settings.kafka, self.metrics)
        self.prescreener = Prescreener(settings, self.metrics) if self.settings.prescreen.enabled else None
        self.upstream = self.settings.upstream_url.rstrip("/")
        self.client: aiohttp.ClientSession | None = None
        self._key_identities = {digest.lower(): ident for digest, ident in self.settings.api_keys.items()}
        self._tenant_header = self.settings.tenant_header.lower().encode()
        self._user_header = self.settings.user_header.lower().encode()
        self._forward_unlogged = frozenset(self.settings.forward_unlogged)
        self.inflight_bytes = 0  # request bodies held now; changed on the event loop's thread only
        self._overload_warning = OncePer(60.0)
        self._slow_client_warning = OncePer(60.0)

    @asynccontextmanager
    async def lifespan(self, app: Starlette) -> AsyncIterator[None]:
        self.client = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=60),
            # sock_read bounds the wait for each chunk, not the whole (possibly long) generation.
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=self.settings.upstream_timeout_s),
            auto_decompress=False,  # forward the upstream's bytes as they are
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),  # only the client's
        )
        self.tee.start()
        try:
            yield
        finally:
            await self.client.close()
            await anyio.to_thread.run_sync(self.tee.stop)
            if self.prescreener is not None:
                self.prescreener.close()
            log.info(
                "gateway stopped: %d logs delivered, %d spilled (%d bytes waiting), %d dropped",
                self._total("mm_gateway_logs_delivered_total"), self._total("mm_gateway_logs_spilled_total"),
                self.tee.status()["spill_bytes"], self._total("mm_gateway_logs_dropped_total"),
            )  # fmt: skip

    def _total(self, sample_name: str) -> float:
        """Sum of a counter's samples over all label values."""
        return sum(
            sample.value
            for metric in self.metrics.registry.collect()
            for sample in metric.samples
            if sample.name == sample_name
        )

    # ------------------------------------------------------------------ own endpoints

    async def healthz(self, request: Request) -> Response:
        status = self.tee.status()
        if self.tee.started and not status["worker_alive"]:
            # Requests are still proxied, but nothing is logged any more: restart the gateway.
            return JSONResponse({"status": "logging_stopped", "upstream": self.upstream, **status}, status_code=503)
        if (status["spill_failing"] and not status["kafka_up"]) or status["dropping"]:
            # Kafka is away and the spill file cannot be written, or `overflow: drop` drops every
            # log (it said "ok" then; a hostile review, 2026-12-07): every exchange's log is lost.
            return JSONResponse({"status": "logs_lost", "upstream": self.upstream, **status}, status_code=503)
        return JSONResponse({"status": "ok", "upstream": self.upstream, "inflight_request_bytes": self.inflight_bytes,
                             **status})  # fmt: skip

    async def metrics_endpoint(self, request: Request) -> Response:
        self.metrics.queue_depth.set(self.tee.status()["queue_depth"])
        self.metrics.inflight_request_bytes.set(self.inflight_bytes)
        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ proxy

    def identity(self, headers: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
        tenant = user = None
        for name, value in headers:
            if name == self._tenant_header:
                tenant = _header_text(value)
            elif name == self._user_header:
                user = _header_text(value)
            elif name == b"authorization" and self._key_identities and value[:7].lower() == b"bearer ":
                ident = self._key_identities.get(hashlib.sha256(value[7:].strip()).hexdigest())
                if ident is not None:  # what the caller proved wins over what it claims
                    return ident.tenant_id, ident.user_id
        return tenant, user

    async def proxy(self, request: Request) -> Response:
        assert self.client is not None, "lifespan not started"
        path = request.url.path
        route = TEED_ROUTES.get(path.rstrip("/")) if request.method == "POST" else None
        if request.method == "POST" and route is None and self.settings.unlogged_posts == "refuse":
            if (path.rstrip("/") or "/") not in self._forward_unlogged:
                return self._unlogged_refused(path)
        body = await self._read_body(request)
        if body is _Refused.TOO_LARGE:
            return self._too_large(route, request.headers.get("content-length"))
        if body is _Refused.OVERLOADED:
            return self._overloaded(route)
        if body is _Refused.TIMED_OUT:
            return self._timed_out(route)
        if body is _Refused.CLIENT_GONE:  # nobody to answer; not forwarded, so nothing to log
            self.metrics.requests.labels(route or "other", body.value).inc()
            log.info("gateway: a client closed its connection while sending the request body")
            return Response(status_code=499)
        raw_headers = request.headers.raw
        forward_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw_headers if k not in HOP_BY_HOP]
        gateway_id = f"gw-{uuid.uuid4().hex}"
        tenant, user = self.identity(raw_headers) if route else (None, None)

        if route and self.prescreener is not None:
            blocked = await self._prescreen(body, gateway_id, route)
            if blocked is not None:
                return self._blocked_response(blocked, route, body, gateway_id, tenant, user)

        # The path as the client encoded it (request.url.path is decoded), forwarded as is.
        raw_path = request.scope.get("raw_path") or path.encode()
        query = request.scope.get("query_string") or b""
        url = yarl.URL(self.upstream + raw_path.decode("latin-1") + ("?" + query.decode("latin-1") if query else ""),
                       encoded=True)  # fmt: skip
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            upstream = await self.client.request(
                request.method, url, headers=forward_headers, data=body or None, allow_redirects=False
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return self._upstream_failed(exc, route, body, started_at, started, gateway_id, tenant, user)
        response_headers = [
            (k.lower(), v) for k, v in upstream.raw_headers if k.lower() not in HOP_BY_HOP and k.lower() not in SERVER_WRITTEN
        ]
        content_type = upstream.headers.get("Content-Type", "")
        streamed = content_type.startswith("text/event-stream")
        self.metrics.requests.labels(route or "other", f"{upstream.status // 100}xx").inc()

        if not streamed and upstream.content_length is not None:
            # A body of known length (a JSON answer): read it whole; it is complete before a
            # client could use it anyway. SSE and bodies of unknown length (NDJSON streams such
            # as Ollama's native API) are relayed below as they arrive.
            try:
                content = await upstream.read()
            except (aiohttp.ClientError, TimeoutError) as exc:  # the upstream died mid-body
                upstream.close()
                return self._upstream_failed(exc, route, body, started_at, started, gateway_id, tenant, user)
            finally:
                upstream.release()
            elapsed = time.perf_counter() - started
            self.metrics.upstream_seconds.labels(route or "other").observe(elapsed)
            if route:
                self._tee(route, body, [content], upstream.status, upstream.headers.get("Content-Encoding"), False,
                          started_at, elapsed, None, gateway_id, tenant, user)
            response = Response(content, status_code=upstream.status)
            # A HEAD answer has no body but says the length a GET would get: the upstream's.
            # len(content), 0 there, told clients the resource was empty (a hostile review).
            length = upstream.content_length if request.method == "HEAD" else len(content)
            response.raw_headers = [*response_headers, (b"content-length", str(length).encode())]
            return response

        chunks: list[bytes] = []
        # What is kept for the log is capped (the client still gets every byte): logprobs can
        # inflate a stream to megabytes, and the whole exchange used to be buffered, then dropped.
        room = max(self.settings.max_tee_bytes - len(body), 0)
        truncated = False

        async def relay() -> AsyncIterator[bytes]:  # SSE or unknown length: chunk by chunk
            nonlocal room, truncated
            first: float | None = None
            complete = False
            upstream_cut: str | None = None  # the error that ended the upstream's body early
            relayed = 0
            try:
                async for chunk in upstream.content.iter_any():
                    if first is None:
                        first = time.perf_counter() - started
                    if route and not truncated:
                        if len(chunk) > room:
                            chunk_kept, truncated = chunk[:room], True
                            chunks.append(chunk_kept)
                        else:
                            chunks.append(chunk)
                            room -= len(chunk)
                    relayed += len(chunk)
                    yield chunk  # straight through: no buffering, no re-framing
            except (aiohttp.ClientError, TimeoutError) as exc:
                # The upstream failed mid-body (ClientPayloadError, a read timeout). It went up to
                # uvicorn, which printed a traceback, and the log said the *client* had
                # disconnected (a hostile review). Now one line, and the log says the upstream cut
                # the stream. The client's connection is dropped too, as the upstream's was: a
                # chunked body ended cleanly read as a whole answer to SDKs and NDJSON clients (a
                # review of the first fix). uvicorn's traceback of it is filtered (_QuietUpstreamCut).
                upstream_cut = type(exc).__name__
                log.warning("gateway: the upstream cut the response of %s after %d bytes (%s)",
                            gateway_id, relayed, upstream_cut)
                raise UpstreamCut(upstream_cut) from exc
            else:
                complete = True
            finally:
                if complete:
                    upstream.release()
                else:  # the client went away (or the upstream did): drop the connection so the server stops
                    upstream.close()
                elapsed = time.perf_counter() - started
                self.metrics.upstream_seconds.labels(route or "other").observe(elapsed)
                if route:
                    self._tee(route, body, chunks, upstream.status, upstream.headers.get("Content-Encoding"), streamed,
                              started_at, elapsed, first, gateway_id, tenant, user,
                              complete=complete, truncated=truncated, upstream_cut=upstream_cut)  # fmt: skip

        response = StreamingResponse(relay(), status_code=upstream.status)
        response.raw_headers = response_headers
        return response

    def _upstream_failed(
        self,
        exc: BaseException,
        route: str | None,
        body: bytes,
        started_at: datetime,
        started: float,
        gateway_id: str,
        tenant: str | None,
        user: str | None,
    ) -> Response:
        """502 (504 on a timeout) to the client, and the prompt still logged with that status:
        a request the upstream never answered was still asked (until a hostile check on
        2026-12-02 it was not logged at all, and a body cut short answered a bare 500)."""
        status = 504 if isinstance(exc, TimeoutError) else 502
        self.metrics.requests.labels(route or "other", str(status)).inc()
        if route:
            self._tee(route, body, [], status, None, False, started_at, time.perf_counter() - started, None, gateway_id,
                      tenant, user)  # fmt: skip
        return JSONResponse(
            {"error": {"message": f"upstream unavailable: {type(exc).__name__}", "type": "upstream_error",
                       "param": None, "code": "bad_gateway" if status == 502 else "gateway_timeout"}},  # fmt: skip
            status_code=status,
        )

    def _tee(
        self,
        route: str,
        body: bytes,
        chunks: list[bytes],
        status: int,
        content_encoding: str | None,
        streamed: bool,
        started_at: datetime,
        elapsed_s: float,
        first_s: float | None,
        gateway_id: str,
        tenant: str | None,
        user: str | None,
        *,
        complete: bool = True,
        truncated: bool = False,
        upstream_cut: str | None = None,
    ) -> None:
        """Hand the exchange to the tee, within ``max_tee_bytes``. Past it, the request is still
        logged: with the response's first bytes where they parse alone (an uncompressed event
        stream, cut between events), else without the response; ``metadata.response_truncated``
        says so. A request that alone is over the cap is logged without its response
        (``metadata.request_over_tee_cap``: its size): the worker parses it, and the log holds
        what the adapter reads, not the whitespace or unknown fields that made it large. Until
        2026-12-07 it was only counted, so 8 MiB of spaces after a request kept it out of the
        stream (a hostile review)."""
        limit = self.settings.max_tee_bytes
        extra: dict[str, Any] = {}
        if len(body) > limit:
            extra["request_over_tee_cap"] = len(body)
        if truncated or len(body) + sum(len(c) for c in chunks) > limit:
            extra["response_truncated"] = True
            parses_cut = streamed and content_encoding in (None, "", "identity") and len(body) < limit
            chunks = _head(chunks, limit - len(body)) if parses_cut else []
        self.tee.submit(
            Exchange(
                route=route,
                request_body=body,
                response_body=chunks,
                status=status,
                streamed=streamed,
                started_at=started_at,
                latency_ms=elapsed_s * 1000,
                ttft_ms=first_s * 1000 if first_s is not None else None,
                gateway_id=gateway_id,
                content_encoding=content_encoding,
                tenant_id=tenant,
                user_id=user,
                complete=complete,
                upstream_cut=upstream_cut,
                extra_metadata=extra,
            )
        )

    # ------------------------------------------------------------------ pre-screening

    async def _prescreen(self, body: bytes, gateway_id: str, route: str) -> Any:
        assert self.prescreener is not None
        try:
            # Parsed off the event loop: a large body takes seconds to parse (or to prune).
            # Bytes that are not UTF-8, huge integers and deep values read as an upstream reads them.
            request = (await anyio.to_thread.run_sync(parse_request, body)).body
        except ValueError:  # parse_request turns a depth it cannot prune into ValueError
            return None  # not ours to judge: the upstream answers the malformed body
        started = time.perf_counter()
        try:
            return await anyio.to_thread.run_sync(self.prescreener.check, request, gateway_id, route)
        except Exception as exc:  # noqa: BLE001 - pre-screening fails open: the request goes through
            # The type only: an exception's text (and a traceback's locals) can quote the request.
            log.warning("gateway: pre-screening %s failed (%s); forwarding the request", gateway_id, type(exc).__name__)
            return None
        finally:
            self.metrics.prescreen_seconds.observe(time.perf_counter() - started)

    async def _read_body(self, request: Request) -> bytes | _Refused:
        """The request body, or why it was not read whole, as soon as that is known: over
        ``max_request_bytes``, or over what ``max_inflight_request_bytes`` has left, by its
        Content-Length before a byte is read, else as the body is read. What is past a limit is
        never read (the server closes the connection after the answer). Each byte read is added
        to the request's share of the in-flight total, which _GiveBackBodies gives back."""
        limit, budget = self.settings.max_request_bytes, self.settings.max_inflight_request_bytes
        declared = request.headers.get("content-length")
        expected = int(declared) if declared is not None and declared.strip().isdigit() else None
        if expected is not None and expected > limit:
            return _Refused.TOO_LARGE
        # A declared length is checked, never reserved: reserving it let 16 connections that
        # declared 64 MiB and sent nothing refuse every other client (a review of this limit).
        if expected is not None and self.inflight_bytes + expected > budget:
            return _Refused.OVERLOADED
        held = request.scope[_HELD]
        parts: list[bytes] = []
        size = 0
        with anyio.move_on_after(self.settings.body_timeout_s) as deadline:
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > limit:
                        return _Refused.TOO_LARGE
                    if self.inflight_bytes + len(chunk) > budget:
                        return _Refused.OVERLOADED
                    self.inflight_bytes += len(chunk)
                    held[0] += len(chunk)
                    parts.append(chunk)
            except ClientDisconnect:  # was an "Exception in ASGI application" with a traceback
                return _Refused.CLIENT_GONE
        if deadline.cancelled_caught:
            return _Refused.TIMED_OUT
        return b"".join(parts)

    def _too_large(self, route: str | None, declared: str | None) -> Response:
        """413 for a body over ``max_request_bytes``. On a logged route the attempt is kept in the
        rejected file as its size and id (never its text), like a body over ``max_tee_bytes``."""
        limit = self.settings.max_request_bytes
        self.metrics.requests.labels(route or "other", "too_large").inc()
        size = f"{declared} bytes declared" if declared is not None else "a chunked body"
        log.warning("gateway: refused a request body over gateway.max_request_bytes (%d): %s", limit, size)
        if route:
            detail = f"gw-{uuid.uuid4().hex} on {route}: request body over gateway.max_request_bytes ({limit}; {size}), refused 413"
            self.tee.submit_deferred(rejected_later(DecodeReason.TOO_LARGE, detail))
        return JSONResponse(
            {"error": {"message": f"The request body is over this gateway's limit of {limit} bytes.",
                       "type": "invalid_request_error", "param": None, "code": "request_too_large"}},  # fmt: skip
            status_code=413,
        )

    def _overloaded(self, route: str | None) -> Response:
        """503 with Retry-After for a body that would take the bodies in flight past
        ``max_inflight_request_bytes``. Not logged: the request was never forwarded, and a client
        that retries is logged then. The warning is written at most once a minute (an overload
        is a burst of them); the counter has each one."""
        budget = self.settings.max_inflight_request_bytes
        self.metrics.requests.labels(route or "other", _Refused.OVERLOADED.value).inc()
        if self._overload_warning():
            log.warning("gateway: request bodies in flight are at gateway.max_inflight_request_bytes (%d): refusing "
                        "new ones 503 (counted in mm_gateway_requests_total{status=\"overloaded\"})", budget)  # fmt: skip
        return JSONResponse(
            {"error": {"message": "The gateway holds as many request bodies as it may; retry shortly.",
                       "type": "server_error", "param": None, "code": "gateway_overloaded"}},  # fmt: skip
            status_code=503,
            headers={"Retry-After": "1"},
        )

    def _timed_out(self, route: str | None) -> Response:
        """408 for a body not all there within ``body_timeout_s`` of its head. Not forwarded,
        so not logged; what it held goes back to ``max_inflight_request_bytes``."""
        self.metrics.requests.labels(route or "other", _Refused.TIMED_OUT.value).inc()
        self._warn_slow_client("body_timeout")
        return JSONResponse(
            {"error": {"message": f"The request body did not arrive within this gateway's {self.settings.body_timeout_s:g} s.",
                       "type": "invalid_request_error", "param": None, "code": "request_timeout"}},  # fmt: skip
            status_code=408,
            headers={"Connection": "close"},
        )

    def refused_by_server(self, reason: str) -> None:
        """Counts a connection the server closed before a request reached the app: its head was
        late (``head_timeout``) or too large (``head_too_large``). Its route is not known yet."""
        self.metrics.requests.labels("unknown", reason).inc()
        self._warn_slow_client(reason)

    def _warn_slow_client(self, reason: str) -> None:
        if self._slow_client_warning():  # a slow-client attack is a burst of them; the counter has each
            log.warning("gateway: closed a connection whose request was not all there in time or too large (%s; "
                        "counted in mm_gateway_requests_total{status=...})", reason)  # fmt: skip

    def _unlogged_refused(self, path: str) -> Response:
        """403 for a POST the gateway would forward unlogged (``unlogged_posts: refuse``). The
        request is not read, so nothing of it is kept; the path is not echoed (it is the client's)."""
        self.metrics.requests.labels("unlogged", "refused").inc()
        log.info("gateway: refused a POST to a route it does not log (gateway.unlogged_posts=refuse)")
        return JSONResponse(
            {"error": {"message": "This route is not available through the misuse monitor: only "
                                  f"{', '.join(sorted({r for r in TEED_ROUTES if r.startswith('/v1/')}))} are.",
                       "type": "invalid_request_error", "param": None, "code": "route_not_monitored"}},  # fmt: skip
            status_code=403,
        )

    def _blocked_response(
        self, verdict: Any, route: str, body: bytes, gateway_id: str, tenant: str | None, user: str | None
    ) -> Response:
        severity = verdict.severity.value
        self.metrics.blocked.labels(severity).inc()
        self.metrics.requests.labels(route, "4xx").inc()
        categories = ", ".join(c.value for c in verdict.categories)
        self.tee.submit(
            Exchange(
                route=route, request_body=body, response_body=[], status=400, streamed=False,
                started_at=datetime.now(UTC), latency_ms=0.0, gateway_id=gateway_id, tenant_id=tenant,
                user_id=user, extra_metadata={"blocked": True, "blocked_severity": severity},
            )
        )  # fmt: skip
        return JSONResponse(
            {"error": {"message": f"This request was blocked by the misuse monitor (severity {severity}: {categories}).",
                       "type": "invalid_request_error", "param": None, "code": "content_policy_violation"}},  # fmt: skip
            status_code=400,
        )


def _head(chunks: list[bytes], size: int) -> list[bytes]:
    """The first ``size`` bytes of ``chunks``."""
    out: list[bytes] = []
    for chunk in chunks:
        if size <= 0:
            break
        out.append(chunk[:size])
        size -= len(chunk)
    return out


class _GiveBackBodies:
    """ASGI middleware: once a request is answered (a streamed answer to its last byte) or its
    client went away, the bytes its body held go back to ``max_inflight_request_bytes``. Here
    rather than in the endpoint because a streamed answer is sent after the endpoint returns."""

    def __init__(self, app: ASGIApp, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held = scope[_HELD] = [0]
        try:
            await self.app(scope, receive, send)
        finally:
            self.gateway.inflight_bytes -= held[0]


def create_app(settings: Settings, *, metrics: GatewayMetrics | None = None, tee: LogTee | None = None) -> Starlette:
    """The gateway as an ASGI app (serve it with uvicorn: ``misuse-monitor gateway``)."""
    gateway = Gateway(settings, metrics, tee)
    logging.getLogger("uvicorn.error").addFilter(_QUIET_UPSTREAM_CUT)  # once: the same filter object
    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"]
    app = Starlette(
        routes=[
            Route("/healthz", gateway.healthz, methods=["GET"]),
            Route("/metrics", gateway.metrics_endpoint, methods=["GET"]),
            Route("/{path:path}", gateway.proxy, methods=methods),
        ],
        middleware=[Middleware(_GiveBackBodies, gateway=gateway)],
        lifespan=gateway.lifespan,
    )
    app.state.gateway = gateway
    return app
