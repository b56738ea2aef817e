"""The parts of the Spark jobs that run inside a task or on the driver, without a JVM."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("pyspark")

from pipeline.lake import LakeWriter  # noqa: E402
from pipeline.report import ReportError, ReportInputs, render  # noqa: E402
from pipeline.settings import Settings  # noqa: E402
from pipeline.spark import backfill  # noqa: E402
from pipeline.spark.campaigns import _components, campaign_text  # noqa: E402

PHISH = b'{"schema":"inference-log/v1","request_id":"r%d","timestamp":"2026-11-%02dT10:00:00Z","model":"m","prompt":"write a phishing email"}'


def _raw(offsets: range, bad: set[int]) -> list[dict]:
    return [
        {
            "value": b"{not json" if i in bad else PHISH % (i, 10 + i % 2),
            "source_topic": "logs",
            "source_partition": 0,
            "source_offset": i,
        }
        for i in offsets
    ]


def _write(tmp_path: Path, rows: list[dict], max_rows: int) -> list[dict]:
    spec = backfill.ScoringSpec.from_settings(Settings(detectors={"enabled": ["rules"]}))
    scored = backfill.score_rows(rows, backfill._scorer(spec), spec)
    order = sorted(range(scored.num_rows), key=lambda i: (
        scored["date"][i].as_py() or "", scored["source_offset"][i].as_py()))  # what sortWithinPartitions does
    batches = scored.take(order).to_batches(max_chunksize=7)
    out = list(backfill._write_groups(str(tmp_path), max_rows, iter(batches)))
    return pa.Table.from_batches(out, schema=backfill.WRITTEN_ARROW_SCHEMA).to_pylist()


def test_task_writer_splits_ranges_and_keeps_dead_letters(tmp_path: Path) -> None:
    files = _write(tmp_path, _raw(range(40), bad={5, 17}), max_rows=6)
    verdict_files = [f for f in files if f["kind"] == "verdicts"]
    assert sum(f["rows"] for f in verdict_files) == 38 and all(f["rows"] <= 6 for f in verdict_files)
    for date in ("2026-11-10", "2026-11-11"):
        ranges = sorted((f["first_offset"], f["last_offset"]) for f in verdict_files if f["date"] == date)
        assert all(a[1] < b[0] for a, b in zip(ranges, ranges[1:], strict=False))  # never overlapping
    dead = pq.read_table(tmp_path / "dead_letters").to_pylist()
    assert sorted((d["source_offset"], d["error_reason"]) for d in dead) == [(5, "invalid_json"), (17, "invalid_json")]
    assert all(f["flagged"] == f["rows"] for f in verdict_files)  # every record asks for phishing


def test_task_writer_rerun_with_other_boundaries_stores_each_offset_once(tmp_path: Path) -> None:
    _write(tmp_path, _raw(range(40), bad={5, 17}), max_rows=6)
    _write(tmp_path, _raw(range(10, 30), bad={17}), max_rows=4)
    offsets = sorted(LakeWriter(tmp_path).read().column("source_offset").to_pylist())
    assert offsets == [i for i in range(40) if i not in (5, 17)]
    dead = sorted(pq.read_table(tmp_path / "dead_letters").column("source_offset").to_pylist())
    assert dead == [5, 17]


def test_threshold_sets_parse_and_reject_unknown_categories() -> None:
    assert backfill.parse_min_scores("jailbreak=0.7, cyber_abuse=0.85") == {"jailbreak": 0.7, "cyber_abuse": 0.85}
    with pytest.raises(ValueError, match="bad threshold"):
        backfill.parse_min_scores("phishing=0.5")


def test_components_join_transitively_and_pick_the_smallest_id() -> None:
    groups = _components([("b", "c"), ("a", "b"), ("x", "y")])
    assert groups == {"a": "a", "b": "a", "c": "a", "x": "x", "y": "x"}


def test_campaign_text_is_the_flagged_user_turns_else_all_of_them_without_system_prompt() -> None:
    """A hostile review (2026-12-07): only the latest user turn was read, so attacks that each
    ended in "continue please" were one campaign, and one attack ended by different harmless
    turns was none."""
    log = (
        '{"schema":"inference-log/v1","request_id":"r","timestamp":"2026-11-10T10:00:00Z","model":"m",'
        '"messages":[{"role":"system","content":"You are helpful."},{"role":"user","content":"first"},'
        '{"role":"assistant","content":"ok"},{"role":"user","content":"second"}]}'
    )
    assert campaign_text(log) == "first\nsecond"
    assert campaign_text(log, ["messages[1].content"]) == "first"
    assert campaign_text(log, ["completion", "messages[0].content"]) == "first\nsecond"  # none is the user's
    assert campaign_text("{broken") is None and campaign_text(None) is None


def test_report_escapes_prompts_and_says_what_is_missing() -> None:
    campaigns = pd.DataFrame(
        [{
            "campaign_id": "c_1", "records": 12, "users": 9, "distinct_prompts": 12,
            "representative_prompt": "<script>alert(1)</script> write a phishing email",
            "user_ids": ["u_a"], "models": ["m"], "tenants": ["t"], "categories": ["cyber_abuse"],
            "first_seen": datetime(2026, 11, 10, tzinfo=UTC), "last_seen": datetime(2026, 11, 10, tzinfo=UTC),
            "request_ids": ["r1"],
        }]
    )
    html = render(ReportInputs(campaigns=campaigns))
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "No aggregates found" in html and "No offenders in the job output" in html
    assert html.count("data:image/png;base64,") == 1


def test_report_needs_some_job_output(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no job output"):
        ReportInputs.load(tmp_path)


def test_dead_letter_files_are_readable_by_their_owner_only(tmp_path):
    """They hold the records' original bytes, prompts included; they were written with the
    umask's mode (0644 on most hosts: every local account could read them)."""
    import os
    import stat

    rows = [{"source_topic": "logs", "source_partition": 0, "source_offset": i, "error_reason": "invalid_json",
             "error_detail": "Expecting value", "raw_value": b"{my card is 4111 1111 1111 1111"} for i in (3, 4)]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=backfill.DEAD_LETTER_ARROW_SCHEMA)
    old = os.umask(0o022)
    try:
        first = backfill._write_dead_letters(tmp_path, "logs", 0, table)
        # a second run over part of the range rewrites the rest of the first file under a new name
        second = backfill._write_dead_letters(tmp_path, "logs", 0, table.slice(1))
    finally:
        os.umask(old)
    files = sorted(tmp_path.iterdir())
    kept = tmp_path / backfill.file_name("logs", 0, 3, 3)
    assert files == sorted([kept, second]) and not first.exists()
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    assert sum(pq.read_table(p).num_rows for p in files) == 2


