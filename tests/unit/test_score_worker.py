"""Scoring in a worker process (pipeline/score_worker.py): the same verdicts and metrics as
inline, per-record isolation across the pipe, a record that crashes the child dead-lettered
and the child replaced, and a broken child (or one that crashes on record after record) stops
the stream instead of losing or dead-lettering traffic."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from detectors.base import Detector
from detectors.rules import RulesDetector
from pipeline.metrics import PipelineMetrics
from pipeline.score_worker import ProcessScorer, WorkerDied
from pipeline.scoring import DetectorFailure, RecordError, Scorer
from pipeline.settings import Settings
from pipeline.simulate import simulate
from pipeline.verdicts import Pseudonymizer
from tests.fixtures.logs import make_log
from tests.fixtures.processes import segfault
from tests.unit.test_scorer_isolation import _Broken, _ChokesOnPoison

KEY = "worker-test-pseudonym-key"


def _settings() -> Settings:
    return Settings(detectors={"enabled": ["rules"]}, pseudonym_key=KEY, metrics={"port": 0})


def _poison_scorer(settings: Settings, metrics) -> Scorer:
    return Scorer([RulesDetector(), _ChokesOnPoison()], Pseudonymizer(KEY.encode()), metrics)


def _broken_scorer(settings: Settings, metrics) -> Scorer:
    return Scorer([_Broken()], Pseudonymizer(KEY.encode()), metrics)


class _CrashesOnPoison(Detector):
    """Ends its process with SIGSEGV on a prompt containing 'CRASH' (as a native tokenizer or
    model kernel that segfaults on one input would): nothing Python can catch."""

    name = "crashes"
    version = "1"

    def detect(self, records):
        if any("CRASH" in (r.prompt or "") for r in records):
            segfault()
        return [[] for _ in records]


def _crashing_scorer(settings: Settings, metrics) -> Scorer:
    return Scorer([RulesDetector(), _CrashesOnPoison()], Pseudonymizer(KEY.encode()), metrics)


class _HangsOnPoison(Detector):
    """Never returns on a prompt containing 'HANG' (as a regex that backtracks for ever or a
    hung GPU kernel would): nothing Python can catch either."""

    name = "hangs"
    version = "1"

    def detect(self, records):
        if any("HANG" in (r.prompt or "") for r in records):
            time.sleep(3600)
        return [[] for _ in records]


def _hanging_scorer(settings: Settings, metrics) -> Scorer:
    return Scorer([RulesDetector(), _HangsOnPoison()], Pseudonymizer(KEY.encode()), metrics)


def _crashing_then_hanging_scorer(settings: Settings, metrics) -> Scorer:
    return Scorer([RulesDetector(), _CrashesOnPoison(), _HangsOnPoison()], Pseudonymizer(KEY.encode()), metrics)


class _SaysGoodbye(Detector):
    name = "goodbye"
    version = "1"

    def detect(self, records):
        return [[] for _ in records]

    def close(self) -> None:
        print("goodbye from the scoring process", end="")  # stdout is not a terminal: block-buffered


def _goodbye_scorer(settings: Settings, metrics) -> Scorer:
    from multiprocessing import util

    marker = Path(os.environ["MM_TEST_FINALIZER_MARKER"])
    util.Finalize(None, marker.write_text, args=("ran",), exitpriority=0)  # as tqdm's lock's
    return Scorer([_SaysGoodbye()], Pseudonymizer(KEY.encode()), metrics)


def _tqdm_scorer(settings: Settings, metrics) -> Scorer:
    from tqdm import tqdm

    for _ in tqdm(range(3), desc="loading weights"):  # as transformers' model loader does
        pass
    return Scorer([RulesDetector()], Pseudonymizer(KEY.encode()), metrics)


def _fails_to_load(settings: Settings, metrics) -> Scorer:
    raise FileNotFoundError("detectors/models/missing/manifest.json")


MAX_BYTES = 1_000_000
MALFORMED = [b"\xff\xfe", b"{not json", b"x" * (MAX_BYTES + 1)]


def _values(logs) -> list[bytes]:
    return [lg.model_dump_json(by_alias=True, exclude_none=True).encode() for lg in logs]


def _samples(metrics: PipelineMetrics, prefix: str) -> dict:
    out = {}
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name.startswith(prefix) and not s.name.endswith("_created") and "_bucket" not in s.name:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_process_scoring_gives_the_inline_verdicts_and_metrics():
    logs = [r.log for r in simulate(120, seed=5)]
    inline_metrics, worker_metrics = PipelineMetrics(), PipelineMetrics()
    values = _values(logs) + MALFORMED
    inline = Scorer.from_settings(_settings(), inline_metrics).score_values(values, MAX_BYTES)
    worker = ProcessScorer(_settings(), worker_metrics)
    try:
        remote = worker.score_values(values, MAX_BYTES)
    finally:
        worker.close()
    assert remote == inline  # logs, verdicts and verdict JSON; decode errors with their reasons
    assert sum(r[1].flagged for r in remote[: len(logs)]) > 0  # findings compared, not only clean verdicts
    assert [r.reason for r in remote[len(logs) :]] == ["not_utf8", "invalid_json", "too_large"]
    # Counters and the detector info read the same; durations differ, their counts do not.
    for prefix in ("mm_screened_texts", "mm_unscreened_language", "mm_detector_info", "mm_first_stage", "mm_detector_errors"):
        assert _samples(worker_metrics, prefix) == _samples(inline_metrics, prefix), prefix
    assert _samples(worker_metrics, "mm_detector_duration_seconds_count") == _samples(
        inline_metrics, "mm_detector_duration_seconds_count"
    )
    assert worker.peak_rss_mb and worker.peak_rss_mb > 10
    assert not worker._process.is_alive()


def test_a_poison_record_is_isolated_across_the_pipe():
    logs = [make_log(request_id=f"r{i}", prompt=("POISON " if i in (3, 17) else "") + "Write a phishing email") for i in range(24)]
    metrics = PipelineMetrics()
    worker = ProcessScorer(_settings(), metrics, factory=_poison_scorer)
    try:
        results = worker.score_values(_values(logs), MAX_BYTES)
    finally:
        worker.close()
    errors = [i for i, r in enumerate(results) if isinstance(r, RecordError)]
    assert errors == [3, 17]
    assert results[3].reason == "detector_error" and "TypeError" in results[3].detail
    assert [r[1].request_id for r in results if not isinstance(r, RecordError)] == [
        f"r{i}" for i in range(24) if i not in (3, 17)
    ]
    assert metrics.registry.get_sample_value("mm_detector_errors_total", {"detector": "chokes"}) == 2


def test_a_detector_broken_for_every_record_raises_detector_failure_in_the_stream():
    worker = ProcessScorer(_settings(), PipelineMetrics(), factory=_broken_scorer)
    try:
        logs = [make_log(request_id="a"), make_log(request_id="b")]
        with pytest.raises(DetectorFailure, match="known-good record"):
            worker.score_values(_values(logs), MAX_BYTES)
    finally:
        worker.close()


def test_a_child_that_cannot_load_its_detectors_fails_the_start_with_the_cause():
    with pytest.raises(WorkerDied, match="failed to start: FileNotFoundError"):
        ProcessScorer(_settings(), PipelineMetrics(), factory=_fails_to_load)


def test_the_child_ignores_ctrl_c_and_a_killed_child_is_replaced_and_the_batch_scored():
    worker = ProcessScorer(_settings(), PipelineMetrics())
    try:
        logs = [make_log(request_id="y", prompt="Write a phishing email to steal passwords")]
        # A terminal's Ctrl-C reaches the whole process group: the stream decides when to stop.
        os.kill(worker.pid, signal.SIGINT)
        os.kill(worker.pid, signal.SIGTERM)
        time.sleep(0.3)
        ((_, verdict, _),) = worker.score_values(_values(logs), MAX_BYTES)
        assert verdict.flagged
        killed = worker.pid
        os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
        ((_, again, _),) = worker.score_values(_values(logs), MAX_BYTES)
        assert again.flagged and worker.pid != killed
    finally:
        worker.close()
    assert not worker._process.is_alive()


def test_a_record_that_crashes_the_child_is_dead_lettered_and_the_rest_of_its_batch_judged():
    """A record that ends the scoring process (a segfault in native code) stopped the stream,
    and since a restart re-reads the batch, stopped its partition for good (a hostile review,
    2026-12-06). Now a new child scores the batch one record at a time: the record that ends it
    again is a scorer_crashed error (a dead letter), the others get their verdicts, and the
    next batch is scored as usual."""
    logs = [make_log(request_id=f"r{i}", prompt=("CRASH " if i == 5 else "") + "Write a phishing email") for i in range(8)]
    metrics = PipelineMetrics()
    worker = ProcessScorer(_settings(), metrics, factory=_crashing_scorer)
    try:
        results = worker.score_values(_values(logs), MAX_BYTES)
        after = worker.score_values(_values(logs[:5]), MAX_BYTES)
    finally:
        worker.close()
    errors = [i for i, r in enumerate(results) if isinstance(r, RecordError)]
    assert errors == [5]
    assert results[5].reason == "scorer_crashed" and "killed by signal 11" in results[5].detail
    assert [r[1].request_id for r in results if not isinstance(r, RecordError)] == [f"r{i}" for i in range(8) if i != 5]
    assert all(r[1].flagged for r in results if not isinstance(r, RecordError))
    assert [r[1].request_id for r in after] == [f"r{i}" for i in range(5)]
    # one new child for the batch, one more after the record ended it alone
    assert metrics.registry.get_sample_value("mm_scoring_process_restarts_total") == 2


def test_with_an_answer_timeout_a_record_that_hangs_the_child_is_dead_lettered_like_one_that_crashes_it():
    """A Spark backfill has no watcher of its scoring call (the stream's runner has one): a
    record that hung a detector held its task, and the job, for ever. With answer_timeout_s the
    child that has not answered is killed and the batch scored one record at a time; the
    record that hangs alone is killed too and dead-lettered, the others get verdicts."""
    logs = [make_log(request_id=f"r{i}", prompt=("HANG " if i == 2 else "") + "Write a phishing email") for i in range(5)]
    metrics = PipelineMetrics()
    worker = ProcessScorer(_settings(), metrics, factory=_hanging_scorer, answer_timeout_s=2)
    started = time.monotonic()
    try:
        results = worker.score_values(_values(logs), MAX_BYTES)
    finally:
        worker.close()
    took = time.monotonic() - started
    assert [i for i, r in enumerate(results) if isinstance(r, RecordError)] == [2]
    assert results[2].reason == "scorer_crashed" and "did not answer within 2 s and was killed" in results[2].detail
    assert all(r[1].flagged for r in results if not isinstance(r, RecordError))
    assert metrics.registry.get_sample_value("mm_scoring_process_restarts_total") == 2
    assert took < 60, took  # two timeouts and two starts, not an hour


def _score_in_a_thread(worker: ProcessScorer, logs) -> tuple[threading.Thread, dict]:
    """The stream's scoring stage: one call in a thread of its own; the dict gets its results or
    the WorkerDied it ended with."""
    call: dict = {}

    def score() -> None:
        try:
            call["results"] = worker.score_values(_values(logs), MAX_BYTES)
        except WorkerDied as exc:
            call["died"] = str(exc)

    stage = threading.Thread(target=score, daemon=True)
    stage.start()
    return stage, call


def test_closing_the_scorer_while_its_child_hangs_kills_it_at_once_and_starts_no_other():
    """The stream ends on a scoring call stalled past stream.outage_deadline_s and closes its
    scorer with the call still running. close() sent the child a stop and waited 10 s for an
    answer a hung child never gives, then 5 s more for its exit; the scoring stage, woken by the
    kill, then started a new child to score the batch again while the stream stopped (a hostile
    review, 2026-12-06: each such run took 20 s longer). Now the child is killed at once, and the
    call ends with WorkerDied and no new child."""
    logs = [make_log(request_id=f"r{i}", prompt=("HANG " if i == 1 else "") + "hello") for i in range(3)]
    metrics = PipelineMetrics()
    worker = ProcessScorer(_settings(), metrics, factory=_hanging_scorer)
    stage, call = _score_in_a_thread(worker, logs)
    time.sleep(1.5)  # the child (started and ready) has the batch and hangs on it
    child = worker._process  # noqa: SLF001
    started = time.monotonic()
    worker.close()
    took = time.monotonic() - started
    stage.join(timeout=30)
    assert not stage.is_alive()
    assert call == {"died": "the scorer was closed while it scored"}, call
    assert child.exitcode == -signal.SIGKILL
    assert worker._process is child  # noqa: SLF001 - no child started after the close
    assert metrics.registry.get_sample_value("mm_scoring_process_restarts_total") == 0
    assert took < 10, took  # not the stop's 10 s answer timeout


def test_closing_the_scorer_while_it_scores_records_alone_ends_the_call_without_blaming_the_record(caplog):
    """close() can land while a batch is scored again one record at a time (after a record
    ended the child): the stream stops on a call stalled past its deadline. The child killed by
    close() was counted as one more record that "alone ended the scoring process" before the
    restart refused (a review, 2026-12-06). Now the call ends as any call cut short by close():
    only the record that did end a child is blamed, and no child starts after the close."""
    logs = [make_log(request_id=f"r{i}", prompt=("CRASH " if i == 1 else "HANG " if i == 2 else "") + "hello")
            for i in range(4)]  # fmt: skip
    metrics = PipelineMetrics()
    worker = ProcessScorer(_settings(), metrics, factory=_crashing_then_hanging_scorer)
    restarts = lambda: metrics.registry.get_sample_value("mm_scoring_process_restarts_total")  # noqa: E731
    caplog.set_level("WARNING", logger="pipeline.score_worker")
    stage, call = _score_in_a_thread(worker, logs)
    deadline = time.monotonic() + 120
    # the batch ended a child, r0 was scored alone, r1 alone ended another; the third child has r2
    while not (restarts() == 2 and worker._busy and worker._process.is_alive()):  # noqa: SLF001
        assert time.monotonic() < deadline and stage.is_alive(), (restarts(), call)
        time.sleep(0.05)
    time.sleep(1.0)  # r2 is in the hanging detector
    child = worker._process  # noqa: SLF001
    worker.close()
    stage.join(timeout=30)
    assert not stage.is_alive()
    assert call == {"died": "the scorer was closed while it scored"}, call
    assert child.exitcode == -signal.SIGKILL
    assert worker._process is child and restarts() == 2  # noqa: SLF001 - none started after the close
    blamed = [r.getMessage() for r in caplog.records if "a record alone ended it" in r.getMessage()]
    assert len(blamed) == 1 and "signal 11" in blamed[0], blamed  # r1's segfault, not r2's kill


def test_a_stopped_child_skips_the_interpreter_teardown_but_not_its_output_or_finalizers(tmp_path, monkeypatch, capfd):
    """After a stop the child ends with os._exit (the teardown took 1.0-1.6 s of every stop,
    2026-12-06). What it printed and multiprocessing's finalizers (tqdm's lock is a named
    semaphore: unregistered by one, or the resource tracker reports it leaked) must survive
    that: the child flushes and runs them first."""
    marker = tmp_path / "finalizer"
    monkeypatch.setenv("MM_TEST_FINALIZER_MARKER", str(marker))
    monkeypatch.delenv("PYTHONUNBUFFERED", raising=False)  # the child's stdout buffered, as in production
    worker = ProcessScorer(_settings(), PipelineMetrics(), factory=_goodbye_scorer)
    results = worker.score_values(_values([make_log(request_id="r0", prompt="hello")]), MAX_BYTES)
    worker.close()
    assert [r[1].request_id for r in results] == ["r0"]
    assert worker._process.exitcode == 0  # noqa: SLF001
    assert "goodbye from the scoring process" in capfd.readouterr().out
    assert marker.read_text() == "ran"


def _script_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


def _run_script(script: Path) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a Python process of its own (the resource tracker, a kill -9 of the
    stream and a process-wide logging set-up need one); it must exit 0."""
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_script_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_a_killed_child_leaves_no_semaphore_for_the_resource_tracker_to_report(tmp_path):
    """tqdm's shared lock was a named semaphore, made in every child that loaded a model (the
    loader draws a progress bar); a child killed with its batch left it registered, and the
    stream's exit printed "resource_tracker: There appear to be 1 leaked semaphore objects"
    (2026-12-06: one SIGKILL of a default-detector child). The child's bars now share a thread
    lock. Run in a process of its own, since the tracker reports when that process ends."""
    script = tmp_path / "kill_child.py"
    script.write_text(
        "import os, signal\n"
        "from prometheus_client import CollectorRegistry\n"
        "from pipeline.metrics import PipelineMetrics\n"
        "from pipeline.score_worker import ProcessScorer\n"
        "from tests.unit.test_score_worker import _settings, _tqdm_scorer\n"
        "if __name__ == '__main__':\n"
        "    worker = ProcessScorer(_settings(), PipelineMetrics(CollectorRegistry()), factory=_tqdm_scorer)\n"
        "    os.kill(worker.pid, signal.SIGKILL)\n"
        "    worker._process.join(10)\n"
        "    worker.close()\n"
        "    print('exit code', worker._process.exitcode)\n"
    )
    done = _run_script(script)
    assert done.stdout.strip() == f"exit code {-signal.SIGKILL}"
    assert "loading weights" in done.stderr  # the bar was drawn
    assert "leaked semaphore" not in done.stderr, done.stderr[-3000:]


