"""A record that crashes the stream's own process (inline scoring, the default) against the real
broker: the stream dies with SIGSEGV, is restarted as a supervisor would, finds the record through
its scoring journal (pipeline/scoring_journal.py) and dead-letters it, and every other record
reaches the lake exactly once. Until 2026-12-06 every restart crashed again on the same batch:
the partition was stopped for good."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.kafka_read import read_topic
from tests.integration.test_stream import _lake_ids, _produce, _record, _stream_env

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]

# The stream as `misuse-monitor stream` builds it, but with a detector that ends the process with
# SIGSEGV on a prompt containing CRASH (tests/unit/test_score_worker.py): a real native crash, in
# the scoring thread (tests/fixtures/processes.py: segfault).
_STREAM = """
import sys

from detectors.rules import RulesDetector
from pipeline.metrics import PipelineMetrics
from pipeline.runner import Pipeline
from pipeline.scoring import Scorer
from pipeline.settings import load_settings
from pipeline.verdicts import Pseudonymizer
from pipeline.score_worker import ProcessScorer
from tests.unit.test_score_worker import _CrashesOnPoison, _HangsOnPoison, _hanging_scorer

settings = load_settings()
metrics = PipelineMetrics()
key = settings.pseudonym_key.get_secret_value().encode()
if "process" in sys.argv[1:]:  # stream.scoring = "process", its child hangs on HANG
    scorer = ProcessScorer(settings, metrics, factory=_hanging_scorer)
else:
    poison = _HangsOnPoison() if "hang" in sys.argv[1:] else _CrashesOnPoison()
    scorer = Scorer([RulesDetector(), poison], Pseudonymizer(key), metrics)
stats = Pipeline.from_settings(settings, metrics, scorer).run(max_idle_s=4)
print("records consumed", stats.records, "dead letters", stats.dead_letters)
"""


def _run_stream(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _STREAM, *argv], env=env, cwd=REPO, capture_output=True, text=True,
                          timeout=180)  # fmt: skip


def test_a_record_that_segfaults_the_stream_is_dead_lettered_after_restarts_and_nothing_else_is_lost(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    topic = kafka_topic_factory(partitions=2)
    records = [_record(i) for i in range(60)]
    records[23]["prompt"] = "CRASH: a record that segfaults the scorer"
    _produce(kafka_bootstrap, topic, records)
    # The broker's shortest session: a restart joins once the crashed member's session has ended
    # (about 22 s of waiting per restart with the default 30 s).
    env = _stream_env(kafka_bootstrap, topic, tmp_path, "g-crash-journal", MM_BATCH__MAX_RECORDS="8",
                      MM_STREAM__JOURNAL_DIR=str(tmp_path / "journal"), MM_KAFKA__SESSION_TIMEOUT_MS="6000")  # fmt: skip
    runs = []
    for _ in range(4):  # a supervisor restarting the stream
        runs.append(_run_stream(env))
        if runs[-1].returncode == 0:
            break
    # The batch, then the record alone, end the process; the third run dead-letters it and goes on.
    assert [r.returncode for r in runs] == [-signal.SIGSEGV, -signal.SIGSEGV, 0], [r.stderr[-2000:] for r in runs]
    assert "scoring them again one record at a time" in runs[1].stderr
    assert "alone ended the process; dead-lettering it as scorer_crashed" in runs[2].stderr
    ids = _lake_ids(tmp_path)
    assert len(ids) == len(set(ids)), "duplicate verdicts in the lake"
    assert sorted(ids) == sorted(r["request_id"] for r in records if r is not records[23])
    (dead,) = read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
    assert json.loads(dead.value)["request_id"] == records[23]["request_id"]  # its original bytes
    headers = dict(dead.headers)
    assert headers["mm.error.reason"] == b"scorer_crashed"
    entries = [p.read_bytes().strip() for p in (tmp_path / "journal").iterdir()]
    assert entries and set(entries) == {b"{}"}  # the range was passed: nothing left to say


def test_a_record_that_hangs_the_scoring_process_is_dead_lettered_after_restarts_too(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    """A detector that never returns on one record: the run ends at stream.outage_deadline_s
    (the scoring call is watched, score_stall_s), as a supervisor sees a crash. The journal
    entry of the batch is still there, so the record is found the same way. With a scoring
    process there was no journal: each restart re-read the batch and hung again, for good (a
    hostile review, 2026-12-06; four runs of four, exit 1 each, on the old runner). Inline
    scoring passed the same test (argument "hang" to the script: exit 1, 1, 0) when it was
    written; it is not kept, to keep the suite's time, since both modes share the journal."""
    topic = kafka_topic_factory(partitions=1)
    records = [_record(i) for i in range(12)]
    records[5]["prompt"] = "HANG: a record on which a detector never returns"
    _produce(kafka_bootstrap, topic, records)
    env = _stream_env(kafka_bootstrap, topic, tmp_path, "g-hang-journal", MM_BATCH__MAX_RECORDS="8",
                      MM_STREAM__JOURNAL_DIR=str(tmp_path / "journal"), MM_STREAM__SCORE_STALL_S="1",
                      MM_STREAM__OUTAGE_DEADLINE_S="2")  # fmt: skip
    runs = []
    for _ in range(4):
        runs.append(_run_stream(env, "process"))
        if runs[-1].returncode == 0:
            break
    # The batch, then the record alone, hold scoring past the deadline: each run ends with the
    # OutageError (exit 1 here, where no CLI maps it; the command exits 9). The third run goes on.
    assert [r.returncode for r in runs] == [1, 1, 0], [(r.returncode, r.stderr[-1500:]) for r in runs]
    assert all("OutageError: scoring unavailable" in r.stderr for r in runs[:2]), [r.stderr[-1500:] for r in runs[:2]]
    assert "scoring them again one record at a time" in runs[1].stderr
    ids = _lake_ids(tmp_path)
    assert sorted(ids) == sorted(r["request_id"] for r in records if r is not records[5])
    (dead,) = read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
    assert json.loads(dead.value)["request_id"] == records[5]["request_id"]
    assert dict(dead.headers)["mm.error.reason"] == b"scorer_crashed"
