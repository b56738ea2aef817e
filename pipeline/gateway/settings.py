"""Settings of the tee gateway (nested in the process-wide Settings as ``gateway``).

Identity: a request's tenant and user come from the API key first (``api_keys``, keyed by the
SHA-256 hex digest of the bearer token, so the config file never holds a usable key), else from
the configured headers, else (user only) from the request body's ``user`` field. Headers are set
by whatever sits in front of the gateway; an API key is what the caller actually proved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipeline.schemas import Key, Severity
from pipeline.topics import TopicName
from pipeline.units import DAY_S, HOUR_S


class KeyIdentity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    tenant_id: str | None = None
    user_id: str | None = None


class PrescreenSettings(BaseModel):
    """Score the request before forwarding it; block at or above ``block_at``. Off by default:
    it adds the detectors' latency to every request (measured in bench/bench_gateway.py)."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = False
    block_at: Severity = Severity.HIGH
    detectors: list[str] = Field(default_factory=lambda: ["rules"], min_length=1)


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstream_url: str = Field(default="http://127.0.0.1:8000", description="OpenAI-compatible server base URL")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    upstream_timeout_s: float = Field(default=600.0, gt=0, le=DAY_S, description="Generation can take minutes")
    # The schema's own bounds: a name it cannot store (300 characters, a NUL) was accepted at
    # start and every exchange then went to the rejected file (a hostile review, 2026-12-07).
    deployment: Key | None = Field(default=None, max_length=256, description="Written into every log's 'deployment'")
    # Held to Kafka's rule as kafka.input_topic: a name the broker refuses was logged as "Kafka not
    # reachable, serving anyway", and every log then failed (the review of 3f2c974, 2026-12-07).
    topic: TopicName | None = Field(default=None, description="Target topic (default: kafka.input_topic)")
    tenant_header: str = "x-tenant-id"
    user_header: str = "x-user-id"
    api_keys: dict[str, KeyIdentity] = Field(default_factory=dict, description="sha256(key) hex -> identity")
    # Logging path: requests never wait for Kafka. The queue absorbs bursts and short outages;
    # beyond it the overflow policy decides.
    queue_max: int = Field(default=10_000, ge=1)
    # Bytes of exchanges (request and response bodies) each logging queue may hold; past it an
    # exchange overflows as if the queue were full. 10,000 exchanges of up to max_tee_bytes each
    # could hold 80 GB while Kafka hung (computed from the bounds in a hostile review, 2026-12-05).
    queue_max_bytes: int = Field(default=512 * 1024 * 1024, ge=1024)
    overflow: Literal["drop", "spill"] = "spill"
    spill_path: Path = Path("data/gateway/spill.jsonl")
    # Bytes the spill file (and what is left of one being replayed) may hold; past it logs are
    # counted as dropped (reason spill_full) instead of filling the disk. 0: no limit but the disk
    # (an outage loses nothing until the disk is full; then they are dropped as spill_failed).
    spill_max_bytes: int = Field(default=0, ge=0)
    replay_interval_s: float = Field(default=5.0, gt=0, le=HOUR_S)
    batch_max: int = Field(default=500, ge=1)
    # Exchanges that cannot become inference logs (an adapter error, a body that does not parse)
    # are kept here as they arrived (JSON lines, bodies in base64) with the reason, up to
    # rejected_max_bytes; past that they are only counted (dropped, reason rejected_full).
    rejected_path: Path = Path("data/gateway/rejected.jsonl")
    rejected_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    # Request and response bytes held for the log; past it the response is left out (a request
    # alone over it is still logged, as the adapter reads it: docs/integrations.md).
    max_tee_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # A request body is held in memory while it is forwarded (and screened); above this the client
    # gets 413 as soon as the gateway knows, and the rest is never read. Without it one client
    # sending an endless body grew the gateway by 1 GB per GB sent (a hostile review, 2026-12-05).
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Request bodies held at once, all requests together (bodies being read, forwarded, screened or
    # streamed back), counted as their bytes arrive. Past it a request gets 503 with Retry-After,
    # by its Content-Length before a byte is read. Without it, 40 clients each holding an
    # unfinished 60 MB upload grew the gateway from 73 to 2,489 MB (a hostile review, 2026-12-06).
    max_inflight_request_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    # A request's head (request line and headers) must arrive whole within head_timeout_s of the
    # connection opening (of its first byte on a kept-alive connection) and within max_head_bytes;
    # its body within body_timeout_s of the head (the whole body: at 64 MiB that is 1.1 MB/s).
    # Else 408 (431) and the connection is closed. Without them a connection that sent half a
    # head was held for good and an unfinished header line grew without bound (a hostile review,
    # 2026-12-06); behind a load balancer with its own timeouts, these are a second line.
    head_timeout_s: float = Field(default=20.0, gt=0, le=HOUR_S)
    max_head_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    body_timeout_s: float = Field(default=60.0, gt=0, le=DAY_S)
    prescreen: PrescreenSettings = Field(default_factory=PrescreenSettings)
    # A POST to any other route (Ollama's native /api/chat, vLLM's /v1/messages, ...) reaches the
    # model neither logged nor screened. "refuse" answers it 403 instead, except the paths listed
    # in forward_unlogged (embeddings, tokenize: nothing to screen).
    unlogged_posts: Literal["forward", "refuse"] = "forward"
    forward_unlogged: list[str] = Field(
        default_factory=list, description="POST paths forwarded unlogged with unlogged_posts=refuse, e.g. /v1/embeddings"
    )

    @model_validator(mode="after")
    def _one_body_fits_in_flight(self) -> GatewaySettings:
        if self.max_inflight_request_bytes < self.max_request_bytes:
            raise ValueError(
                f"max_inflight_request_bytes ({self.max_inflight_request_bytes}) is below max_request_bytes "
                f"({self.max_request_bytes}): a body the gateway accepts could never be read"
            )
        # One file for both: replaying the spill renamed and deleted the rejected exchanges in
        # it (a review, 2026-12-06).
        spill, rejected = self.spill_path.absolute(), self.rejected_path.absolute()
        if rejected in (spill, spill.with_name(spill.name + ".replaying")):
            raise ValueError(f"rejected_path {self.rejected_path} is the spill file (or its replay copy): give each its own")
        return self

    @field_validator("forward_unlogged")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            if not path.startswith("/") or "?" in path or "#" in path:
                raise ValueError(f"{path!r} is not a path: each entry is one, e.g. /v1/embeddings")
        return [path.rstrip("/") or "/" for path in value]

    @field_validator("upstream_url")
    @classmethod
    def _upstream_is_a_server_root(cls, value: str) -> str:
        """Refused at startup rather than failing every request: without a scheme each call was a
        502, and a ``/v1`` suffix made every call a 404 at ``/v1/v1/...`` (a hostile review,
        2026-12-02). The client's path is appended as is, so ``/v1`` is refused, not stripped:
        stripping would also rewrite an upstream genuinely mounted under ``.../v1/``."""
        url = urlsplit(value.strip())
        try:
            url.port  # noqa: B018 - raises ValueError for a port out of range or not a number
        except ValueError:
            raise ValueError("the port is not a number from 0 to 65535") from None
        if url.scheme not in ("http", "https") or not url.hostname:
            raise ValueError("must be an http:// or https:// URL with a host, e.g. http://127.0.0.1:8000")
        if url.query or url.fragment:
            raise ValueError("must not have a query or a fragment (the client's path and query are appended)")
        if url.path.rstrip("/").endswith("/v1"):
            raise ValueError(
                "must not end in /v1: the gateway appends the client's path (/v1/chat/completions); "
                "give the server's root, e.g. http://127.0.0.1:8000"
            )
        return value.strip()
