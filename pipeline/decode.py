"""Bytes -> InferenceLog, with typed errors that name the field and the reason.

Every failure raises :class:`DecodeError` (chained to the original exception) so the
runner can route the original bytes to the dead-letter topic; nothing is dropped here.
"""

from __future__ import annotations

import json
from enum import StrEnum

from pydantic import ValidationError

from pipeline.schemas import InferenceLog


class DecodeReason(StrEnum):
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    INVALID_RECORD = "invalid_record"
    EMPTY = "empty"


class DecodeError(ValueError):
    """A record that cannot become an InferenceLog. ``reason`` is a bounded label."""

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def format_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """'messages.0.content: Input should be a valid string; ...' (field path first)."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "<record>"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def decode_log(value: bytes | None, max_bytes: int) -> InferenceLog:
    """Decode one Kafka record value or JSONL line into an InferenceLog."""
    if not value:
        raise DecodeError(DecodeReason.EMPTY, "record has no value")
    if len(value) > max_bytes:
        # Checked before parsing so a 10 MB prompt costs no JSON parse or model time.
        raise DecodeError(DecodeReason.TOO_LARGE, f"{len(value)} bytes > limit {max_bytes} bytes")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(DecodeReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DecodeError(
            DecodeReason.INVALID_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    if not isinstance(obj, dict):
        raise DecodeError(DecodeReason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if schema != "inference-log/v1":
        raise DecodeError(
            DecodeReason.UNSUPPORTED_SCHEMA, f"schema: expected 'inference-log/v1', got {schema!r}"
        )
    try:
        return InferenceLog.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError(DecodeReason.INVALID_RECORD, format_validation_error(exc)) from exc