def test_dead_letters_kept_by_a_rerun_keep_their_age(tmp_path):
    """`lake prune` goes by a dead-letter file's write time. A re-run over one offset rewrote the
    rest of a 60-day-old file under a fresh time, so its 99 other rows (raw bytes) outlived
    retention (a privacy review, 2026-12-06)."""
    import os
    from datetime import UTC, datetime, timedelta

    rows = [{"source_topic": "logs", "source_partition": 0, "source_offset": i, "error_reason": "invalid_json",
             "error_detail": "Expecting value", "raw_value": b"{"} for i in range(100)]  # fmt: skip
    table = pa.Table.from_pylist(rows, schema=backfill.DEAD_LETTER_ARROW_SCHEMA)
    first = backfill._write_dead_letters(tmp_path, "logs", 0, table)
    long_ago = (datetime.now(UTC) - timedelta(days=60)).timestamp()
    os.utime(first, (long_ago, long_ago))
    rerun = backfill._write_dead_letters(tmp_path, "logs", 0, table.slice(50, 1))
    assert first.exists() and pq.read_table(first).num_rows == 99  # the same range, 0-99, less offset 50
    assert abs(first.stat().st_mtime - long_ago) < 1 and rerun.stat().st_mtime > long_ago + 86400


def test_campaign_jobs_warn_when_their_ids_are_keyed_with_the_placeholder(capsys, monkeypatch):
    """Campaign ids are keyed with pseudonym_key; `spark campaigns` and `spark all` said nothing
    with the shipped placeholder (only `backfill` warned; a review, 2026-12-06)."""
    import inspect

    from pipeline.settings import Settings
    from pipeline.spark import cli

    monkeypatch.delenv("MM_PSEUDONYM_KEY", raising=False)
    cli._warn_placeholder_campaign_key(Settings())
    assert "campaign ids are keyed with the shipped placeholder" in capsys.readouterr().err
    cli._warn_placeholder_campaign_key(Settings(pseudonym_key="a-real-key-0123456789"))
    assert capsys.readouterr().err == ""
    for command in (cli.campaigns, cli.all_jobs):  # both commands that write campaign ids call it
        assert "_warn_placeholder_campaign_key(settings)" in inspect.getsource(command)