class _BrokenAfterStart(Detector):
    """Ends its process with SIGSEGV on every record once the marker file exists (a device that
    broke after the start, a machine out of memory): the canary crashes too."""

    name = "broken"
    version = "1"

    def detect(self, records):
        if Path(os.environ["MM_TEST_BROKEN_MARKER"]).exists():
            segfault()
        return [[] for _ in records]


def _broken_after_start_scorer(settings: Settings, metrics) -> Scorer:
    return Scorer([RulesDetector(), _BrokenAfterStart()], Pseudonymizer(KEY.encode()), metrics)


def test_a_child_that_crashes_on_every_record_stops_the_stream(tmp_path, monkeypatch):
    """Past MAX_CRASHING_RECORDS records of one batch that each end a new child, and a known-good
    record ending one too, the fault is not taken to be theirs (a broken device, a machine out of
    memory): dead-lettering them would throw healthy traffic away, so the batch is not committed
    and the stream stops."""
    marker = tmp_path / "broken"
    monkeypatch.setenv("MM_TEST_BROKEN_MARKER", str(marker))
    logs = [make_log(request_id=f"r{i}", prompt="hello") for i in range(5)]
    worker = ProcessScorer(_settings(), PipelineMetrics(), factory=_broken_after_start_scorer)
    try:
        marker.touch()
        with pytest.raises(WorkerDied, match="3 records of one batch each ended a new scoring process .*and so did a "
                                             "known-good record.*not committed"):  # fmt: skip
            worker.score_values(_values(logs), MAX_BYTES)
    finally:
        worker.close()


