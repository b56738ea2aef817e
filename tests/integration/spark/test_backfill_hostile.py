"""Backfill over empty JSONL archives (hostile review): zero lines are zero verdicts, and an
empty file among good ones changes nothing for them."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from typer.testing import CliRunner

from detectors.base import Detector
from pipeline.exits import ExitCode, classify_exception
from pipeline.lake import LakeWriter
from pipeline.scoring import Scorer
from pipeline.settings import Settings
from pipeline.simulate import simulate, write_jsonl
from pipeline.spark import backfill
from pipeline.spark.cli import app
from pipeline.verdicts import Pseudonymizer
from tests.fixtures.processes import segfault


def _good(path: Path, records: int, seed: int) -> Path:
    write_jsonl(simulate(records, seed=seed), path)
    return path


def _backfill(jsonl: list[Path], out: Path, *extra: str) -> dict:
    args = ["backfill", *[a for p in jsonl for a in ("--jsonl", str(p))], "--out", str(out), "--detectors", "rules", "--json", *extra]
    result = CliRunner().invoke(app, [*args, "--master", "local[2]"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_empty_jsonl_file_is_zero_verdicts(spark: SparkSession, tmp_path: Path) -> None:
    """It printed a Java stack trace (map()[_block] on a void map) and exited 1."""
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    summary = _backfill([empty], tmp_path / "lake")
    assert (summary["verdicts"], summary["dead_letters"], summary["files"]) == (0, 0, 0)


def test_an_empty_file_among_good_ones_keeps_their_numbering(spark: SparkSession, tmp_path: Path) -> None:
    first, second = _good(tmp_path / "a.jsonl", 4, seed=1), _good(tmp_path / "c.jsonl", 3, seed=2)
    empty = tmp_path / "b.jsonl"
    empty.write_bytes(b"")
    summary = _backfill([first, empty, second], tmp_path / "lake")
    assert summary["verdicts"] == 7 and summary["dead_letters"] == 0
    rows = LakeWriter(tmp_path / "lake").read().select(["source_partition", "source_offset"]).to_pylist()
    # partition = the file's index in sorted order (a, b, c): the empty b keeps index 1
    assert sorted((r["source_partition"], r["source_offset"]) for r in rows) == [
        *((0, n) for n in range(1, 5)), *((2, n) for n in range(1, 4))
    ]
    raw = backfill.read_jsonl(spark, [empty, empty]).collect()
    assert raw == []


def test_a_100_mb_jsonl_line_is_one_dead_letter_not_a_crashed_job(tmp_path: Path) -> None:
    """A hostile review (2026-12-05): one 100 MB line in a JSONL archive ended the whole backfill
    with Java's OutOfMemoryError (exit 1, nothing written) while the value was handed to the
    Python workers. The value is now cut to the record limit in the JVM first: the line is one
    `too_large` dead letter with its real size and its head, and the lines around it are scored.
    Run as the command runs (its own JVM, default memory), not in the tests' shared session.
    (Lines of a few hundred MB still exhaust the default heap in Spark's text reader itself:
    docs/spark.md.)"""
    import subprocess
    import sys

    import pyarrow.parquet as pq

    good = {"schema": "inference-log/v1", "timestamp": "2026-12-05T00:00:00Z", "model": "m", "prompt": "hello"}
    src = tmp_path / "archive.jsonl"
    with src.open("wb") as fh:
        fh.write(json.dumps({**good, "request_id": "before"}).encode() + b"\n")
        fh.write(b"x" * 100_000_000 + b"\n")
        fh.write(json.dumps({**good, "request_id": "after"}).encode() + b"\n")
    out = tmp_path / "lake"
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "spark", "backfill", "--jsonl", str(src), "--out", str(out),
                           "--detectors", "rules", "--master", "local[2]", "--json"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["verdicts"], summary["dead_letters"]) == (2, 1)
    (dead,) = pq.read_table(out / "dead_letters").to_pylist()
    assert (dead["source_offset"], dead["error_reason"]) == (2, "too_large")
    assert dead["error_detail"].startswith("100000000 bytes > limit 1048576 bytes")
    assert dead["raw_value"] == b"x" * 1_048_577
    offsets = sorted(r["source_offset"] for r in LakeWriter(out).read().select(["source_offset"]).to_pylist())
    assert offsets == [1, 3]


def test_a_python_worker_that_crashes_is_one_line_exit_10_not_an_internal_error(spark: SparkSession) -> None:
    """A detector that segfaults on one record killed the task's Python worker: the backfill
    ended with "internal error: Py4JJavaError: An error occurred while calling o228.localCheckpoint"
    and exit 1 (a probe with a throw-away crashing detector, 2026-12-06). Now it says what happened
    and where such a record is found. The crash here is a real one, in a real worker."""
    import ctypes

    import pyarrow as pa

    def crash(batches):  # pickled by value: the worker needs nothing of the test module
        for _ in batches:
            ctypes.string_at(0)  # a real SIGSEGV in this thread (tests/fixtures/processes.py: segfault)
        yield pa.RecordBatch.from_pydict({"id": pa.array([], pa.int64())})

    with pytest.raises(Exception) as caught:
        spark.range(2).mapInArrow(crash, "id long").collect()
    code, line = classify_exception(caught.value)
    assert code == ExitCode.DETECTOR_FAILED, line
    assert "Python worker exited unexpectedly" in line and "--isolate-crashes" in line and "\n" not in line
    assert spark.range(3).count() == 3  # the session is still usable


def _crashing_scorer(spec: backfill.ScoringSpec) -> Scorer:
    """The rules detector, one that segfaults on a prompt containing CRASH and one that never
    returns on HANG (module-level: the worker's scoring process imports it by name)."""
    from detectors.rules import RulesDetector
    from tests.unit.test_score_worker import _CrashesOnPoison, _HangsOnPoison

    return Scorer([RulesDetector(), _CrashesOnPoison(), _HangsOnPoison()], Pseudonymizer(spec.pseudonym_key))


def _with_crashes(path: Path, records: int, crash_at: set[int], hang_at: frozenset[int] = frozenset()) -> Path:
    logs = list(simulate(records, seed=5))
    for i in crash_at | hang_at:
        word = "HANG" if i in hang_at else "CRASH"
        log = logs[i].log.model_copy(update={"prompt": f"{word} {i}: a record that {word.lower()}s a detector"})
        logs[i] = dataclasses.replace(logs[i], log=log)
    write_jsonl(logs, path)
    return path


def _isolated_spec() -> backfill.ScoringSpec:
    spec = backfill.ScoringSpec.from_settings(Settings(), detectors=["rules"], isolate_crashes=True, score_timeout_s=3)
    return dataclasses.replace(spec, scorer_factory=_crashing_scorer, batch_size=16)


def test_with_isolate_crashes_records_that_segfault_or_hang_a_detector_are_dead_letters(spark: SparkSession, tmp_path: Path) -> None:
    """Without it the job stops at a record that crashes a detector, on every run (the test
    above), and one that hangs a detector held the job for ever. With it each worker scores in
    a child process; a child that dies with a batch, or does not answer within score_timeout_s
    and is killed, is replaced and the batch scored again one record at a time: such a record is
    a scorer_crashed dead letter with its bytes, every other record a verdict. Real segfaults
    and real hangs, in real scoring processes of real workers."""
    source = _with_crashes(tmp_path / "in.jsonl", 24, {9}, hang_at=frozenset({17}))
    lines = source.read_bytes().splitlines()
    result = backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [source]), _isolated_spec(), tmp_path / "lake")
    assert (result.verdicts, result.dead_letters) == (22, 2)
    dead = sorted(pq.read_table(tmp_path / "lake" / "dead_letters").to_pylist(), key=lambda r: r["source_offset"])
    assert [(d["source_offset"], d["error_reason"]) for d in dead] == [(10, "scorer_crashed"), (18, "scorer_crashed")]  # 1-based
    assert [d["raw_value"] for d in dead] == [lines[9], lines[17]]  # kept as they came, to be replayed
    assert "killed by signal 11" in dead[0]["error_detail"]
    assert "did not answer within 3 s and was killed" in dead[1]["error_detail"]
    offsets = sorted(r["source_offset"] for r in LakeWriter(tmp_path / "lake").read().select(["source_offset"]).to_pylist())
    assert offsets == [n for n in range(1, 25) if n not in (10, 18)]


