"""The Spark jobs against a hostile review (2026-12-06): inputs named twice, archives added
between runs, a carriage return inside a record, output written into the lake, a record dated
2199, world-readable output, and read errors that named no file."""

from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline.exits import ExitCode, InputError, classify_exception
from pipeline.lake import LakeWriter
from pipeline.spark import aggregates, backfill, offenders
from pipeline.spark.output import refuse_inside_lake


def _record(rid: str, prompt: str = "What is the capital of France?", **fields) -> bytes:
    return json.dumps({"schema": "inference-log/v1", "request_id": rid, "timestamp": "2026-11-28T10:00:00Z",
                       "model": "m", "prompt": prompt, **fields}).encode()  # fmt: skip


def _write(path: Path, *lines: bytes) -> Path:
    path.write_bytes(b"".join(line + b"\n" for line in lines))
    return path


def _positions(frame) -> list[tuple[int, int]]:
    return sorted((r["source_partition"], r["source_offset"]) for r in frame.collect())


def test_a_file_named_twice_or_through_a_symlink_is_read_once(spark: SparkSession, tmp_path: Path) -> None:
    """It was read once per name: 600 verdicts from 300 records."""
    (tmp_path / "sub").mkdir()
    real = _write(tmp_path / "sub" / "b.jsonl", _record("r1"), _record("r2"))
    (tmp_path / "sub" / "link.jsonl").symlink_to(real)
    raw = backfill.read_jsonl(spark, [str(tmp_path / "sub" / "*.jsonl"), tmp_path / "sub" / ".." / "sub" / "b.jsonl"])
    assert _positions(raw) == [(0, 1), (0, 2)]


def test_a_carriage_return_inside_a_record_does_not_split_it(spark: SparkSession, tmp_path: Path) -> None:
    """JSON allows \\r as whitespace; Spark's text source ended lines there too: one valid record
    became 2 dead letters and every later offset moved."""
    record = _record("cr").replace(b', "model"', b',\r"model"')
    raw = backfill.read_jsonl(spark, [_write(tmp_path / "a.jsonl", record, _record("after"))])
    assert [(r["source_offset"], bytes(r["value"])) for r in raw.orderBy("source_offset").collect()] == [
        (1, record), (2, _record("after"))
    ]


