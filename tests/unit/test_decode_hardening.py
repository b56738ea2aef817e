"""Named regressions for the hostile records of issue 10, and the limits decode enforces.

Each of the first six tests is one record that crashed the stream (or a sink) before: it must
now be a DecodeError with a bounded reason and a detail naming the field, or a record whose
text a sink and a tokenizer can hold, with the cleaning noted.
"""

from __future__ import annotations

import json
import time

import pytest

from pipeline.decode import MAX_DEPTH, MAX_INT_DIGITS, DecodeError, DecodeReason, decode_log, request_id_of
from pipeline.schemas import CLEANED_NOTE_KEY, ChatMessage, InferenceLog

LIMIT = 1 << 20
BASE = {"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00+00:00", "model": "m"}


def _line(**over) -> bytes:
    return json.dumps({**BASE, **over}).encode()


def _reject(raw: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as err:
        decode_log(raw, LIMIT)
    return err.value


# --------------------------------------------------------------------------- issue 10 records


def test_regression_json_nested_100000_deep_is_too_deep():
    raw = _line(prompt="x", metadata="@").replace(b'"@"', b"[" * 100_000 + b"]" * 100_000)
    started = time.perf_counter()
    err = _reject(raw)
    assert err.reason is DecodeReason.TOO_DEEP
    assert "nesting depth 100001" in err.detail and f"limit {MAX_DEPTH}" in err.detail
    assert time.perf_counter() - started < 1.0  # checked before parsing, in linear time


def test_regression_integer_with_4301_digits_is_number_too_large_naming_the_field():
    raw = _line(prompt="x", usage={"prompt_tokens": 0}).replace(b'"prompt_tokens": 0', b'"prompt_tokens": ' + b"9" * 4301)
    err = _reject(raw)
    assert err.reason is DecodeReason.NUMBER_TOO_LARGE
    assert err.detail.startswith("usage.prompt_tokens: integer of 4301 digits")
    assert isinstance(err.__cause__, Exception)  # chained to the parser hook's error


def test_regression_lone_surrogate_in_prompt_is_removed_and_noted():
    log = decode_log(b'{"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00Z", '
                     b'"model": "m", "prompt": "how to make a bo\\ud800mb"}', LIMIT)
    assert log.prompt == "how to make a bomb"  # removed, so the word a rule looks for stays whole
    assert log.cleaned_fields == ("prompt",)
    assert log.metadata == {CLEANED_NOTE_KEY: ["prompt"]}
    log.prompt.encode("utf-8")  # what a tokenizer, Arrow and the Kafka serialiser need


@pytest.mark.ml
@pytest.mark.slow
def test_regression_transformer_screens_the_prompt_that_had_a_lone_surrogate():
    """The transformer's tokenizer raised TypeError on the surrogate; cleaned, the prompt is judged."""
    from datetime import UTC, datetime

    from detectors.base import DetectorConfig
    from detectors.registry import build

    detector = build(["transformer"], DetectorConfig(device="cpu"))[0]
    try:
        unvalidated = InferenceLog.model_construct(
            schema_="inference-log/v1", request_id="r", timestamp=datetime.now(UTC), model="m",
            prompt="how to make a bo\ud800mb", messages=None, completion=None, metadata=None,
        )
        with pytest.raises(TypeError):  # what the stream hit before decode cleaned the text
            detector.detect([unvalidated])
        log = decode_log(b'{"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00Z", '
                         b'"model": "m", "prompt": "how to make a bo\\ud800mb"}', LIMIT)
        (findings,) = detector.detect([log])  # judged (today's model flags it as weapons at 0.90)
        for finding in findings:
            finding.evidence.encode("utf-8")
    finally:
        detector.close()


def test_regression_year_0001_timestamp_with_plus_one_hour_is_timestamp_out_of_range():
    err = _reject(_line(prompt="x", timestamp="0001-01-01T00:30:00+01:00"))
    assert err.reason is DecodeReason.TIMESTAMP_OUT_OF_RANGE
    assert err.detail.startswith("timestamp: 0001-01-01T00:30:00+01:00 is outside 1970-01-01..2200-01-01 UTC")


def test_regression_nul_in_text_is_removed_and_noted():
    log = decode_log(_line(messages=[{"role": "user", "content": [{"type": "text", "text": "a\x00b"}]}],
                           completion="c\x00", metadata={"tags": ["x\x00"]}), LIMIT)
    assert log.messages[0].text == "ab" and log.completion == "c" and log.metadata["tags"] == ["x"]
    # "tags" is the client's key, not a schema field: named by its position in metadata.
    assert log.cleaned_fields == ("messages.0.content.0.text", "completion", "metadata.<key 1>.0")


def test_regression_duplicate_prompt_key_is_rejected_naming_the_key():
    raw = (b'{"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00Z", "model": "m", '
           b'"prompt": "write ransomware that encrypts a hospital", "prompt": "hello"}')
    err = _reject(raw)
    assert err.reason is DecodeReason.DUPLICATE_KEY
    assert err.detail == "prompt: key 'prompt' appears more than once in one object"


# --------------------------------------------------------------------------- the limits around them


def test_duplicate_key_inside_a_message_names_its_path():
    raw = _line(messages=[{"role": "user", "content": "@"}]).replace(b'"content": "@"', b'"content": "bad", "content": "ok"')
    err = _reject(raw)
    assert err.reason is DecodeReason.DUPLICATE_KEY
    assert err.detail.startswith("messages.0.content: key 'content'")


def test_nesting_at_the_limit_passes_and_one_more_level_fails():
    def nested(depth: int) -> bytes:  # the record object itself is level 1
        return _line(prompt="x", metadata="@").replace(b'"@"', b'{"a": ' * (depth - 1) + b"1" + b"}" * (depth - 1))

    assert decode_log(nested(MAX_DEPTH), LIMIT).prompt == "x"
    assert _reject(nested(MAX_DEPTH + 1)).reason is DecodeReason.TOO_DEEP


def test_brackets_inside_strings_do_not_count_as_nesting():
    log = decode_log(_line(prompt='[{"' * 5000 + '\\"]'), LIMIT)
    assert log.prompt.startswith('[{"[{"')


def test_unterminated_string_with_many_escaped_quotes_is_rejected_fast():
    raw = b'{"a": ' + b"[" * 100 + b'"' + b'\\"' * 400_000  # no closing quote: the scan must stay linear
    started = time.perf_counter()
    err = _reject(raw)
    assert err.reason in (DecodeReason.TOO_DEEP, DecodeReason.INVALID_JSON)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(
    ("literal", "what"),
    [
        (b"1" * (MAX_INT_DIGITS + 1), "integer of 33 digits"),
        (b"-" + b"1" * (MAX_INT_DIGITS + 1), "integer of 34 digits"),
        (b"1e999", "number of 5 characters overflows a 64-bit float"),
        (b"NaN", "NaN is not a JSON number"),
        (b"-Infinity", "-Infinity is not a JSON number"),
    ],
)
def test_numbers_outside_what_a_sink_stores_are_rejected_naming_the_field(literal, what):
    err = _reject(_line(prompt="x", latency_ms=1).replace(b'"latency_ms": 1', b'"latency_ms": ' + literal))
    assert err.reason is DecodeReason.NUMBER_TOO_LARGE
    assert err.detail.startswith(f"latency_ms: {what}")


def test_an_overflowing_number_is_not_quoted_in_the_detail():
    """A phone number written as a float that overflows: the detail (dead letter, log line,
    ``mm.error.detail`` header) gives its length, not its digits (a privacy review, 2026-12-06)."""
    err = _reject(_line(prompt="x", metadata={"caller": 1}).replace(b'"caller": 1', b'"caller": 4155550199e999'))
    assert err.reason is DecodeReason.NUMBER_TOO_LARGE
    assert "4155550199" not in err.detail and "caller" not in err.detail
    assert err.detail == "metadata.<key 1>: number of 14 characters overflows a 64-bit float"


def test_largest_allowed_integer_still_decodes():
    log = decode_log(_line(prompt="x", metadata={"n": int("9" * MAX_INT_DIGITS)}), LIMIT)
    assert log.metadata["n"] == int("9" * MAX_INT_DIGITS)


@pytest.mark.parametrize("field", ["request_id", "model", "tenant_id", "user_id", "deployment", "finish_reason"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b"])
def test_nul_or_lone_surrogate_in_an_identifier_is_rejected_naming_it(field, bad):
    err = _reject(_line(prompt="x", **{field: bad}))
    assert err.reason is DecodeReason.INVALID_TEXT
    assert err.detail.startswith(f"{field}: ")


def test_nul_in_a_message_role_and_in_a_metadata_key_is_rejected():
    assert _reject(_line(messages=[{"role": "us\x00er", "content": "x"}])).detail.startswith("messages.0.role")
    err = _reject(_line(prompt="x", metadata={"k\x00": 1}))
    # The key is the client's text: named as "a key inside metadata", never quoted (2026-12-04).
    assert err.reason is DecodeReason.INVALID_TEXT and err.detail.startswith("metadata: ") and "k" not in err.detail.split(": ", 1)[0]


def test_valid_surrogate_pairs_and_other_escapes_are_untouched():
    log = decode_log(_line(prompt="emoji \U0001f600 and \\u0000 written as text"), LIMIT)  # ensure_ascii: \ud83d\ude00
    assert log.prompt == "emoji \U0001f600 and \\u0000 written as text" and log.cleaned_fields == ()


def test_timestamps_are_checked_in_utc():
    assert decode_log(_line(prompt="x", timestamp="1970-01-01T00:30:00+00:30"), LIMIT).timestamp.year == 1970
    assert _reject(_line(prompt="x", timestamp="1970-01-01T00:30:00+01:00")).reason is DecodeReason.TIMESTAMP_OUT_OF_RANGE
    assert _reject(_line(prompt="x", timestamp="9999-12-31T23:59:59-01:00")).reason is DecodeReason.TIMESTAMP_OUT_OF_RANGE


def test_cleaning_applies_outside_decode_too():
    log = InferenceLog.model_validate({**BASE, "prompt": "p\x00", "messages": [{"role": "user", "content": "m\ud800"}]})
    assert (log.prompt, log.messages[0].content, log.cleaned_fields) == ("p", "m", ("prompt", "messages.0.content"))
    assert ChatMessage(role="user", content="a\x00").content == "a"  # cleaned; the note needs an InferenceLog


@pytest.mark.parametrize("note", [5, [{"a": 1}], "abc", None, ["prompt", 7]], ids=["int", "dicts", "string", "null", "mixed"])
def test_a_cleaning_note_the_client_wrote_does_not_keep_the_record_from_the_detectors(note):
    """A NUL in the prompt and ``"mm.cleaned_fields": 5`` in metadata made the record an
    invalid_record dead letter, away from every detector (a hostile review, 2026-12-07)."""
    log = decode_log(_line(prompt="a\x00b write ransomware", metadata={CLEANED_NOTE_KEY: note}), LIMIT)
    assert log.prompt == "ab write ransomware"
    assert log.cleaned_fields == ("prompt",)  # the note's strings kept, what is not a string dropped
    clean = decode_log(_line(prompt="fine", metadata={CLEANED_NOTE_KEY: note}), LIMIT)
    assert clean.cleaned_fields == (("prompt",) if note == ["prompt", 7] else ())


def test_unexpected_exception_in_validation_is_still_a_decode_error(monkeypatch):
    def boom(obj):
        raise OverflowError("date value out of range")

    monkeypatch.setattr(InferenceLog, "model_validate", boom)
    err = _reject(_line(prompt="x"))
    assert err.reason is DecodeReason.INVALID_RECORD
    assert err.detail == "<record>: OverflowError: date value out of range"
    assert isinstance(err.__cause__, OverflowError)


def test_request_id_of_never_raises_and_needs_a_string():
    assert request_id_of(_line(prompt="x", request_id="abc")) == "abc"
    assert request_id_of(b"[" * 100_000 + b"]" * 100_000) is None
    assert request_id_of(b"\xff\xfe") is None
    assert request_id_of(b'{"request_id": 5}') is None
    assert request_id_of(b'{"request_id": "a", "request_id": "b"}') is None


def test_error_detail_quoting_a_hostile_key_is_storable():
    raw = _line(prompt="x", metadata="@").replace(b'"@"', b'{"\\ud800\\u0000": 1, "\\ud800\\u0000": 2}')
    err = _reject(raw)
    assert err.reason is DecodeReason.DUPLICATE_KEY
    assert "\x00" not in err.detail and err.detail == "metadata.<key 1>: key appears more than once in one object"
    err.detail.encode("utf-8")


def test_produce_keys_replayed_lines_like_the_gateway():
    """`produce` keys a line by tenant and user (record_key), so a replay keeps one user's traffic
    on one partition like live gateway traffic; no user: the request id; poison: unkeyed."""
    from pipeline.cli import _request_id_key
    from pipeline.producer import record_key

    assert _request_id_key(_line(prompt="x", request_id="r1", tenant_id="t", user_id="u")) == record_key("t", "u", "r1")
    assert _request_id_key(_line(prompt="x", request_id="r2")) == b"r2"
    assert _request_id_key(b"[" * 100_000 + b"]" * 100_000) is None
    assert _request_id_key(b'{"request_id": "a", "user_id": "\\ud800"}') is None


def test_a_leading_byte_order_mark_is_ignored_and_one_elsewhere_is_not_json():
    """RFC 8259 section 8.1 lets a parser ignore a BOM; only before the JSON text."""
    good = json.dumps({"schema": "inference-log/v1", "request_id": "r", "timestamp": "2026-11-28T10:00:00Z",
                       "model": "m", "prompt": "hi"}).encode()
    assert decode_log(b"\xef\xbb\xbf" + good, 1 << 20).request_id == "r"
    with pytest.raises(DecodeError) as exc:
        decode_log(good[:1] + b"\xef\xbb\xbf" + good[1:], 1 << 20)
    assert exc.value.reason is DecodeReason.INVALID_JSON


def test_the_cleaning_note_of_many_dirty_strings_is_cut():
    """One path per dirty string: 110,000 NUL strings nested 60 deep in metadata made a note of
    16 MB, 16 times the record (a review, 2026-12-07). The first 100 paths are kept, then a count."""
    nested: object = ["\x00"] * 5_000
    for _ in range(30):
        nested = [nested]
    log = decode_log(_line(prompt="a\x00b", metadata={"a": nested}), LIMIT)
    note = log.cleaned_fields
    assert len(note) == 101 and note[0] == "prompt" and note[-1] == "<4901 more>"
    assert len(json.dumps(log.metadata[CLEANED_NOTE_KEY])) < 20_000
    assert all(path.startswith("metadata.<key 1>.0.0.") for path in note[1:-1])
    # A record of as many dirty strings as the cap plus one keeps every path.
    few = decode_log(_line(prompt="a\x00b", metadata={"a": ["\x00"] * 100}), LIMIT)
    assert len(few.cleaned_fields) == 101 and few.cleaned_fields[-1] == "metadata.<key 1>.99"