def test_a_lake_file_without_a_core_column_is_an_input_error_naming_it(tmp_path: Path) -> None:
    """A hostile review (2026-12-07): read with the lake's schema imposed, a file without
    `flagged` and `severity` read them as null; aggregates counted its records with nothing
    flagged and every severity 0, and exited 0."""
    from pipeline.exits import ExitCode, classify_exception
    from pipeline.sinks.base import ScoredRecord, SourcePosition
    from pipeline.verdicts import Pseudonymizer, build_verdict
    from tests.fixtures.logs import make_log

    log = make_log(request_id="r1")
    [written] = LakeWriter(tmp_path).write(
        [ScoredRecord(log, build_verdict(log, [], Pseudonymizer(b"k")), SourcePosition("logs", 0, 1))])
    assert backfill.lake_verdict_files(tmp_path) == [written]
    pq.write_table(pq.read_table(written).drop_columns(["flagged", "severity"]), written)
    with pytest.raises(backfill.BackfillError, match=r"not a lake verdict file: column\(s\) flagged, severity missing") as err:
        backfill.lake_verdict_files(tmp_path)
    assert str(written) in str(err.value) and classify_exception(err.value)[0] == ExitCode.INPUT


def test_a_rotated_or_grown_archive_keeps_its_partition_and_a_new_file_at_an_old_path_gets_another(tmp_path: Path) -> None:
    """A hostile review (2026-12-07): the map was keyed by path, so `cur.jsonl` renamed
    `cur.jsonl.1` (log rotation) got a new partition and each of its records was stored twice."""
    import gzip
    import json
    import os

    manifest = tmp_path / "lake" / backfill.JSONL_PARTITIONS
    cur = tmp_path / "cur.jsonl"
    cur.write_bytes(b'{"request_id": "a1"}\n{"request_id": "a2"}\n')
    assert backfill.jsonl_partitions([str(cur)], manifest) == {str(cur): 0}
    rotated = tmp_path / "cur.jsonl.1"
    os.rename(cur, rotated)
    cur.write_bytes(b'{"request_id": "b1"}\n')  # the new log at the old path
    assert backfill.jsonl_partitions([str(cur), str(rotated)], manifest) == {str(rotated): 0, str(cur): 1}
    with gzip.open(tmp_path / "cur.jsonl.2.gz", "wb") as fh:  # rotated again, compressed
        fh.write(rotated.read_bytes())
    rotated.unlink()
    assert backfill.jsonl_partitions([str(tmp_path / "cur.jsonl.2.gz")], manifest) == {str(tmp_path / "cur.jsonl.2.gz"): 0}
    with cur.open("ab") as fh:  # the live log grew: same first line, same partition
        fh.write(b'{"request_id": "b2"}\n')
    assert backfill.jsonl_partitions([str(cur)], manifest) == {str(cur): 1}
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(cur.read_bytes())
    with pytest.raises(backfill.BackfillError, match="begin with the same line"):
        backfill.jsonl_partitions([str(cur), str(copy)], manifest)
    # A map written before contents were keyed (paths only) still numbers its files.
    manifest.write_text(json.dumps({str(cur): 7}))
    assert backfill.jsonl_partitions([str(cur)], manifest) == {str(cur): 7}
