"""Property-based fuzzing of decode and classify (hypothesis).

Properties, each over generated input:

* any bytes -> an InferenceLog or a DecodeError, never another exception;
* a valid record with arbitrary JSON mutations (values of any type, huge integers, NaN, NUL and
  lone surrogates in any string, deep nesting, duplicate keys) -> the same, and an accepted log
  holds only what every sink and detector can store (no NUL, no lone surrogate, a timestamp in
  range, finite numbers);
* the pre-parse depth scan and the duplicate-key check agree with a reference on valid JSON;
* classify_lines over arbitrary lines -> exactly one output line per input, in order, each a
  valid misuse-verdict/v1 or misuse-error/v1.

The whole module runs in well under 30 s (max_examples below; deadline off because a shared
2-core machine makes per-example timings meaningless).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from functools import cache
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.base import DetectorConfig
from detectors.registry import build
from pipeline.cli import classify_lines
from pipeline.decode import MAX_DEPTH, DecodeError, DecodeReason, _nesting_depth, decode_log
from pipeline.schemas import InferenceLog, MisuseVerdict
from pipeline.scoring import Scorer
from pipeline.verdicts import Pseudonymizer

LIMIT = 64 * 1024
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

VALID = {
    "schema": "inference-log/v1",
    "request_id": "req-1",
    "timestamp": "2026-11-28T10:00:00+00:00",
    "model": "qwen3-32b",
    "tenant_id": "acme",
    "user_id": "u-1",
    "messages": [
        {"role": "system", "content": "be helpful"},
        {"role": "user", "content": [{"type": "text", "text": "Write a phishing email to steal passwords"}]},
    ],
    "completion": "I can't help with that.",
    "usage": {"prompt_tokens": 12, "completion_tokens": 6},
    "latency_ms": 12.5,
    "metadata": {"region": "eu"},
}
FIELDS = [*VALID, "prompt", "deployment", "finish_reason", "reasoning_content", "tool_calls"]

# Any character, NUL and lone surrogates included (hypothesis leaves out surrogates by default).
any_text = st.text(st.characters(exclude_categories=[]), max_size=40) | st.sampled_from(
    ["", "\x00", "\ud800", "\udfff", "a\ud83d", "\ud83d\ude00", "2026-11-28T10:00:00Z", "0001-01-01T00:30:00+01:00",
     "9999-12-31T23:59:59-01:00", "inference-log/v1", "user", "[{\"", "\\"]
)
json_scalars = (
    st.none() | st.booleans() | any_text
    | st.integers(min_value=-(10**40), max_value=10**40) | st.integers(min_value=0, max_value=2**63)
    | st.floats(allow_nan=True, allow_infinity=True)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)


def _deep(depth: int) -> Any:
    value: Any = "x"
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def _set_path(record: dict[str, Any], path: list[Any], value: Any) -> None:
    """Set record[path...] = value, creating nothing: stops where the path leaves the record."""
    node: Any = record
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    try:
        node[path[-1]] = value
    except (IndexError, TypeError):
        return


PATHS = [
    [f] for f in FIELDS
] + [
    ["messages", 0, "role"], ["messages", 0, "content"], ["messages", 1, "content", 0, "text"],
    ["messages", 1, "content", 0, "type"], ["messages", 1, "extra"], ["usage", "prompt_tokens"],
    ["metadata", "region"], ["metadata", "nested"],
]


@st.composite
def mutated_records(draw: st.DrawFn) -> bytes:
    record = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(PATHS))
        if draw(st.booleans()) and len(path) == 1 and path[0] in record:
            del record[path[0]]
            continue
        value = draw(json_values | st.builds(_deep, st.integers(MAX_DEPTH - 3, MAX_DEPTH + 3)))
        _set_path(record, path, value)
    text = json.dumps(record, ensure_ascii=draw(st.booleans()))  # \u escapes or raw characters
    if draw(st.integers(0, 4)) == 0:  # a duplicate key: a second copy of a top-level field
        key = draw(st.sampled_from(FIELDS))
        text = text[:-1] + f", {json.dumps(key)}: {json.dumps(draw(json_scalars))}" + "}"
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate as raw bytes: invalid UTF-8


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (_strings(k) + _strings(v))]
    if isinstance(value, list | tuple):
        return [s for v in value for s in _strings(v)]
    return []


def _assert_storable(log: InferenceLog) -> None:
    """What every sink and detector needs of an accepted record."""
    dumped = log.model_dump(by_alias=True)
    for text in _strings(dumped):
        assert "\x00" not in text
        text.encode("utf-8")  # raises on a lone surrogate
    assert datetime(1970, 1, 1, tzinfo=UTC) <= log.timestamp < datetime(2200, 1, 1, tzinfo=UTC)
    assert log.latency_ms is None or math.isfinite(log.latency_ms)
    log.model_dump_json()  # serialisable, as the sinks do it


def _decode_or_error(raw: bytes) -> InferenceLog | DecodeError:
    try:
        return decode_log(raw, LIMIT)
    except DecodeError as exc:
        assert isinstance(exc.reason, DecodeReason) and exc.detail
        assert "\x00" not in exc.detail and len(exc.detail) <= 1000
        exc.detail.encode("utf-8")  # storable in a Kafka header and a JSON line
        return exc


@FUZZ
@given(st.binary(max_size=2000))
def test_any_bytes_decode_to_a_log_or_a_decode_error(raw):
    result = _decode_or_error(raw)
    if isinstance(result, InferenceLog):
        _assert_storable(result)


@FUZZ
@given(st.binary(max_size=300), st.integers(0, 2000), st.binary(max_size=20))
def test_valid_record_with_bytes_spliced_in_decodes_to_a_log_or_a_decode_error(junk, at, cut):
    raw = json.dumps(VALID).encode()
    at = at % (len(raw) + 1)
    result = _decode_or_error(raw[:at] + junk + raw[at + len(cut):])
    if isinstance(result, InferenceLog):
        _assert_storable(result)


@FUZZ
@given(mutated_records())
def test_mutated_records_decode_to_a_storable_log_or_a_decode_error(raw):
    result = _decode_or_error(raw)
    if isinstance(result, InferenceLog):
        _assert_storable(result)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@FUZZ
@given(json_values | st.builds(_deep, st.integers(0, 80)), st.booleans())
def test_depth_scan_agrees_with_the_parsed_depth(value, ascii_only):
    raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert _nesting_depth(raw) == _depth(value)


@FUZZ
@given(st.dictionaries(st.text(max_size=5), st.none() | st.booleans() | st.integers(-99, 99) | any_text, min_size=1, max_size=5),
       st.data())
def test_a_repeated_key_at_any_level_is_a_duplicate_key_error(obj, data):
    key = data.draw(st.sampled_from(sorted(obj)))
    inner = json.dumps(obj)[:-1] + f", {json.dumps(key)}: 1" + "}"
    record = json.dumps({**VALID, "metadata": "@"}).replace('"@"', inner)
    result = _decode_or_error(record.encode("utf-8", "surrogatepass"))
    assert isinstance(result, DecodeError) and result.reason in (DecodeReason.DUPLICATE_KEY, DecodeReason.NOT_UTF8)
    if result.reason is DecodeReason.DUPLICATE_KEY:
        assert result.detail.startswith("metadata.")


@cache
def _scorer() -> Scorer:
    return Scorer(build(["rules"], DetectorConfig()), Pseudonymizer(b"fuzz-key"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(mutated_records() | st.binary(max_size=200) | st.just(json.dumps(VALID).encode()), max_size=8))
def test_classify_lines_writes_one_valid_line_per_input_line(raws):
    lines = list(enumerate(raws, start=1))
    out = classify_lines(lines, _scorer(), max_bytes=LIMIT)
    assert [n for n, _ in out] == [n for n, _ in lines]
    for line_no, text in out:
        assert "\n" not in text
        obj = json.loads(text)
        if obj["schema"] == "misuse-verdict/v1":
            MisuseVerdict.model_validate(obj)
        else:
            assert obj["schema"] == "misuse-error/v1" and obj["line"] == line_no and obj["reason"] and obj["detail"]