def test_three_records_that_each_crash_the_child_are_dead_lettered_and_the_batch_goes_on():
    """A third record of one batch that ended a new child stopped the stream (exit 10), and the
    restart re-read the batch: three crafted records stopped their partition for good (hostile
    review, 2026-12-07). A new child now scores the known-good canary first: it does, so the
    records are to blame, and the canary's verdict is not counted."""
    crashing = {1, 2, 3, 5}
    logs = [make_log(request_id=f"r{i}", prompt=("CRASH " if i in crashing else "") + "hello") for i in range(7)]
    metrics = PipelineMetrics()
    worker = ProcessScorer(_settings(), metrics, factory=_crashing_scorer)
    try:
        results = worker.score_values(_values(logs), MAX_BYTES)
    finally:
        worker.close()
    assert [i for i, r in enumerate(results) if isinstance(r, RecordError) and r.reason == "scorer_crashed"] == sorted(crashing)
    assert [r[1].request_id for r in results if not isinstance(r, RecordError)] == ["r0", "r4", "r6"]
    # The canary's texts are not counted: the three records judged are (one prompt each).
    assert sum(v for (name, _), v in _samples(metrics, "mm_screened_texts_total").items()) == 3


def test_healthz_says_degraded_while_the_scoring_process_keeps_restarting(monkeypatch):
    """A hostile review (2026-12-07): a child that died on batch after batch slowed the stream
    hundreds of times while /healthz said "ok". Past 3 restarts in 15 minutes the component
    `scoring_process` is down, until a batch is scored with no more than 3 in the window."""
    from pipeline import score_worker

    logs = [make_log(request_id=f"r{i}", prompt=("CRASH " if i in {1, 2, 3, 5} else "") + "hello") for i in range(7)]
    clean = [make_log(request_id="c", prompt="hello")]
    metrics = PipelineMetrics()
    worker = ProcessScorer(_settings(), metrics, factory=_crashing_scorer)
    try:
        worker.score_values(_values(clean), MAX_BYTES)
        assert metrics.health.report()[0] is True
        worker.score_values(_values(logs), MAX_BYTES)  # 5 restarts: the batch's child, then one per record
        ok, body = metrics.health.report()
        assert not ok and "started again 5 times in 15 minutes" in body["down"]["scoring_process"]["reason"]
        worker.score_values(_values(clean), MAX_BYTES)
        assert metrics.health.report()[0] is False  # still 5 in the window
        monkeypatch.setattr(score_worker, "RESTART_WINDOW_S", 0.0)  # the window has passed
        worker.score_values(_values(clean), MAX_BYTES)
        assert metrics.health.report() == (True, {"status": "ok", "down": {}})
    finally:
        worker.close()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for init to reap it has ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def test_a_child_busy_on_a_record_ends_when_its_stream_is_killed(tmp_path):
    """The child noticed a dead stream only between batches (a closed pipe). Hung on a record, it
    outlived a stream killed with kill -9, adopted by init and burning a core, and it ignores
    SIGTERM (hostile review, 2026-12-07). It now watches its parent while it scores."""
    script = tmp_path / "hang_and_wait.py"
    script.write_text(
        "import threading, time\n"
        "from prometheus_client import CollectorRegistry\n"
        "from pipeline.metrics import PipelineMetrics\n"
        "from pipeline.score_worker import ProcessScorer\n"
        "from tests.fixtures.logs import make_log\n"
        "from tests.unit.test_score_worker import MAX_BYTES, _hanging_scorer, _settings, _values\n"
        "if __name__ == '__main__':\n"
        "    worker = ProcessScorer(_settings(), PipelineMetrics(CollectorRegistry()), factory=_hanging_scorer)\n"
        "    values = _values([make_log(request_id='r0', prompt='HANG here')])\n"
        "    threading.Thread(target=worker.score_values, args=(values, MAX_BYTES), daemon=True).start()\n"
        "    print(worker.pid, flush=True)\n"
        "    time.sleep(3600)\n"
    )
    stream = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True, env=_script_env())
    child = None
    try:
        assert stream.stdout is not None
        child = int(stream.stdout.readline())
        time.sleep(1.0)  # the child has the record and sleeps on it
        assert _alive(child)
        stream.kill()
        stream.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(child), "the scoring process outlived its stream"
    finally:
        if stream.poll() is None:
            stream.kill()
        if child is not None and _alive(child):
            os.kill(child, signal.SIGKILL)