class _CrashesOnPoisonAndTheCanary(Detector):
    """Segfaults on a prompt containing CRASH and on the known-good canary: a scorer broken for
    every record, as far as the check past MAX_CRASHING_RECORDS can tell."""

    name = "broken"
    version = "1"

    def detect(self, records):  # noqa: ANN001, ANN201
        if any("CRASH" in (r.prompt or "") or r.request_id == "mm-canary" for r in records):
            segfault()
        return [[] for _ in records]


def _broken_scorer(spec: backfill.ScoringSpec) -> Scorer:
    from detectors.rules import RulesDetector

    return Scorer([RulesDetector(), _CrashesOnPoisonAndTheCanary()], Pseudonymizer(spec.pseudonym_key))


def test_with_isolate_crashes_three_crashing_records_of_one_batch_are_dead_letters_too(spark: SparkSession, tmp_path: Path) -> None:
    """Past MAX_CRASHING_RECORDS records of one batch that each end a scoring process, a new one
    scores the known-good canary; it does, so the records are to blame and the job goes on.
    Until 2026-12-07 the third stopped the job (exit 10) on every run (hostile review)."""
    source = _with_crashes(tmp_path / "in.jsonl", 5, {1, 2, 3})
    result = backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [source]), _isolated_spec(), tmp_path / "lake")
    assert (result.verdicts, result.dead_letters) == (2, 3)
    dead = pq.read_table(tmp_path / "lake" / "dead_letters").to_pylist()
    assert sorted((d["source_offset"], d["error_reason"]) for d in dead) == [(2, "scorer_crashed"), (3, "scorer_crashed"),
                                                                           (4, "scorer_crashed")]  # fmt: skip


