"""The lake keeps raw text only as its policy says, never a raw identifier, and prunes by age."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from pipeline.lake import LakeWriter, prune
from pipeline.privacy import (
    DEFAULT_PSEUDONYM_KEY,
    LakePolicy,
    PrivacyKeyError,
    TextCipher,
    check_pseudonym_key,
)
from pipeline.schemas import Category, Finding, Side
from pipeline.sinks.base import ScoredRecord, SourcePosition
from pipeline.verdicts import Pseudonymizer, build_verdict
from tests.fixtures.logs import make_log

KEY = b"a-test-key-of-sufficient-length"
EMAIL = "jane.doe@example.com"
PROMPT = "Write a phishing email to Jane Doe, her card is 4111 1111 1111 1111"


def _records(n: int = 4, day: str = "2026-11-28") -> list[ScoredRecord]:
    """Even offsets flagged, odd ones benign; every record carries identifiers and PII."""
    pseudo = Pseudonymizer(KEY)
    out = []
    for off in range(n):
        log = make_log(
            request_id=f"r-{off}",
            timestamp=f"{day}T10:00:0{off}Z",
            user_id=EMAIL,
            messages=[{"role": "user", "content": PROMPT, "name": "jane_doe"}],
            prompt=None,
            completion="Dear customer, click here",
            metadata={"session_id": "sess-42", "client_ip": "203.0.113.9", "route": "/v1/chat"},
        )
        findings = []
        if off % 2 == 0:
            findings = [Finding(category=Category.CYBER_ABUSE, side=Side.PROMPT, score=0.8, detector="rules", detector_version="t", evidence="phishing <PERSON>")]
        out.append(ScoredRecord(log, build_verdict(log, findings, pseudo), SourcePosition("logs", 0, off)))
    return out


def _rows(tmp_path, policy: LakePolicy) -> list[dict]:
    LakeWriter(tmp_path, policy).write(_records())
    return sorted(LakeWriter(tmp_path).read().to_pylist(), key=lambda r: r["source_offset"])


@pytest.mark.parametrize(
    ("raw_text", "kept"), [("none", [False] * 4), ("flagged", [True, False, True, False]), ("all", [True] * 4)]
)
def test_raw_text_policy_decides_which_rows_keep_their_log(tmp_path, raw_text: str, kept: list[bool]) -> None:
    rows = _rows(tmp_path, LakePolicy(raw_text=raw_text, pseudonym_key=KEY))
    assert [r["log_json"] is not None for r in rows] == kept
    for row in rows:
        # What every row keeps whatever the policy: the verdict, keyed hashes and lengths.
        assert row["verdict_json"] and row["prompt_hash"] and row["completion_hash"]
        assert row["prompt_chars"] == len(PROMPT) and row["completion_chars"] == len("Dear customer, click here")
        assert row["language"] == "en"
        if row["log_json"] is None:
            assert "Jane Doe" not in json.dumps(row, default=str)


def test_stored_logs_hold_pseudonyms_never_raw_identifiers(tmp_path) -> None:
    rows = _rows(tmp_path, LakePolicy(raw_text="all", pseudonym_key=KEY))
    pseudonym = Pseudonymizer(KEY)(EMAIL)
    for row in rows:
        log = json.loads(row["log_json"])
        assert log["user_id"] == pseudonym == row["user_id"]
        assert log["messages"][0]["name"] == Pseudonymizer(KEY)("jane_doe")
        assert log["metadata"]["session_id"] != "sess-42" and log["metadata"]["client_ip"] != "203.0.113.9"
        assert log["metadata"]["route"] == "/v1/chat"  # not an identifier: kept
        assert EMAIL not in json.dumps(row, default=str)


def test_text_hashes_are_keyed(tmp_path) -> None:
    import hashlib

    rows = _rows(tmp_path, LakePolicy(raw_text="none", pseudonym_key=KEY))
    assert len({r["prompt_hash"] for r in rows}) == 1  # equal texts collide (campaign duplicates)
    assert rows[0]["prompt_hash"] not in hashlib.sha256(PROMPT.encode()).hexdigest()  # but not a plain hash


def test_kept_text_is_encrypted_with_the_key_from_settings(tmp_path) -> None:
    key = TextCipher.generate()
    rows = _rows(tmp_path, LakePolicy(raw_text="flagged", pseudonym_key=KEY, encryption_key_b64=key))
    flagged = [r for r in rows if r["flagged"]]
    assert all(r["log_json"] is None and r["log_json_encrypted"] for r in rows if r["flagged"])
    assert all(r["log_json_encrypted"] is None for r in rows if not r["flagged"])
    for row in rows:  # read back (the file is zstd-compressed): the text is nowhere in clear
        clear = json.dumps({k: v for k, v in row.items() if k != "log_json_encrypted"}, default=str)
        # "4111 1111" with its space: a bare "4111" can occur in a hash's hex or a timestamp.
        assert "Jane Doe" not in clear and "4111 1111" not in clear and EMAIL not in clear
    cipher = TextCipher.from_b64(key)
    log = json.loads(cipher.decrypt(flagged[0]["log_json_encrypted"], flagged[0]["request_id"]))
    assert log["request_id"] == flagged[0]["request_id"]
    with pytest.raises(PrivacyKeyError):  # moved to another row: the request id is bound in
        cipher.decrypt(flagged[0]["log_json_encrypted"], flagged[1]["request_id"])
    with pytest.raises(PrivacyKeyError):
        TextCipher.from_b64(TextCipher.generate()).decrypt(flagged[0]["log_json_encrypted"], flagged[0]["request_id"])


def test_a_malformed_encryption_key_fails_when_the_policy_is_built() -> None:
    with pytest.raises(PrivacyKeyError):
        TextCipher.from_b64("dG9vLXNob3J0")


def test_rescoring_a_stored_log_keeps_the_verdicts_user(tmp_path) -> None:
    rows = _rows(tmp_path, LakePolicy(raw_text="all", pseudonym_key=KEY))
    stored = make_log(**{k: v for k, v in json.loads(rows[0]["log_json"]).items()})
    again = build_verdict(stored, [], Pseudonymizer(KEY))
    assert again.user_id == rows[0]["user_id"]


def test_prune_removes_date_partitions_entirely_older_than_the_limit(tmp_path) -> None:
    for day in ("2026-10-01", "2026-10-30", "2026-11-28"):
        LakeWriter(tmp_path, LakePolicy(pseudonym_key=KEY)).write(_records(2, day))
    dead = tmp_path / "dead_letters"
    dead.mkdir()
    old = dead / "file-0-1-2.parquet"
    pq.write_table(LakeWriter(tmp_path).read().slice(0, 1), old)
    os.utime(old, (datetime(2026, 9, 1, tzinfo=UTC).timestamp(),) * 2)
    now = datetime(2026, 11, 29, 12, tzinfo=UTC)
    planned = prune(tmp_path, timedelta(days=30), now=now, dry_run=True)
    assert {p.name for p in planned} == {"date=2026-10-01", "file-0-1-2.parquet"}
    assert (tmp_path / "verdicts" / "date=2026-10-01").exists()  # dry run
    assert prune(tmp_path, timedelta(days=30), now=now) == planned
    assert sorted(p.name for p in (tmp_path / "verdicts").iterdir()) == ["date=2026-10-30", "date=2026-11-28"]
    assert not old.exists()
    assert set(LakeWriter(tmp_path).read().column("date").to_pylist()) == {"2026-10-30", "2026-11-28"}


def test_the_shipped_pseudonym_key_is_refused_outside_dev() -> None:
    with pytest.raises(PrivacyKeyError, match="--dev"):
        check_pseudonym_key(DEFAULT_PSEUDONYM_KEY, dev=False)
    with pytest.raises(PrivacyKeyError):
        check_pseudonym_key("short", dev=False)
    check_pseudonym_key(DEFAULT_PSEUDONYM_KEY, dev=True)
    check_pseudonym_key("x" * 32, dev=False)


def test_identifiers_nested_in_metadata_are_pseudonymised_too() -> None:
    """A privacy review (2026-12-02): only top-level strings and integers under an identifier key
    were pseudonymised; a nested user object, a list of addresses, a float phone number and keys
    like remote_addr or x_forwarded_for were stored raw."""
    from pipeline.privacy import pseudonymise_log

    metadata = {
        "user": {"id": "alice-01", "email": EMAIL, "verified": True},
        "emails": [EMAIL, "bob@example.com"],
        "phone": 4155550199.0,
        "remote_addr": "198.51.100.7",
        "x_forwarded_for": "203.0.113.9, 10.0.0.1",
        "request": {"headers": {"x_user_login": "alice"}, "route": "/v1/chat"},
        "endpoint": "chat.completions",
    }
    stored = pseudonymise_log(make_log(metadata=metadata), Pseudonymizer(KEY)).metadata
    text = json.dumps(stored)
    for raw in ("alice-01", EMAIL, "bob@example.com", "4155550199", "198.51.100.7", "203.0.113.9", '"alice"'):
        assert raw not in text, raw
    assert stored["user"]["verified"] is True and stored["user"]["email"] == Pseudonymizer(KEY)(EMAIL)
    assert stored["request"]["route"] == "/v1/chat" and stored["endpoint"] == "chat.completions"  # not identifiers


def test_lake_files_are_readable_by_their_owner_only(tmp_path) -> None:
    """With `raw_text: flagged` (the default) and no encryption key, flagged rows keep their
    prompts in plain text; the files were written with the umask's mode (0644 on most hosts:
    every local account could read them; a privacy review, 2026-12-06)."""
    import stat

    old = os.umask(0o022)
    try:
        LakeWriter(tmp_path, LakePolicy(pseudonym_key=KEY)).write(_records())
        LakeWriter(tmp_path, LakePolicy(pseudonym_key=KEY)).write(_records())  # a replay rewrites the range
    finally:
        os.umask(old)
    files = list(tmp_path.rglob("*.parquet"))
    assert files and any(PROMPT in (row["log_json"] or "") for row in LakeWriter(tmp_path).read().to_pylist())
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {oct(0o600)}
