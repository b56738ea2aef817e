import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from pipeline.adapters import from_openai
from pipeline.decode import DecodeError, DecodeReason, decode_log
from pipeline.schemas import InferenceLog, MisuseVerdict, contract_json_schemas

FIXTURES = Path(__file__).parents[1] / "fixtures"
CONTRACTS = Path(__file__).parents[2] / "pipeline" / "contracts"


def _line(**over):
    rec = {"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00+00:00", "model": "m"}
    rec.update(over)
    return json.dumps(rec).encode()


def test_valid_chat_record_decodes_and_exposes_user_side_text():
    log = decode_log(
        _line(messages=[{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"},
                        {"role": "assistant", "content": "earlier answer"},
                        {"role": "user", "content": [{"type": "text", "text": "part"}, {"type": "image_url"}]}],
              completion="ok"),
        max_bytes=10_000,
    )
    assert log.prompt_text == "be nice\nhi\npart"
    assert log.has_completion


def test_user_side_text_reads_roles_as_screening_does():
    # Found by a hostile review (2026-12-04): prompt_text compared role != "assistant", so an
    # `Assistant` turn (model output) went into the lake's prompt hash and length, and the
    # campaigns job compared role == "user", so `User` and `human` turns had no user text.
    log = decode_log(
        _line(messages=[{"role": "System", "content": "be nice"}, {"role": "human", "content": "first"},
                        {"role": "Assistant", "content": "MODEL OUTPUT"}, {"role": "User", "content": "second"},
                        {"role": "user", "content": "   "}]),
        max_bytes=10_000,
    )
    assert log.prompt_text == "be nice\nfirst\nsecond\n   "
    assert list(log.user_texts()) == ["second", "first"]
    with_prompt = decode_log(_line(prompt="the prompt", messages=[{"role": "user", "content": "turn"}]), max_bytes=10_000)
    assert list(with_prompt.user_texts()) == ["the prompt", "turn"]


def test_prompt_or_messages_is_required_and_error_names_why():
    with pytest.raises(DecodeError) as err:
        decode_log(_line(), max_bytes=10_000)
    assert err.value.reason is DecodeReason.INVALID_RECORD
    assert "messages" in err.value.detail and "prompt" in err.value.detail


@pytest.mark.parametrize(
    ("raw", "reason", "field"),
    [
        (b"{not json", DecodeReason.INVALID_JSON, "line 1"),
        (b"\xff\xfe{}", DecodeReason.NOT_UTF8, "byte 0"),
        (b"[1,2]", DecodeReason.NOT_AN_OBJECT, "list"),
        (b"", DecodeReason.EMPTY, "no value"),
        (_line(schema="inference-log/v9", prompt="x"), DecodeReason.UNSUPPORTED_SCHEMA, "schema"),
        (_line(prompt="x", timestamp="2026-11-28T10:00:00"), DecodeReason.INVALID_RECORD, "timestamp"),
        (_line(messages=[{"role": "user", "content": 5}]), DecodeReason.INVALID_RECORD, "messages.0.content"),
        (_line(prompt="x", usage={"prompt_tokens": -1}), DecodeReason.INVALID_RECORD, "usage.prompt_tokens"),
    ],
)
def test_invalid_records_get_a_typed_error_naming_the_field(raw, reason, field):
    with pytest.raises(DecodeError) as err:
        decode_log(raw, max_bytes=10_000)
    assert err.value.reason is reason
    assert field in err.value.detail


def test_oversize_record_is_rejected_before_parsing():
    with pytest.raises(DecodeError) as err:
        decode_log(_line(prompt="x" * 5000), max_bytes=2048)
    assert err.value.reason is DecodeReason.TOO_LARGE


def test_every_fixture_malformed_line_is_rejected():
    for raw in (FIXTURES / "malformed.jsonl").read_bytes().splitlines():
        with pytest.raises(DecodeError):
            decode_log(raw, max_bytes=1_000_000)


def test_unknown_top_level_fields_are_ignored_for_forward_compatibility():
    log = decode_log(_line(prompt="x", new_gateway_field=1), max_bytes=10_000)
    assert log.prompt == "x"


def test_openai_chat_pair_adapts_to_inference_log():
    request = {"model": "qwen3-32b", "messages": [{"role": "user", "content": "hello"}], "user": "u-9"}
    response = {
        "id": "chatcmpl-123", "created": 1764324000, "model": "qwen3-32b",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi!"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }
    log = from_openai(request, response, deployment="chat-prod", tenant_id="acme")
    assert (log.request_id, log.user_id, log.completion, log.finish_reason) == ("chatcmpl-123", "u-9", "hi!", "stop")
    assert log.usage.completion_tokens == 2 and log.timestamp.tzinfo is not None


def test_openai_legacy_completion_pair_adapts():
    log = from_openai({"model": "m", "prompt": ["a", "b"]}, {"id": "cmpl-1", "created": 1, "choices": [{"text": "c"}]})
    assert log.prompt == "a\nb" and log.completion == "c"


def test_openai_pair_without_id_fails_with_named_field():
    with pytest.raises(DecodeError) as err:
        from_openai({"model": "m", "prompt": "x"}, {"choices": [{"text": "c"}]})
    assert "request_id" in err.value.detail


def test_checked_in_json_schemas_are_current():
    for name, schema in contract_json_schemas().items():
        assert (CONTRACTS / name).read_text() == json.dumps(schema, indent=2, sort_keys=True) + "\n", name


def test_verdict_schema_requires_complied_key():
    with pytest.raises(ValidationError):
        MisuseVerdict.model_validate({"request_id": "r", "timestamp": "2026-11-28T10:00:00Z", "model": "m",
                                      "flagged": False, "severity": "none", "categories": []})
    assert "complied" in MisuseVerdict.model_json_schema()["required"]


def test_inference_log_is_immutable():
    log = InferenceLog.model_validate({"schema": "inference-log/v1", "request_id": "r", "timestamp": "2026-11-28T10:00:00Z",
                                       "model": "m", "prompt": "p"})
    with pytest.raises(ValidationError):
        log.model = "other"  # type: ignore[misc]


def test_an_unsupported_schema_is_named_only_when_it_looks_like_one():
    """A privacy review (2026-12-02): the dead letter and the log echoed any value of the field."""
    with pytest.raises(DecodeError) as err:
        decode_log(_line(schema="inference-log/v2", prompt="x"), max_bytes=10_000)
    assert "'inference-log/v2'" in err.value.detail
    with pytest.raises(DecodeError) as err:
        decode_log(_line(schema="alice@example.com +1 415 555 0199", prompt="x"), max_bytes=10_000)
    assert "alice" not in err.value.detail and "555" not in err.value.detail
    assert "a string of 33 characters" in err.value.detail
