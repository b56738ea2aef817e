"""`pseudonym resolve` (key + candidates, audit first) and `lake prune|keygen` from the command line."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.exits import ConfigError
from pipeline.lake import LakeWriter
from pipeline.privacy import LakePolicy, TextCipher
from pipeline.privacy_cli import lake_app, pseudonym_app
from pipeline.sinks.base import ScoredRecord, SourcePosition
from pipeline.verdicts import Pseudonymizer, build_verdict
from tests.fixtures.logs import make_log

KEY = "unit-test-pseudonym-key-0123456789"


@pytest.fixture
def candidates(tmp_path: Path) -> Path:
    path = tmp_path / "accounts.txt"
    path.write_text("alice@example.com\nbob@example.com\n\ncarol@example.com\n")
    return path


def test_resolve_prints_matches_and_audits_without_raw_ids(
    tmp_path: Path, candidates: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MM_PSEUDONYM_KEY", KEY)
    pseudonymize = Pseudonymizer(KEY.encode())
    bob, stranger = pseudonymize("bob@example.com"), pseudonymize("mallory@example.com")
    audit = tmp_path / "audit" / "resolve.jsonl"
    args = ["resolve", bob, stranger, "--candidates", str(candidates), "--reason", "T&S-1234", "--audit-log", str(audit)]
    result = CliRunner().invoke(pseudonym_app, args)
    assert result.exit_code == 0, result.output
    assert f"{bob}\tbob@example.com" in result.stdout
    assert "alice" not in result.stdout and "carol" not in result.stdout
    assert f"no candidate matched: {stranger}" in result.stderr
    [line] = audit.read_text().splitlines()
    entry = json.loads(line)
    assert entry["action"] == "pseudonym.resolve" and entry["reason"] == "T&S-1234"
    assert entry["pseudonyms"] == sorted([bob, stranger]) and entry["matched"] == [bob] and entry["candidates"] == 3
    assert entry["operator"] and "example.com" not in line
    CliRunner().invoke(pseudonym_app, args)
    assert len(audit.read_text().splitlines()) == 2  # appended, never rewritten
    as_json = CliRunner().invoke(pseudonym_app, [*args, "--json"])
    assert json.loads(as_json.stdout) == {"matches": {bob: "bob@example.com"}, "unresolved": [stranger]}
    assert len(audit.read_text().splitlines()) == 3  # audited like any other resolve


def test_resolve_needs_the_real_key_and_a_pseudonym(tmp_path: Path, candidates: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MM_PSEUDONYM_KEY", raising=False)
    audit = tmp_path / "a.jsonl"
    p = Pseudonymizer(b"whatever")("bob@example.com")
    result = CliRunner().invoke(pseudonym_app, ["resolve", p, "--candidates", str(candidates), "--reason", "x", "--audit-log", str(audit)])
    assert isinstance(result.exception, ConfigError) and not audit.exists()
    monkeypatch.setenv("MM_PSEUDONYM_KEY", KEY)
    # Bad argument values are usage errors, exit 2 (a newcomer review, 2026-12-07: they were exit 4).
    result = CliRunner().invoke(pseudonym_app, ["resolve", "bob@example.com", "--candidates", str(candidates), "--reason", "x", "--audit-log", str(audit)])
    assert result.exit_code == 2 and "not a pseudonym" in result.output and not audit.exists()
    result = CliRunner().invoke(pseudonym_app, ["resolve", p, "--candidates", str(candidates), "--reason", " ", "--audit-log", str(audit)])
    assert result.exit_code == 2 and "--reason" in result.output and not audit.exists()


def test_lake_prune_by_age_and_dry_run(tmp_path: Path) -> None:
    today = datetime.now(UTC).date()
    writer = LakeWriter(tmp_path, LakePolicy(pseudonym_key=b"k" * 16))
    for off, age_days in enumerate((40, 31, 2)):
        day = today - timedelta(days=age_days)
        log = make_log(request_id=f"r{off}", timestamp=f"{day.isoformat()}T12:00:00Z")
        writer.write([ScoredRecord(log, build_verdict(log, [], Pseudonymizer(b"k")), SourcePosition("t", 0, off))])
    dry = CliRunner().invoke(lake_app, ["prune", "--older-than", "30d", "--lake", str(tmp_path), "--dry-run"])
    assert dry.exit_code == 0, dry.output
    dry_json = CliRunner().invoke(lake_app, ["prune", "--older-than", "30d", "--lake", str(tmp_path), "--dry-run", "--json"])
    doc = json.loads(dry_json.stdout)
    assert doc["dry_run"] is True and doc["older_than_s"] == 30 * 86400 and len(doc["removed"]) == 2
    assert dry.stdout.count("would delete") == 2 and len(list((tmp_path / "verdicts").iterdir())) == 3
    done = CliRunner().invoke(lake_app, ["prune", "--older-than", "30d", "--lake", str(tmp_path)])
    assert done.exit_code == 0 and done.stdout.count("deleted") == 2
    assert LakeWriter(tmp_path).read().column("request_id").to_pylist() == ["r2"]
    assert CliRunner().invoke(lake_app, ["prune", "--older-than", "30 days", "--lake", str(tmp_path)]).exit_code != 0


def test_lake_prune_on_a_mistyped_path_says_so(tmp_path: Path) -> None:
    """`lake prune --lake /nonexistent` printed "deleted 0 ..." and exited 0: a typo read as success."""
    missing = CliRunner().invoke(lake_app, ["prune", "--older-than", "30d", "--lake", str(tmp_path / "lkae")])
    assert missing.exit_code == 0 and "no lake under" in missing.stderr
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    refused = CliRunner().invoke(lake_app, ["prune", "--older-than", "30d", "--lake", str(a_file)])
    assert refused.exit_code == 2 and a_file.exists()


def test_keygen_prints_a_usable_key() -> None:
    result = CliRunner().invoke(lake_app, ["keygen"])
    key = result.stdout.strip()
    cipher = TextCipher.from_b64(key)
    assert cipher.decrypt(cipher.encrypt("text", "r1"), "r1") == "text"


def test_a_candidate_shaped_like_a_pseudonym_is_not_resolved_to_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A privacy review (2026-12-06): `resolve u_0123456789abcdef0123` with that string among the
    candidates printed it as its own raw id and audited a match. Such a raw id enters through
    the gateway as "client:<id>" (pipeline/adapters.py); that is what is resolved now."""
    monkeypatch.setenv("MM_PSEUDONYM_KEY", KEY)
    shaped = "u_0123456789abcdef0123"
    stored = Pseudonymizer(KEY.encode()).hash("client:" + shaped)
    candidates = tmp_path / "c.txt"
    candidates.write_text(f"{shaped}\n")
    audit = tmp_path / "audit.jsonl"
    result = CliRunner().invoke(pseudonym_app, ["resolve", shaped, stored, "--candidates", str(candidates),
                                                "--reason", "T-1", "--audit-log", str(audit), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"matches": {stored: shaped}, "unresolved": [shaped]}
    assert json.loads(audit.read_text())["matched"] == [stored]


def test_the_rows_a_replay_leaves_keep_their_files_write_time_so_prune_still_removes_them(tmp_path: Path) -> None:
    """A privacy review (2026-12-07): in a partition dated in the future, prune ages a file by its
    write time; a replay that trimmed the file rewrote the rows it left with a new one, so their
    kept prompts outlived the retention period."""
    import os
    import time

    from pipeline.lake import prune
    from tests.unit.test_lake_privacy import KEY as LAKE_KEY
    from tests.unit.test_lake_privacy import _records

    writer = LakeWriter(tmp_path, LakePolicy(raw_text="all", pseudonym_key=LAKE_KEY))
    writer.write(_records(4, "2099-01-01"))  # offsets 0-3, dated by a sender's clock far ahead
    [written] = (tmp_path / "verdicts").glob("date=2099-01-01/*.parquet")
    sixty_days_ago = time.time() - 60 * 86400
    os.utime(written, (sixty_days_ago, sixty_days_ago))
    writer.write(_records(4, "2099-01-01")[1:2])  # a replay of offset 1 alone
    assert len(list((tmp_path / "verdicts").glob("date=2099-01-01/*.parquet"))) == 3  # 0, 1 (new) and 2-3
    prune(tmp_path, timedelta(days=30))
    assert LakeWriter(tmp_path).read().column("source_offset").to_pylist() == [1]  # only the replayed row is new


def test_lake_prune_refuses_an_age_of_zero(tmp_path: Path) -> None:
    """A privacy review (2026-12-07): `--older-than 0d` deleted every file, seconds-old ones too;
    lake.retention_days starts at 1."""
    for age in ("0d", "0h"):
        result = CliRunner().invoke(lake_app, ["prune", "--older-than", age, "--lake", str(tmp_path)])
        assert result.exit_code == 2 and "--older-than" in result.output


def test_resolve_audit_log_is_private_and_not_a_dash(tmp_path: Path, candidates: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A privacy review (2026-12-07): the audit log (who looked up whom, and why) was created
    readable by every local user, and `--audit-log -` wrote a file named "-"."""
    monkeypatch.setenv("MM_PSEUDONYM_KEY", KEY)
    monkeypatch.chdir(tmp_path)
    bob = Pseudonymizer(KEY.encode())("bob@example.com")
    base = ["resolve", bob, "--candidates", str(candidates), "--reason", "T-1"]
    dash = CliRunner().invoke(pseudonym_app, [*base, "--audit-log", "-"])
    assert dash.exit_code == 2 and "--audit-log" in dash.output and not (tmp_path / "-").exists()
    audit = tmp_path / "audit.jsonl"
    assert CliRunner().invoke(pseudonym_app, [*base, "--audit-log", str(audit)]).exit_code == 0
    assert audit.stat().st_mode & 0o077 == 0
