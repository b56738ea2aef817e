"""Decode errors name fields, not values (docs/privacy.md): an object key the client chose (under
``metadata``, an unknown field) is named by its position, never quoted; the schema's own field
names stay readable. Before, a duplicated e-mail address used as a metadata key was copied into
the dead letter's detail, the classify error file and the stream's log."""

from __future__ import annotations

import json

import pytest

from pipeline.decode import DecodeError, DecodeReason, decode_log
from pipeline.schemas import CLEANED_NOTE_KEY

LIMIT = 1 << 20
HEAD = b'{"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00Z", "model": "m", '
SECRET = "alice.secret@example.com"


def _reject(raw: bytes) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode_log(raw, LIMIT)
    return caught.value


def test_a_duplicated_metadata_key_is_named_by_position_not_quoted():
    err = _reject(HEAD + b'"prompt": "x", "metadata": {"a": 0, "%s": 1, "%s": 2}}' % (SECRET.encode(), SECRET.encode()))
    assert err.reason is DecodeReason.DUPLICATE_KEY
    assert err.detail == "metadata.<key 2>: key appears more than once in one object"
    assert "alice" not in str(err)


def test_a_metadata_key_with_nul_is_rejected_without_quoting_it():
    err = _reject(HEAD + b'"prompt": "x", "metadata": {"%s\\u0000": 1}}' % SECRET.encode())
    assert err.reason is DecodeReason.INVALID_TEXT
    assert err.detail.startswith("metadata: ") and "alice" not in err.detail, err.detail


def test_an_unknown_key_in_a_message_is_named_by_position():
    raw = HEAD + b'"messages": [{"role": "user", "content": "x", "%s": 1, "%s": 2}]}' % (SECRET.encode(), SECRET.encode())
    err = _reject(raw)
    assert err.detail == "messages.0.<key 3>: key appears more than once in one object"


def test_a_path_through_client_keys_to_an_oversized_number_names_no_key():
    err = _reject(HEAD + b'"prompt": "x", "metadata": {"%s": {"n": 1e999}}}' % SECRET.encode())
    assert err.reason is DecodeReason.NUMBER_TOO_LARGE
    assert err.detail.startswith("metadata.<key 1>.<key 1>: number of 5 characters") and "alice" not in err.detail


def test_a_cleaned_value_under_client_keys_is_noted_without_the_keys():
    """``mm.cleaned_fields`` is stored with the kept log, and no pseudonymiser reads it: a value
    cleaned of a NUL under a key that is an e-mail address or a phone number is noted by
    position. It quoted the keys until a privacy review (2026-12-06)."""
    raw = HEAD + b'"prompt": "x", "metadata": {"phones": {"+1 415 555 0199": "mobile\\u0000"}, "%s": ["a\\u0000"]}}' % (
        SECRET.encode())
    log = decode_log(raw, 1 << 20)
    assert log.cleaned_fields == ("metadata.<key 1>.<key 1>", "metadata.<key 2>.0")
    assert "555" not in json.dumps(log.metadata[CLEANED_NOTE_KEY]) and "alice" not in json.dumps(log.metadata[CLEANED_NOTE_KEY])
    # Schema field names stay readable in the note.
    assert decode_log(HEAD + b'"prompt": "x\\u0000"}', 1 << 20).cleaned_fields == ("prompt",)


def test_schema_field_names_stay_readable():
    err = _reject(HEAD + b'"prompt": "a", "prompt": "b"}')
    assert err.detail == "prompt: key 'prompt' appears more than once in one object"
    err = _reject(HEAD + b'"prompt": "x", "usage": {"prompt_tokens": 1e999}}')
    assert err.detail.startswith("usage.prompt_tokens: ")