def test_with_isolate_crashes_a_scorer_that_crashes_on_the_canary_too_stops_the_job_in_one_line(
    spark: SparkSession, tmp_path: Path
) -> None:
    """Past MAX_CRASHING_RECORDS such records, a scoring process that also ends on the known-good
    canary is the scorer's or the machine's fault (as in the stream): the job stops, exit 10, one
    line, and writes nothing."""
    source = _with_crashes(tmp_path / "in.jsonl", 4, {1, 2, 3})
    spec = dataclasses.replace(_isolated_spec(), scorer_factory=_broken_scorer)
    with pytest.raises(Exception) as caught:
        backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [source]), spec, tmp_path / "lake")
    code, line = classify_exception(caught.value)
    assert code == ExitCode.DETECTOR_FAILED and "\n" not in line, line
    assert "3 records of one batch each ended a new scoring process" in line and "known-good record" in line, line
    assert not (tmp_path / "lake").exists() or not any((tmp_path / "lake").rglob("*.parquet"))


def test_the_command_scores_through_worker_processes_with_the_same_verdicts(spark: SparkSession, tmp_path: Path) -> None:
    source = _good(tmp_path / "in.jsonl", 12, seed=8)
    plain = _backfill([source], tmp_path / "plain")
    isolated = _backfill([source], tmp_path / "isolated", "--isolate-crashes")
    assert (isolated["verdicts"], isolated["dead_letters"]) == (12, 0)
    assert (isolated["flagged"], isolated["files"]) == (plain["flagged"], plain["files"])
    columns = ["source_offset", "flagged", "severity", "categories", "findings"]

    def rows(lake: Path) -> list[dict]:
        return sorted(LakeWriter(lake).read().select(columns).to_pylist(), key=lambda r: r["source_offset"])

    assert rows(tmp_path / "isolated") == rows(tmp_path / "plain")


def test_score_timeout_without_isolate_crashes_is_a_usage_error(tmp_path: Path) -> None:
    """Nothing bounds an inline worker's scoring: the flag alone would be silently ignored."""
    source = _good(tmp_path / "in.jsonl", 1, seed=1)
    result = CliRunner().invoke(app, ["backfill", "--jsonl", str(source), "--out", str(tmp_path / "lake"), "--score-timeout", "5"])
    assert result.exit_code == 2 and "--isolate-crashes" in result.output, result.output
    assert not (tmp_path / "lake").exists()
