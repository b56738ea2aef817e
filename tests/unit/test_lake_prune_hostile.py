"""`lake prune` never follows a symlink, removes partitions whole and keeps going; bad ages and
BOM candidate files of `pseudonym resolve` (hostile review)."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline.exits import ExitCode, InputError
from pipeline.privacy_cli import lake_app, pseudonym_app
from pipeline.verdicts import Pseudonymizer

KEY = "unit-test-pseudonym-key-0123456789"


def _partition(lake: Path, day: date, files: int = 1) -> Path:
    directory = lake / "verdicts" / f"date={day.isoformat()}"
    directory.mkdir(parents=True)
    for i in range(files):
        (directory / f"logs-0-{i}-{i}.parquet").write_bytes(b"PAR1")
    return directory


def _old(days: int) -> date:
    return datetime.now(UTC).date() - timedelta(days=days)


def _prune(lake: Path, *extra: str):  # noqa: ANN202
    return CliRunner().invoke(lake_app, ["prune", "--older-than", "30d", "--lake", str(lake), *extra])


def test_a_symlinked_partition_is_skipped_and_its_target_kept(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "important.txt").write_text("keep me")
    lake = tmp_path / "lk2"
    older = _partition(lake, _old(60))
    link = lake / "verdicts" / f"date={_old(50).isoformat()}"
    link.symlink_to(victim, target_is_directory=True)
    newer = _partition(lake, _old(40))

    result = _prune(lake)

    assert (victim / "important.txt").read_text() == "keep me"
    assert link.is_symlink()  # left for a person to look at, not silently "pruned"
    assert not older.exists() and not newer.exists()  # the partitions after it are pruned too
    assert isinstance(result.exception, InputError) and result.exception.code == ExitCode.INPUT
    assert str(link) in str(result.exception) and "symlink" in result.stderr


def test_dry_run_and_json_report_what_would_be_skipped(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    kept = _partition(lake, _old(60))
    (lake / "verdicts" / f"date={_old(50).isoformat()}").symlink_to(tmp_path, target_is_directory=True)
    result = _prune(lake, "--dry-run", "--json")
    doc = json.loads(result.stdout)
    assert doc["removed"] == [str(kept)] and list(doc["skipped"]) == [str(lake / "verdicts" / f"date={_old(50).isoformat()}")]
    assert kept.exists() and isinstance(result.exception, InputError)


def test_a_partition_with_a_subdirectory_and_links_inside_is_removed_whole(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    lake = tmp_path / "lake"
    first = _partition(lake, _old(60), files=3)
    (first / "nested").mkdir()
    (first / "nested" / "x.parquet").write_bytes(b"PAR1")
    (first / "link.parquet").symlink_to(outside)
    (first / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    second = _partition(lake, _old(45))
    young = _partition(lake, _old(2))

    result = _prune(lake)

    assert result.exit_code == 0, result.output
    assert not first.exists() and not second.exists() and young.exists()
    assert outside.read_text() == "keep me" and (tmp_path / "lake").is_dir()
    assert result.stdout.count("deleted") == 2


def test_a_partition_that_cannot_be_removed_does_not_stop_the_others(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root removes read-only directories anyway")
    lake = tmp_path / "lake"
    stuck = _partition(lake, _old(60))
    later = _partition(lake, _old(45))
    stuck.chmod(0o500)  # its files cannot be unlinked
    try:
        result = _prune(lake)
    finally:
        stuck.chmod(0o700)
    assert stuck.exists() and not later.exists()
    assert isinstance(result.exception, InputError) and str(stuck) in str(result.exception)


def test_a_symlinked_dead_letter_file_is_not_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.parquet"
    target.write_bytes(b"PAR1")
    dead = tmp_path / "lake" / "dead_letters"
    dead.mkdir(parents=True)
    link = dead / "file-0-1-2.parquet"
    link.symlink_to(target)
    long_ago = (datetime.now(UTC) - timedelta(days=90)).timestamp()
    os.utime(target, (long_ago, long_ago))
    os.utime(link, (long_ago, long_ago), follow_symlinks=False)
    result = _prune(tmp_path / "lake")
    assert target.exists() and isinstance(result.exception, InputError)


@pytest.mark.parametrize("age", ["99999999999d", "99999999999h", "999999d"])
def test_an_age_too_large_is_a_usage_error(tmp_path: Path, age: str) -> None:
    result = CliRunner().invoke(lake_app, ["prune", "--older-than", age, "--lake", str(tmp_path)])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--older-than" in result.output


def test_resolve_reads_a_candidates_file_with_a_bom_and_crlf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MM_PSEUDONYM_KEY", KEY)
    alice, bob = (Pseudonymizer(KEY.encode())(u) for u in ("alice@example.com", "bob@example.com"))
    candidates = tmp_path / "accounts.txt"
    candidates.write_bytes(b"\xef\xbb\xbfalice@example.com\r\nbob@example.com \r\n")
    args = ["resolve", alice, bob, "--candidates", str(candidates), "--reason", "T-1", "--audit-log", str(tmp_path / "a.jsonl"), "--json"]
    result = CliRunner().invoke(pseudonym_app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"matches": {alice: "alice@example.com", bob: "bob@example.com"}, "unresolved": []}
