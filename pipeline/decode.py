"""Bytes -> InferenceLog, with typed errors that name the field and the reason.

This is the isolation boundary for hostile input: :func:`decode_log` raises nothing but
:class:`DecodeError` (chained to the original exception), whatever the bytes, so the runner can
route the original bytes to the dead-letter topic and the batch goes on; nothing is dropped here.

Limits, checked before or while parsing so that no record can cost more than its size allows:

* ``too_large``: more bytes than ``max_bytes`` (checked before anything else);
* ``too_deep``: arrays/objects nested deeper than :data:`MAX_DEPTH` (checked before parsing:
  CPython's parser and pydantic both recurse, and 100,000 levels raised RecursionError);
* ``number_too_large``: an integer literal longer than :data:`MAX_INT_DIGITS` digits (checked
  while parsing; Python refuses to convert ints over 4,300 digits with a bare ValueError, and no
  sink column holds more than 64 bits anyway), or the JSON constants NaN/Infinity, which RFC 8259
  does not allow and a float overflow such as ``1e999``;
* ``duplicate_key``: the same key twice in one object, at any level. JSON parsers disagree on
  which copy wins (Python and pydantic keep the last), so a harmful first ``"prompt"`` could be
  served by one component and hidden from the monitor by a second, harmless one;
* ``timestamp_out_of_range`` / ``invalid_text``: see the validators in :mod:`pipeline.schemas`.

Cost (``bench/bench_decode.py``, 2,000 simulated records of 2.5 KB mean, shared 2-core machine;
the pre-hardening decode timed in the same process): about 2x the unguarded decode, e.g. 18-20 us
against 9.8 us per record; the guarded parse adds ~3 us (hooks for duplicate keys and numbers),
the storable-text, timestamp and extra-field validators ~4-5 us. At 5,000 records/s that is
about a tenth of one core. A 1 MB hostile line costs milliseconds (the depth scan is C speed).
"""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from pipeline.schemas import InferenceLog, key_label, schema_field_names

# Real inference logs nest < 10 deep (record > messages > content part / tool call > function).
# 64 leaves room for gateway metadata and stays far below Python's recursion limit (1000).
MAX_DEPTH = 64
# 2**63 has 19 digits; 32 leaves room for signs and ids written as numbers, and is far below
# CPython's 4,300-digit int conversion limit.
MAX_INT_DIGITS = 32
DETAIL_MAX_CHARS = 1000


class DecodeReason(StrEnum):
    TOO_LARGE = "too_large"
    NOT_UTF8 = "not_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    NUMBER_TOO_LARGE = "number_too_large"
    DUPLICATE_KEY = "duplicate_key"
    NOT_AN_OBJECT = "not_an_object"
    UNSUPPORTED_SCHEMA = "unsupported_schema"
    INVALID_RECORD = "invalid_record"
    INVALID_TEXT = "invalid_text"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    EMPTY = "empty"


class DecodeError(ValueError):
    """A record that cannot become an InferenceLog. ``reason`` is a bounded label."""

    def __init__(self, reason: DecodeReason, detail: str) -> None:
        # The detail travels in Kafka headers, JSON lines and database rows, and may quote a
        # hostile key: escape NUL and lone surrogates, and bound its length.
        detail = detail.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
        if len(detail) > DETAIL_MAX_CHARS:
            detail = detail[: DETAIL_MAX_CHARS - 3] + "..."
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


# pydantic error types raised by pipeline.schemas validators -> their own reason label.
_REASON_BY_ERROR_TYPE = {
    "invalid_text": DecodeReason.INVALID_TEXT,
    # pydantic's own check, on length-constrained strings, for a lone surrogate
    "string_unicode": DecodeReason.INVALID_TEXT,
    "timestamp_out_of_range": DecodeReason.TIMESTAMP_OUT_OF_RANGE,
}


# Object keys a detail may quote: the schema's own field names (pipeline.schemas.key_label).
_SHOWN_KEYS = schema_field_names()


def format_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """'messages.0.content: Input should be a valid string; ...' (field path first)."""
    parts = []
    for err in exc.errors(include_url=False)[:limit]:
        loc = ".".join(key_label(p) for p in err["loc"]) or "<record>"
        if err["type"] == "invalid_text" and "key" in err.get("ctx", {}):
            # pipeline.schemas quotes the offending key (and its path of keys); name neither.
            parts.append(f"{loc}: a key inside it contains NUL or a lone surrogate")
            continue
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - limit
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def validation_reason(exc: ValidationError) -> DecodeReason:
    """``invalid_text`` / ``timestamp_out_of_range`` when that is the first error, else ``invalid_record``."""
    first = exc.errors(include_url=False)[0]["type"] if exc.error_count() else ""
    return _REASON_BY_ERROR_TYPE.get(first, DecodeReason.INVALID_RECORD)


