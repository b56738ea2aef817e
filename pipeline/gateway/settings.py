"""Settings of the tee gateway (nested in the process-wide Settings as ``gateway``).

Identity: a request's tenant and user come from the API key first (``api_keys``, keyed by the
SHA-256 hex digest of the bearer token, so the config file never holds a usable key), else from
the configured headers, else (user only) from the request body's ``user`` field. Headers are set
by whatever sits in front of the gateway; an API key is what the caller actually proved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pipeline.schemas import Severity


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
    detectors: list[str] = Field(default_factory=lambda: ["rules"])


class GatewaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upstream_url: str = Field(default="http://127.0.0.1:8000", description="OpenAI-compatible server base URL")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    upstream_timeout_s: float = Field(default=600.0, gt=0, description="Generation can take minutes")
    deployment: str | None = Field(default=None, description="Written into every log's 'deployment'")
    topic: str | None = Field(default=None, description="Target topic (default: kafka.input_topic)")
    tenant_header: str = "x-tenant-id"
    user_header: str = "x-user-id"
    api_keys: dict[str, KeyIdentity] = Field(default_factory=dict, description="sha256(key) hex -> identity")
    # Logging path: requests never wait for Kafka. The queue absorbs bursts and short outages;
    # beyond it the overflow policy decides.
    queue_max: int = Field(default=10_000, ge=1)
    overflow: Literal["drop", "spill"] = "spill"
    spill_path: Path = Path("data/gateway/spill.jsonl")
    replay_interval_s: float = Field(default=5.0, gt=0)
    batch_max: int = Field(default=500, ge=1)
    # Exchanges that cannot become inference logs (an adapter error, a body that does not parse)
    # are kept here as they arrived (JSON lines, bodies in base64) with the reason, up to
    # rejected_max_bytes; past that they are only counted (dropped, reason rejected_full).
    rejected_path: Path = Path("data/gateway/rejected.jsonl")
    rejected_max_bytes: int = Field(default=256 * 1024 * 1024, ge=0)
    # Bodies above this are forwarded but not teed (counted as dropped, reason too_large).
    max_tee_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    prescreen: PrescreenSettings = Field(default_factory=PrescreenSettings)