def test_an_archive_added_to_a_later_backfill_keeps_every_earlier_file_at_its_partition(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Partition was the file's index in sorted order: a second run with a.jsonl added moved
    b.jsonl from partition 0 to 1 (its records stored twice) and a's range trimmed b's rows."""
    a = _write(tmp_path / "a.jsonl", _record("a1"))
    b = _write(tmp_path / "b.jsonl", _record("b1"), _record("b2"))
    manifest = tmp_path / "lake" / backfill.JSONL_PARTITIONS
    assert _positions(backfill.read_jsonl(spark, [b], manifest)) == [(0, 1), (0, 2)]
    assert _positions(backfill.read_jsonl(spark, [a, b], manifest)) == [(0, 1), (0, 2), (1, 1)]
    by_path = {k: v for k, v in json.loads(manifest.read_text()).items() if not k.startswith("first-line:")}
    assert by_path == {os.path.realpath(b): 0, os.path.realpath(a): 1}
    manifest.write_text("[1, 2]")
    with pytest.raises(backfill.BackfillError, match="not a JSONL partition map"):
        backfill.read_jsonl(spark, [a], manifest)


def test_output_inside_the_lake_or_onto_the_source_lake_is_refused(tmp_path: Path) -> None:
    """Aggregates written to <lake>/verdicts were read as 47 more verdicts; a backfill of a lake
    into itself trimmed the 142 rows whose text the lake had not kept."""
    lake = tmp_path / "lake"
    for out in (lake / "verdicts", lake / "verdicts" / "x", lake / "dead_letters"):
        with pytest.raises(InputError, match="inside the lake"):
            refuse_inside_lake([out], [lake])
    with pytest.raises(InputError, match="is the source lake"):
        refuse_inside_lake([tmp_path / "." / "lake"], [lake], source_lake=lake)
    refuse_inside_lake([tmp_path / "jobs", lake / "jobs"], [lake])  # beside the verdicts: fine
    refuse_inside_lake([tmp_path / "new-lake"], [lake], source_lake=lake)


def test_only_lake_files_under_verdicts_are_read(spark: SparkSession, history_lake: Path, tmp_path: Path) -> None:
    """A job's part-*.parquet or a foreign file under verdicts/ was counted as verdict rows."""
    lake = tmp_path / "lake"
    shutil.copytree(history_lake, lake)
    expected = backfill.read_lake_verdicts(spark, lake).count()
    day = next((lake / "verdicts").glob("date=*"))
    pq.write_table(pa.table({"flagged": [1, 2, 3]}), day / "part-00000-foreign.snappy.parquet")
    (lake / "verdicts" / "aggregates").mkdir()
    pq.write_table(pa.table({"day": ["x"]}), lake / "verdicts" / "aggregates" / "part-0.parquet")
    assert backfill.read_lake_verdicts(spark, lake).count() == expected


def test_one_record_dated_2199_does_not_empty_the_offenders_ranking(spark: SparkSession, history_lake: Path) -> None:
    verdicts = backfill.read_lake_verdicts(spark, history_lake)
    before = offenders.run(spark, verdicts, top=None).count()
    future = verdicts.where(F.col("flagged")).limit(1).withColumn(
        "timestamp", F.lit(datetime(2199, 12, 31, tzinfo=UTC)).cast("timestamp")
    ).withColumn("user_id", F.lit("attacker")).withColumn("request_id", F.lit("from-2199"))  # another record
    after = offenders.run(spark, verdicts.unionByName(future), top=None)
    assert before > 5 and after.count() == before + 1  # was 1: every other risk decayed to 0


def test_one_user_id_in_two_tenants_is_ranked_as_two_offenders(spark: SparkSession, history_lake: Path) -> None:
    """User ids are the tenant's own: "1042" of two tenants is two people under one pseudonym (the
    producer's keys and the alert engine hold it so). The ranking added their risks up (a hostile
    review, 2026-12-07)."""
    verdicts = backfill.read_lake_verdicts(spark, history_lake)
    flagged = verdicts.where(F.col("flagged")).limit(2).withColumn("user_id", F.lit("u_0123456789abcdef0123"))
    one, two = flagged.collect()
    both = flagged.withColumn("tenant_id", F.when(F.col("request_id") == one["request_id"], "acme").otherwise("globex"))
    ranked = {r["tenants"][0]: r for r in offenders.run(spark, both, top=None).collect()}
    assert sorted(ranked) == ["acme", "globex"]
    assert ranked["acme"]["records"] == ranked["globex"]["records"] == 1
    assert {r["dominant_category"] for r in ranked.values()} <= set(one["categories"]) | set(two["categories"])


def test_job_output_is_owner_only(spark: SparkSession, history_lake: Path, tmp_path: Path) -> None:
    """Campaigns keep a representative prompt; the jobs' files were 0644."""
    target = aggregates.write(aggregates.run(spark, backfill.read_lake_verdicts(spark, history_lake)), tmp_path / "out")
    files = [p for p in target.rglob("*") if p.is_file()]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {"0o600"}
    assert oct(target.stat().st_mode & 0o777) == "0o700"


def test_a_lake_file_of_the_wrong_schema_is_an_input_error_naming_it(spark: SparkSession, tmp_path: Path) -> None:
    """It ended "internal error: Py4JJavaError: An error occurred while calling o331.parquet"."""
    day = tmp_path / "lake" / "verdicts" / "date=2026-12-01"
    day.mkdir(parents=True)
    bad = day / "t-0-1-2.parquet"
    pq.write_table(pa.table({"user_id": [1, 2], "flagged": ["yes", "no"]}), bad)
    with pytest.raises(Exception) as err:  # columns missing: said before Spark reads it (2026-12-07)
        offenders.run(spark, backfill.read_lake_verdicts(spark, tmp_path / "lake")).collect()
    code, line = classify_exception(err.value)
    assert code == ExitCode.INPUT and str(bad) in line and "not a lake verdict file" in line, line
    from pipeline.lake import LAKE_SCHEMA

    columns = {f.name: pa.nulls(2, f.type) for f in LAKE_SCHEMA}
    pq.write_table(pa.table({**columns, "user_id": pa.array([1, 2])}), bad)  # every column, one of another type
    with pytest.raises(Exception) as err:
        offenders.run(spark, backfill.read_lake_verdicts(spark, tmp_path / "lake")).collect()
    code, line = classify_exception(err.value)
    assert code == ExitCode.INPUT and str(bad) in line and "user_id" in line, line
    with pytest.raises(Exception) as err:
        spark.read.json(str(tmp_path / "no-labels.jsonl")).collect()
    code, line = classify_exception(err.value)
    assert code == ExitCode.INPUT and "Path does not exist" in line and str(tmp_path / "no-labels.jsonl") in line, line


def test_the_settings_lake_as_backfill_source_and_out_is_refused_too(history_lake: Path, tmp_path: Path) -> None:
    """The source-lake check looked at --lake only: with the lake from the settings, `--out` that
    lake re-scored it into itself (a review, 2026-12-06). Refused before Spark starts."""
    import subprocess
    import sys

    lake = tmp_path / "lake"
    shutil.copytree(history_lake, lake)
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MM_")}, "MM_LAKE__PATH": str(lake)}
    result = subprocess.run([sys.executable, "-m", "pipeline.cli", "spark", "backfill", "--out", str(lake), "--overwrite",
                             "--detectors", "rules", "--master", "local[1]"], env=env, capture_output=True, text=True,
                            timeout=120, check=False)  # fmt: skip
    assert result.returncode == ExitCode.INPUT and "is the source lake" in result.stderr, result.stderr[-2000:]


def test_a_rerun_keeps_one_copy_of_an_offset_whatever_it_became(spark: SparkSession, tmp_path: Path) -> None:
    """A hostile review (2026-12-07): a task trimmed only the files of its own kind and date.
    A line fixed since the last run kept its old dead letter (raw bytes included) beside its new
    verdict; a line broken since then kept its old verdict, still counted; a line whose date
    changed was a verdict under both dates."""
    from pipeline.settings import Settings

    spec = backfill.ScoringSpec.from_settings(Settings(), detectors=["rules"])
    source, lake = tmp_path / "a.jsonl", tmp_path / "lake"

    def run(*lines: bytes) -> None:
        _write(source, *lines)
        backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [source], lake / backfill.JSONL_PARTITIONS), spec, lake)

    def stored() -> tuple[list[tuple[str, int]], list[int]]:
        verdicts = LakeWriter(lake).read()
        dead = [pq.read_table(p).column("source_offset").to_pylist() for p in sorted((lake / "dead_letters").glob("*.parquet"))]
        return (sorted(zip(verdicts.column("date").to_pylist(), verdicts.column("source_offset").to_pylist(), strict=True)),
                sorted(o for offsets in dead for o in offsets))  # fmt: skip

    first = _record("r1")
    run(first, b"{not json", _record("r3"), _record("r4"))
    assert stored() == ([("2026-11-28", 1), ("2026-11-28", 3), ("2026-11-28", 4)], [2])
    # Line 2 fixed, line 3 broken, line 4 now dated a day later; line 1 unchanged.
    run(first, _record("r2"), b"{broken", _record("r4", timestamp="2026-11-29T10:00:00Z"))
    assert stored() == ([("2026-11-28", 1), ("2026-11-28", 2), ("2026-11-29", 4)], [3])