# --------------------------------------------------------------------------- guarded JSON parse

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEPS = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as int8


def _nesting_depth(value: bytes) -> int:
    """Deepest array/object nesting of a JSON text, ignoring brackets inside strings.

    Linear time at C speed, no recursion, no per-byte Python (a 1 MB line of brackets or of
    escaped quotes costs milliseconds): drop escaped backslashes, then escaped quotes, so every
    remaining quote opens or closes a string; keep the text between strings; count brackets.
    An unterminated string hides the brackets after it, which the parser never reaches either.
    """
    import numpy as np  # only records with more than MAX_DEPTH brackets get here

    unescaped = value.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside_strings = b"".join(unescaped.split(b'"')[::2])
    steps = outside_strings.translate(_BRACKET_STEPS, _NOT_BRACKETS)
    if not steps:
        return 0
    return max(0, int(np.cumsum(np.frombuffer(steps, dtype=np.int8), dtype=np.int64).max()))


class _Limit(Exception):
    """Raised from parser hooks; turned into a DecodeError once the field path is known."""

    def __init__(self, reason: DecodeReason, what: str) -> None:
        super().__init__(what)
        self.reason = reason
        self.what = what


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Limit(DecodeReason.DUPLICATE_KEY, "duplicate key")
    return obj


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + (text[0] == "-"):
        raise _Limit(DecodeReason.NUMBER_TOO_LARGE, f"integer of {len(text)} digits > limit {MAX_INT_DIGITS}")
    return int(text)


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):
        # The digits are the client's text (a phone number written as 4155550199e999): say how
        # long the number is, not what it says, as for integers.
        raise _Limit(DecodeReason.NUMBER_TOO_LARGE, f"number of {len(text)} characters overflows a 64-bit float")
    return number


def _no_constant(text: str) -> float:
    raise _Limit(DecodeReason.NUMBER_TOO_LARGE, f"{text} is not a JSON number (RFC 8259)")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_strict_pairs, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant
)


class _Marked:
    """Stands in for an offending value on the slow path that locates it."""

    def __init__(self, what: str) -> None:
        self.what = what


