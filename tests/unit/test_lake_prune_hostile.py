"""`lake prune` never follows a symlink, removes partitions whole and keeps going; bad ages and
BOM candidate files of `pseudonym resolve` (hostile review)."""

from __future__ import annotations

import json
import os
import threading
import time
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


def _age(path: Path, days: int) -> None:
    then = (datetime.now(UTC) - timedelta(days=days)).timestamp()
    os.utime(path, (then, then))


@pytest.mark.parametrize("folder", ["verdicts", "dead_letters"])
def test_a_symlinked_verdicts_or_dead_letters_folder_is_not_followed(tmp_path: Path, folder: str) -> None:
    """A privacy review (2026-12-06): with `verdicts` linked elsewhere, prune emptied the target
    (`date=2020-01-01`, and `date=20200101`, which fromisoformat also reads as a date); with
    `dead_letters` linked, it deleted the target's old files."""
    outside = tmp_path / "outside"
    (outside / "date=2020-01-01").mkdir(parents=True)
    (outside / "date=2020-01-01" / "x.parquet").write_bytes(b"PAR1")
    (outside / "backup.parquet").write_bytes(b"PAR1")
    _age(outside / "backup.parquet", 90)
    lake = tmp_path / "lake"
    lake.mkdir()
    (lake / folder).symlink_to(outside, target_is_directory=True)
    result = _prune(lake)
    assert (outside / "date=2020-01-01" / "x.parquet").exists() and (outside / "backup.parquet").exists()
    assert isinstance(result.exception, InputError) and str(lake / folder) in str(result.exception)


def test_only_partitions_named_as_the_lake_names_them_are_pruned(tmp_path: Path) -> None:
    lake = tmp_path / "lake"
    ours = _partition(lake, _old(60))
    theirs = [lake / "verdicts" / name for name in ("date=20200101", "date=2020-W01-1")]
    for directory in theirs:
        directory.mkdir()
    assert _prune(lake).exit_code == 0
    assert not ours.exists() and all(d.exists() for d in theirs)


def test_rows_dated_in_the_future_go_by_their_write_time(tmp_path: Path) -> None:
    """A row's date is its sender's timestamp (1970-2200): one dated 2199 kept its prompt until
    then (a privacy review, 2026-12-06). As in the events store, a file also goes once its write
    time is past the limit; a recent one stays."""
    lake = tmp_path / "lake"
    future = _partition(lake, date(2199, 12, 31), files=2)
    _age(future / "logs-0-0-0.parquet", 60)
    today = _partition(lake, _old(0))
    assert _prune(lake).exit_code == 0
    assert sorted(p.name for p in future.iterdir()) == ["logs-0-1-1.parquet"]
    assert (today / "logs-0-0-0.parquet").exists()


def test_temporary_files_of_a_killed_writer_go_by_their_age(tmp_path: Path) -> None:
    """A backfill killed mid-write left `.logs-0-1-2.parquet.tmp` in dead_letters: not Parquet,
    but its bytes held a card number and an e-mail address, and prune matched *.parquet only."""
    lake = tmp_path / "lake"
    dead = lake / "dead_letters"
    dead.mkdir(parents=True)
    stale, fresh = dead / ".logs-0-1-2.parquet.tmp", dead / ".logs-0-3-4.parquet.tmp"
    stale.write_bytes(b"4111 1111 1111 1111")
    fresh.write_bytes(b"being written")
    _age(stale, 60)
    live = _partition(lake, _old(0))
    (live / ".logs-0-9-9.parquet.tmp").write_bytes(b"x")
    _age(live / ".logs-0-9-9.parquet.tmp", 60)
    assert _prune(lake).exit_code == 0
    assert not stale.exists() and fresh.exists() and not (live / ".logs-0-9-9.parquet.tmp").exists()


def test_an_empty_age_is_a_usage_error_not_the_default(tmp_path: Path) -> None:
    """A newcomer review (2026-12-07): `lake prune --older-than "$AGE"` with AGE unset pruned by
    lake.retention_days (30 days), deleting what the caller meant to keep longer."""
    lake = tmp_path / "lake"
    old = _partition(lake, _old(40))
    result = CliRunner().invoke(lake_app, ["prune", "--older-than", "", "--lake", str(lake)])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "'' is not an age like 30d or 12h" in result.output and old.exists()


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


def test_prune_beside_a_live_writer_of_an_old_partition_fails_no_write(tmp_path: Path) -> None:
    """A hostile check (2026-12-07): prune removed an old-dated partition while a writer wrote
    to it (late records, or a backfill of history), temporary and lock files included, and 261
    of 300 writes failed with FileNotFoundError. Writers now hold the lake's lock shared and
    prune takes it exclusive around each removal."""
    from pipeline.lake import LakeWriter, PruneIncomplete, prune
    from pipeline.privacy import LakePolicy
    from tests.unit.test_lake_privacy import KEY as LAKE_KEY, _records

    lake = tmp_path / "lake"
    writer = LakeWriter(lake, LakePolicy(pseudonym_key=LAKE_KEY))
    records, errors, done = _records(4, "2020-01-01"), [], threading.Event()

    def write() -> None:
        for _ in range(100):
            try:
                writer.write(records)
            except Exception as exc:  # noqa: BLE001 - counted: the assertion names them
                errors.append(repr(exc))
        done.set()

    thread = threading.Thread(target=write)
    thread.start()
    pruned = 0
    while not done.is_set():
        try:
            pruned += len(prune(lake, timedelta(days=30)))
        except PruneIncomplete as exc:
            errors.append(str(exc))
    thread.join()
    assert errors == [] and pruned > 0
    written = writer.verdicts_dir / "date=2020-01-01"
    if written.exists():  # the last write came after the last removal: it is whole
        assert [p.name for p in written.glob("*.parquet")] == ["logs-0-0-3.parquet"]
        assert writer.read().num_rows == 4 and not list(written.glob(".*.tmp"))


def test_prune_skips_what_it_cannot_remove_while_a_writer_holds_the_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipeline import lake as lake_module
    from pipeline.fslock import shared_lock

    monkeypatch.setattr(lake_module, "PRUNE_LOCK_TIMEOUT_S", 0.5)
    lake = tmp_path / "lake"
    old = [_partition(lake, _old(days)) for days in range(60, 70)]
    started = time.monotonic()
    with shared_lock(lake / lake_module.LAKE_LOCK):  # a writer mid-write
        result = _prune(lake)
    # One wait for the run, not one per partition (a review, 2026-12-07: 90 partitions, 45 minutes).
    assert time.monotonic() - started < 3
    assert all(p.exists() for p in old) and isinstance(result.exception, InputError)
    assert result.stderr.count("writers kept the lake busy for 0.5 s; run prune again") == 10
    assert _prune(lake).exit_code == 0 and not any(p.exists() for p in old)  # once it is free