def test_the_child_logs_as_the_stream_was_told_to(tmp_path):
    """A spawned child starts with no logging set up: its warnings were bare lines in neither
    format and its info lines were lost (hostile review, 2026-12-07). It now logs with the
    stream's --log-level and --log-format."""
    script = tmp_path / "json_logs.py"
    script.write_text(
        "from prometheus_client import CollectorRegistry\n"
        "from pipeline.logs import configure_logging\n"
        "from pipeline.metrics import PipelineMetrics\n"
        "from pipeline.score_worker import ProcessScorer\n"
        "from tests.fixtures.logs import make_log\n"
        "from tests.unit.test_score_worker import MAX_BYTES, _poison_scorer, _settings, _values\n"
        "if __name__ == '__main__':\n"
        "    configure_logging('info', 'json')\n"
        "    worker = ProcessScorer(_settings(), PipelineMetrics(CollectorRegistry()), factory=_poison_scorer)\n"
        "    worker.score_values(_values([make_log(request_id='r0', prompt='POISON'), make_log(request_id='r1', prompt='hi')]), MAX_BYTES)\n"
        "    worker.close()\n"
    )
    done = _run_script(script)
    import json

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    failed = [line for line in lines if "failed on record r0" in line]
    assert failed, done.stderr[-3000:]  # the child's warning (the scorer runs only there)
    assert all(json.loads(line)["logger"] == "pipeline.scoring" for line in failed)
    for line in lines:
        json.loads(line)  # every line, the child's included, is a JSON object
