"""The two versioned contracts: inference-log/v1 (input) and misuse-verdict/v1 (output).

JSON Schema files under ``pipeline/contracts/`` are exported from these models
(``misuse-monitor schemas export``); a unit test fails when they are stale.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

INFERENCE_LOG_V1 = "inference-log/v1"
MISUSE_VERDICT_V1 = "misuse-verdict/v1"

# Evidence is a short, redacted snippet: enough for a reviewer to recognise the case,
# never the whole prompt (alerts and dashboards carry it).
EVIDENCE_MAX_CHARS = 160


class Category(StrEnum):
    CYBER_ABUSE = "cyber_abuse"
    MISINFORMATION = "misinformation"
    JAILBREAK = "jailbreak"
    OTHER_HARM = "other_harm"


class Side(StrEnum):
    PROMPT = "prompt"
    COMPLETION = "completion"


class Severity(StrEnum):
    NONE = "none"
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _SEVERITY_ORDER.index(self)

    @classmethod
    def from_rank(cls, rank: int) -> Severity:
        return _SEVERITY_ORDER[max(0, min(rank, len(_SEVERITY_ORDER) - 1))]


_SEVERITY_ORDER = [Severity.NONE, Severity.LOW, Severity.MEDIUM, Severity.HIGH, Severity.CRITICAL]


class ContentPart(BaseModel):
    """One part of an OpenAI multi-part message content; only text parts are screened."""

    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ToolCallFunction(BaseModel):
    """The function a model asked to call; ``arguments`` is the JSON text the model wrote."""

    model_config = ConfigDict(extra="allow")
    name: str = Field(max_length=256)
    arguments: str = ""


class ToolCall(BaseModel):
    """One OpenAI tool call ({id, type, function: {name, arguments}}).

    Typed because the arguments are model output that can carry the harmful payload
    (a phishing email as a ``send_email`` argument), so detectors must be able to find them.
    """

    model_config = ConfigDict(extra="allow")
    id: str | None = Field(default=None, max_length=256)
    type: str = Field(default="function", max_length=64)
    function: ToolCallFunction


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str = Field(min_length=1, max_length=32)
    content: str | list[ContentPart] | None = None
    # assistant turns: what the model called and (reasoning parsers) what it thought
    tool_calls: list[ToolCall] | None = None
    reasoning_content: str | None = None
    # role "tool": which call this message answers, and the tool's name
    tool_call_id: str | None = Field(default=None, max_length=256)
    name: str | None = Field(default=None, max_length=256)

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text for part in self.content if part.text)


class Usage(BaseModel):
    model_config = ConfigDict(extra="allow")
    prompt_tokens: int | None = Field(default=None, ge=0)
    completion_tokens: int | None = Field(default=None, ge=0)


class InferenceLog(BaseModel):
    """One served request as written by a serving gateway (inference-log/v1).

    Unknown top-level fields are ignored so gateways can add fields without breaking the
    stream; anything they need kept goes in ``metadata``.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    schema_: Literal["inference-log/v1"] = Field(alias="schema")
    request_id: str = Field(min_length=1, max_length=256, description="Idempotency key")
    timestamp: AwareDatetime = Field(description="RFC 3339 with a UTC offset")
    model: str = Field(min_length=1, max_length=256)
    deployment: str | None = Field(default=None, max_length=256)
    tenant_id: str | None = Field(default=None, max_length=256)
    user_id: str | None = Field(default=None, max_length=256, description="Pseudonymous id")
    messages: list[ChatMessage] | None = None
    prompt: str | None = None
    completion: str | None = None
    # Optional since inference-log/v1 was first published; older records simply lack them.
    reasoning_content: str | None = Field(
        default=None, description="The model's reasoning/thinking text (e.g. vLLM --reasoning-parser)"
    )
    tool_calls: list[ToolCall] | None = Field(default=None, description="Tool calls in the completion")
    finish_reason: str | None = None
    usage: Usage | None = None
    latency_ms: float | None = Field(default=None, ge=0)
    metadata: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _needs_prompt_or_messages(self) -> InferenceLog:
        if not self.messages and self.prompt is None:
            raise ValueError("one of 'messages' (non-empty) or 'prompt' is required")
        return self

    @property
    def prompt_text(self) -> str:
        """What the user side sent: the prompt, or every non-assistant message in order.

        Earlier assistant turns are model output, not user intent, so they are left out;
        system and tool messages stay in because prompt injection hides there.
        """
        parts: list[str] = []
        if self.messages:
            parts.extend(m.text for m in self.messages if m.role != "assistant" and m.text)
        if self.prompt:
            parts.append(self.prompt)
        return "\n".join(parts)

    @property
    def has_completion(self) -> bool:
        return bool(self.completion and self.completion.strip())


class Finding(BaseModel):
    model_config = ConfigDict(frozen=True)

    category: Category
    subcategory: str | None = None
    side: Side
    score: float = Field(ge=0.0, le=1.0, description="Calibrated probability")
    detector: str
    detector_version: str
    evidence: str = Field(default="", max_length=EVIDENCE_MAX_CHARS)


class MisuseVerdict(BaseModel):
    """One verdict per input record (misuse-verdict/v1)."""

    model_config = ConfigDict(frozen=True)

    schema_: Literal["misuse-verdict/v1"] = Field(default=MISUSE_VERDICT_V1, alias="schema")
    request_id: str
    timestamp: AwareDatetime
    model: str
    deployment: str | None = None
    tenant_id: str | None = None
    user_id: str | None = Field(default=None, description="Pseudonymised user id")
    flagged: bool
    severity: Severity
    categories: list[Category] = Field(description="Sorted, unique")
    complied: bool | None = Field(
        description="Did the model produce the harmful content? null when there is no completion"
    )
    findings: list[Finding] = Field(default_factory=list)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)


def contract_json_schemas() -> dict[str, dict[str, Any]]:
    """File name -> JSON Schema for every published contract (deterministic)."""
    return {
        "inference-log.v1.schema.json": InferenceLog.model_json_schema(by_alias=True),
        "misuse-verdict.v1.schema.json": MisuseVerdict.model_json_schema(by_alias=True),
    }