def _locate(text: str, reason: DecodeReason) -> str:
    """Field path of the first value that hit ``reason`` (slow path, bad records only).

    The fast parse raises from inside a hook, where the path is unknown; this re-parses with
    hooks that mark the offending value instead, then walks the (depth-bounded) result.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in items:
            if key in obj and reason is DecodeReason.DUPLICATE_KEY:
                quoted = f"{key!r} " if key in _SHOWN_KEYS else ""
                obj[key] = _Marked(f"key {quoted}appears more than once in one object")
            elif key not in obj or not isinstance(obj[key], _Marked):
                obj[key] = value
        return obj

    def integer(s: str) -> Any:
        return _Marked(f"integer of {len(s)} digits") if len(s) > MAX_INT_DIGITS + (s[0] == "-") else 0

    def floating(s: str) -> Any:
        return _Marked(f"number of {len(s)} characters overflows a 64-bit float") if math.isinf(float(s)) else 0.0

    def constant(s: str) -> Any:
        return _Marked(f"{s} is not a JSON number (RFC 8259)")

    try:
        root = json.loads(text, object_pairs_hook=pairs, parse_int=integer, parse_float=floating, parse_constant=constant)
    except (ValueError, RecursionError):  # pragma: no cover - the fast parse got further than this
        return "<record>"
    stack: list[tuple[str, Any]] = [("", root)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, _Marked):
            return f"{path or '<record>'}: {node.what}"
        children = (
            [(key_label(key, i + 1), child) for i, (key, child) in enumerate(node.items())] if isinstance(node, dict)
            else list(enumerate(node)) if isinstance(node, list) else []
        )
        for key, child in reversed(children):  # reversed: the stack pops them in document order
            stack.append((f"{path}.{key}" if path else str(key), child))
    return "<record>"


def too_large(size: int, max_bytes: int) -> DecodeError:
    """The error of a record over the size limit: raised by decode, and by the readers that
    never hold such a record whole (``classify``'s long lines, Spark's cut values)."""
    return DecodeError(DecodeReason.TOO_LARGE, f"{size} bytes > limit {max_bytes} bytes")


def parse_json_object(value: bytes | None, max_bytes: int) -> dict[str, Any]:
    """The JSON object in ``value`` under every limit above, or a DecodeError.

    Shared by :func:`decode_log` and by tools that only need a field of a raw line
    (``misuse-monitor produce`` reads the request id for the record key).
    """
    if not value:
        raise DecodeError(DecodeReason.EMPTY, "record has no value")
    if len(value) > max_bytes:
        # Checked before parsing so a 10 MB prompt costs no JSON parse or model time.
        raise too_large(len(value), max_bytes)
    # Cheap bound first: a record cannot nest deeper than it has opening brackets.
    if value.count(b"{") + value.count(b"[") > MAX_DEPTH:
        depth = _nesting_depth(value)
        if depth > MAX_DEPTH:
            raise DecodeError(DecodeReason.TOO_DEEP, f"<record>: nesting depth {depth} > limit {MAX_DEPTH}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError(DecodeReason.NOT_UTF8, f"invalid UTF-8 at byte {exc.start}") from exc
    # A UTF-8 byte order mark before the JSON text, which RFC 8259 (section 8.1) lets a parser
    # ignore: Windows tools write one at the top of a file, and it made line 1 "Expecting value".
    text = text.removeprefix("\ufeff")
    try:
        obj = _DECODER.decode(text)
    except _Limit as exc:
        raise DecodeError(exc.reason, _locate(text, exc.reason)) from exc
    except json.JSONDecodeError as exc:
        raise DecodeError(
            DecodeReason.INVALID_JSON, f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc
    except (RecursionError, ValueError, OverflowError, MemoryError) as exc:  # belt and braces: limits above
        raise DecodeError(DecodeReason.INVALID_JSON, f"{type(exc).__name__}: {str(exc)[:200]}") from exc
    if not isinstance(obj, dict):
        raise DecodeError(DecodeReason.NOT_AN_OBJECT, f"expected a JSON object, got {type(obj).__name__}")
    return obj


_SCHEMA_NAME = re.compile(r"[a-z][a-z0-9._-]{0,40}/v[0-9]{1,3}")


def _described(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return f"a string of {len(value)} characters"
    return f"a {type(value).__name__}"


def decode_log(value: bytes | None, max_bytes: int) -> InferenceLog:
    """Decode one Kafka record value or JSONL line into an InferenceLog; raises only DecodeError.

    ``json.loads`` + ``model_validate`` rather than pydantic's ``model_validate_json``: parse and
    validation in one Rust pass took 5.7 us per simulated record, no more than ``json.loads``
    alone (6.0 us; both measured before the validators were added), but it silently keeps the
    last of duplicate keys and has no integer-size hook, and running both parsers would cost
    more than the Python hooks do (~3 us).
    """
    obj = parse_json_object(value, max_bytes)
    schema = obj.get("schema")
    if schema != "inference-log/v1":
        # A value shaped like a schema name is shown (``inference-log/v2`` is worth reading);
        # anything else only by type and length: dead letters and logs name fields, not values
        # (a privacy review found an e-mail address and a phone number echoed from this field).
        shown = repr(schema) if isinstance(schema, str) and _SCHEMA_NAME.fullmatch(schema) else _described(schema)
        raise DecodeError(DecodeReason.UNSUPPORTED_SCHEMA, f"schema: expected 'inference-log/v1', got {shown}")
    try:
        return InferenceLog.model_validate(obj)
    except ValidationError as exc:
        raise DecodeError(validation_reason(exc), format_validation_error(exc)) from exc
    except Exception as exc:  # noqa: BLE001 - the isolation boundary: one record must never stop the batch
        raise DecodeError(DecodeReason.INVALID_RECORD, f"<record>: {type(exc).__name__}: {str(exc)[:200]}") from exc


def request_id_of(value: bytes, max_bytes: int = 1 << 20) -> str | None:
    """The ``request_id`` of a raw line when it has a usable one, else None; never raises."""
    return key_fields_of(value, max_bytes)[2]


def key_fields_of(value: bytes, max_bytes: int = 1 << 20) -> tuple[str | None, str | None, str | None]:
    """(tenant_id, user_id, request_id) of a raw line, each None when absent or not a string;
    never raises (``produce`` keys replayed lines like the gateway keys live ones)."""
    try:
        obj = parse_json_object(value, max_bytes)
    except DecodeError:
        return None, None, None
    fields = (obj.get("tenant_id"), obj.get("user_id"), obj.get("request_id"))
    return tuple(f if isinstance(f, str) and f else None for f in fields)  # type: ignore[return-value]
