"""Scoring in a worker process (``stream.scoring = "process"``).

In one process every stage of the stream holds the GIL for its Python work, so the detectors and
the pipeline's own work (Kafka, sinks, commits) take turns on one core. :class:`ProcessScorer`
runs decode + detect + verdict JSON in a child process instead; the stream process keeps Kafka,
the sinks and the commits, and only parses the verdict JSON it gets back.

What crosses the pipe, per batch: the raw record values in, and per record the verdict JSON or
a :class:`RecordError` back, with the metric updates the child's scorer made
(:class:`RecordedMetrics`), replayed on the stream's own metrics, so ``mm_detector_*`` and the
language counters read the same in both modes. The child decodes the values while this process
decodes them too (the sinks need the logs): parsing a verdict back costs about 6 us per record,
pickling and unpickling a decoded log 64 us.

Failures: a record the detectors cannot judge is a RecordError as inline. A
:class:`DetectorFailure` in the child is raised again in the stream. If the child dies with a
batch (killed, out of memory, a native crash in a tokenizer or a model), a new child is started
and the batch is scored again one record at a time: a record that ends the new child on its own
is a RecordError (``scorer_crashed``, dead-lettered), and the rest of the batch gets verdicts.
Until 2026-12-06 the stream stopped instead, and since a restart re-reads the batch, one record
that crashes the scorer stopped its partition for good. Past ``MAX_CRASHING_RECORDS`` records
of one batch that each end a child, a new child must also score a known-good record (the
canary) before the next one is blamed: if the canary ends it too, the fault is not taken to be
the records' (a broken device or a machine out of memory), the batch is not committed and the
stream stops with a one-line reason, as it does for a child that cannot start. The child
ignores SIGINT and SIGTERM (the stream process decides when to stop: Ctrl-C reaches the whole
process group) and exits when the stream closes the pipe or dies (within half a second, even in
the middle of a batch).
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from multiprocessing import util as mp_util
from multiprocessing.connection import Connection
from typing import Any

from pipeline.logs import TRACEBACK, configured_logging
from pipeline.metrics import PipelineMetrics
from pipeline.schemas import MisuseVerdict
from pipeline.scoring import CANARY, DetectorFailure, RecordError, Scored, Scorer, decode_each
from pipeline.settings import Settings

log = logging.getLogger(__name__)

ScorerFactory = Callable[[Settings, Any], Scorer]

# How long the child may take to load its detectors before the stream gives up.
START_TIMEOUT_S = 600.0
# Records of one batch that may each end a new child on their own before the fault may be the
# scorer's or the machine's rather than theirs. In a scoring process, each further one is blamed
# only if the canary then scores (else the stream stops, exit 10); the inline journal gives up.
MAX_CRASHING_RECORDS = 2
# More restarts than RESTARTS_DEGRADED within RESTART_WINDOW_S: /healthz names the component
# SCORING_PROCESS as down (503 "degraded"), as the alert MisuseScoringProcessRestarting fires,
# until a batch is scored with no more than that many in the window. Each restart costs a start
# and a batch scored one record at a time, so the stream is slowed hundreds of times; /healthz
# said "ok" meanwhile (a hostile review, 2026-12-07).
RESTARTS_DEGRADED = 3
RESTART_WINDOW_S = 900.0
SCORING_PROCESS = "scoring_process"
# The dead-letter reason of a record that ended the scorer's process when scored on its own
# (here, and by the inline stream's journal: pipeline/scoring_journal.py).
SCORER_CRASHED = "scorer_crashed"
# The child's exit status once the process that started it is gone (nobody reads it but init).
EXIT_ORPHANED = 70


class WorkerDied(RuntimeError):
    """The scoring process exited or broke its pipe; the batch in flight is not committed."""


class RecordedMetrics:
    """Stands in for :class:`PipelineMetrics` in the child: every ``metric.labels(...).op(v)`` call
    is kept as ``(metric, labels, op, v)`` and sent back with the batch."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...], str, float]] = []

    def __getattr__(self, metric: str) -> _Metric:
        if metric.startswith("_"):
            raise AttributeError(metric)
        return _Metric(self.calls, metric)

    def take(self) -> list[tuple[str, tuple[str, ...], str, float]]:
        calls, self.calls = self.calls, []
        return calls


class _Metric:
    def __init__(self, calls: list, metric: str) -> None:
        self._calls, self._metric = calls, metric

    def labels(self, *labels: str) -> _Child:
        return _Child(self._calls, self._metric, tuple(str(v) for v in labels))


class _Child:
    def __init__(self, calls: list, metric: str, labels: tuple[str, ...]) -> None:
        self._calls, self._metric, self._labels = calls, metric, labels

    def inc(self, amount: float = 1) -> None:
        self._calls.append((self._metric, self._labels, "inc", amount))

    def observe(self, value: float) -> None:
        self._calls.append((self._metric, self._labels, "observe", value))

    def set(self, value: float) -> None:
        self._calls.append((self._metric, self._labels, "set", value))


def replay(metrics: PipelineMetrics, calls: Sequence[tuple[str, tuple[str, ...], str, float]]) -> None:
    for metric, labels, op, value in calls:
        getattr(getattr(metrics, metric).labels(*labels), op)(value)


def _child(
    settings: Settings, conn: Connection, factory: ScorerFactory | None, logging_config: tuple[str, str] | None, parent: int
) -> None:
    """The worker process. It ends without the interpreter's teardown once it has answered (or
    its pipe is gone): that teardown took 1.0 s after a stop for a rules child and 1.6 s for one
    of the default detectors here (2026-12-06), time every stop of the stream and every Spark
    task's scorer waited for, and nothing of the child's is left to save by then. Its
    multiprocessing finalizers run and its output is flushed first. An exception that escapes
    the loop still ends it the usual way.

    ``logging_config``: the stream's ``--log-level`` and ``--log-format``. A spawned interpreter
    starts with no logging set up, so the child's warnings came out as bare lines in neither
    format, its info lines were lost, and the libraries kept their own levels (hostile review,
    2026-12-07). ``parent``: the stream's pid, given by the stream itself; read here after the
    child's imports, a stream that died meanwhile would have left init's pid to watch."""
    _exit_with_parent(parent)
    if logging_config is not None:
        from pipeline.logs import configure_logging

        configure_logging(*logging_config)
    _serve(settings, conn, factory)
    # What multiprocessing runs after a child's target returns (its finalizers: tqdm's lock, a
    # named semaphore, is unregistered, or the resource tracker warns that it leaked), then the
    # output, then the exit.
    mp_util._exit_function()  # noqa: SLF001
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _exit_with_parent(parent: int, period_s: float = 0.5) -> None:
    """End this process once ``parent`` is gone. The child notices a closed pipe only between
    batches, so a child busy on a record (or hung on one) outlived a stream killed with
    ``kill -9``, adopted by init and still burning a core; it ignores SIGTERM (hostile review,
    2026-12-07). ``PR_SET_PDEATHSIG`` would follow the thread that started the child, and the
    stream starts new children from its scoring thread, so the parent's pid is watched instead."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(period_s)
        os._exit(EXIT_ORPHANED)

    threading.Thread(target=watch, name="mm-scorer-parent", daemon=True).start()


def _tqdm_without_a_semaphore() -> None:
    """tqdm's bars share a lock that is a multiprocessing RLock, a named semaphore registered with
    the resource tracker; transformers' model loader draws a bar, so every child of the default
    detectors made one. A child killed with its batch (a crash, a hang past its answer timeout)
    never unregisters it, and the tracker reported "1 leaked semaphore objects" when the stream
    exited (2026-12-06, on 0aa1a64 too). Bars drawn in this process need only a thread lock."""
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - transformers brings it
        return
    tqdm.set_lock(threading.RLock())


def _serve(settings: Settings, conn: Connection, factory: ScorerFactory | None) -> None:
    """The worker's loop: ("score", values) -> ("ok", results, metric calls)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from pipeline.memory import limit_malloc_arenas, peak_rss_mb, settle_gc

    limit_malloc_arenas()
    _tqdm_without_a_semaphore()
    metrics = RecordedMetrics()
    try:
        scorer = (factory or Scorer.from_settings)(settings, metrics)  # type: ignore[arg-type]
        scorer.preload(settings.stream.warm_up_records)
        settle_gc()
    except BaseException as exc:  # noqa: BLE001 - reported to the stream, which stops with it
        conn.send(("error", f"{exc!r}", traceback.format_exc()))
        return
    conn.send(("ready", metrics.take()))
    max_bytes = settings.batch.max_record_bytes
    busy_cpu_s = 0.0  # CPU spent on batches (every thread of the child), for the benchmark
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the stream closed the pipe or died
            break
        if message[0] == "stop":
            scorer.close()
            conn.send(("stopped", peak_rss_mb(), busy_cpu_s))
            break
        cpu_started = time.process_time()
        try:
            out = [
                ("e", r.reason, r.detail) if isinstance(r, RecordError) else ("v", r[2])
                for r in scorer.score_values(message[1], max_bytes)
            ]
            busy_cpu_s += time.process_time() - cpu_started
            conn.send(("ok", out, metrics.take()))
        except DetectorFailure as exc:
            conn.send(("failure", str(exc), metrics.take()))
        except BaseException as exc:  # noqa: BLE001 - reported to the stream, which stops with it
            conn.send(("error", f"{exc!r}", traceback.format_exc()))
            break
    conn.close()


CLOSED = "the scorer was closed while it scored"  # the stream stops without that call's results


class ProcessScorer:
    """The stream's scorer when ``stream.scoring = "process"``: same ``score_values`` as
    :class:`pipeline.scoring.Scorer`, the detectors run by a child process (one batch at a time)."""

    def __init__(
        self,
        settings: Settings,
        metrics: PipelineMetrics,
        factory: ScorerFactory | None = None,
        answer_timeout_s: float | None = None,
    ) -> None:
        """``factory`` (a module-level function, so the child can import it; tests) builds the
        child's scorer instead of ``Scorer.from_settings``. ``answer_timeout_s``: a child that
        has not answered a batch (or a record scored alone) within it is killed and counts as
        dead with it, so a record that hangs a detector is dead-lettered as one that crashes it
        is. None waits for ever: the stream's runner watches its scoring call itself
        (``stream.score_stall_s``); a Spark backfill has no such watcher."""
        self._metrics = metrics
        self._settings, self._factory = settings, factory
        self._answer_timeout_s = answer_timeout_s
        # The child's peak RSS and the CPU it spent on batches, reported when it stops.
        self.peak_rss_mb: float | None = None
        self.busy_cpu_s: float | None = None
        self._busy = False  # a batch (or a record alone) sent and not answered yet
        self._closed = False
        self._restarted_at: collections.deque[float] = collections.deque()  # within RESTART_WINDOW_S
        self._start()

    def _start(self) -> None:
        self._busy = False  # a new child has nothing of ours (a send that failed left it set)
        ctx = multiprocessing.get_context("spawn")  # no fork: the stream's threads and locks stay out
        self._conn, child_end = ctx.Pipe()
        self._process = ctx.Process(
            target=_child, args=(self._settings, child_end, self._factory, configured_logging(), os.getpid()),
            name="mm-scorer", daemon=True,
        )
        self._process.start()
        child_end.close()
        reply = self._receive(START_TIMEOUT_S)
        if reply[0] != "ready":
            log.error("the scoring process failed to start", extra={TRACEBACK: reply[2]})
            self._stop_child()
            raise WorkerDied(f"failed to start: {reply[1]}")
        replay(self._metrics, reply[1])
        log.info("scoring in worker process %d", self._process.pid)

    def _restart(self) -> None:
        """A new child in place of one that died (what is left of it is reaped first); none once
        the scorer is closed (the stream is stopping: a call its stop cut short is not retried)."""
        self._stop_child()
        if self._closed:
            raise WorkerDied(CLOSED)
        self._metrics.scoring_process_restarts.inc()
        if self._recent_restarts(record=True) > RESTARTS_DEGRADED:
            self._metrics.health.down(SCORING_PROCESS, f"the scoring process was started again {len(self._restarted_at)} "
                                      f"times in {RESTART_WINDOW_S / 60:g} minutes (see the stream's log)")  # fmt: skip
        self._start()

    def _recent_restarts(self, record: bool = False) -> int:
        """Restarts within RESTART_WINDOW_S (``record``: one more, now)."""
        now = time.monotonic()
        if record:
            self._restarted_at.append(now)
        while self._restarted_at and self._restarted_at[0] < now - RESTART_WINDOW_S:
            self._restarted_at.popleft()
        return len(self._restarted_at)

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def preload(self, warm_up_records: int = 0) -> None:
        """The child preloaded (and warmed up: ``stream.warm_up_records``) before it said it was ready."""

    def _ended(self) -> str:
        code = self._process.exitcode
        if code is not None and code < 0:
            return f"pid {self._process.pid} killed by signal {-code}"
        return f"pid {self._process.pid} exited with code {code}"

    def _receive(self, timeout: float | None = None) -> tuple:
        try:
            while not self._conn.poll(1.0 if timeout is None else min(1.0, timeout)):
                if not self._process.is_alive():
                    raise WorkerDied(self._ended())
                if timeout is not None:
                    timeout -= 1.0
                    if timeout <= 0:
                        raise WorkerDied("did not answer in time")
            return self._conn.recv()
        except (EOFError, OSError) as exc:
            self._process.join(timeout=5)
            raise WorkerDied(self._ended()) from exc

    def score_values(self, values: Sequence[bytes | None], max_bytes: int) -> list[Scored | RecordError]:
        """As :meth:`pipeline.scoring.Scorer.score_values`. The values go to the child first; this
        process decodes them meanwhile (the sinks need the logs), so the two overlap. A child
        that dies with the batch is replaced, and the batch scored again one record at a time."""
        if not values:
            return []
        decoded: list | None = None
        try:
            self._send(values)
            decoded = decode_each(values, max_bytes)
            results = self._results()
        except WorkerDied as exc:
            if self._closed:
                raise WorkerDied(CLOSED) from exc
            if decoded is None:
                decoded = decode_each(values, max_bytes)
            results = self._one_at_a_time(values, exc)
        out: list[Scored | RecordError] = []
        for d, r in zip(decoded, results, strict=True):
            if isinstance(d, RecordError):  # the child agrees: it decodes the same bytes the same way
                out.append(d)
            elif r[0] == "v":
                out.append((d, MisuseVerdict.model_validate_json(r[1]), r[1]))
            else:
                out.append(RecordError(r[1], r[2]))
        if self._restarted_at and self._recent_restarts() <= RESTARTS_DEGRADED:
            self._metrics.health.up(SCORING_PROCESS)
        return out

    def _send(self, values: Sequence[bytes | None]) -> None:
        self._busy = True
        try:
            self._conn.send(("score", list(values)))
        except (BrokenPipeError, OSError) as exc:
            self._process.join(timeout=5)
            raise WorkerDied(self._ended()) from exc

    def _results(self, replay_metrics: bool = True) -> list[tuple]:
        """The child's answer to the batch sent: ("v", verdict JSON) or ("e", reason, detail) per value."""
        try:
            return self._answer(replay_metrics)
        finally:
            self._busy = False

    def _answer(self, replay_metrics: bool = True) -> list[tuple]:
        if self._answer_timeout_s is None:
            reply = self._receive()
        else:
            try:
                reply = self._receive(self._answer_timeout_s)
            except WorkerDied:
                if self._process.is_alive():  # hung, not dead: no stop it could answer, so killed
                    self._process.kill()
                    self._process.join(timeout=5)
                    raise WorkerDied(f"pid {self._process.pid} did not answer within {self._answer_timeout_s:g} s "
                                     "and was killed") from None  # fmt: skip
                raise
        if reply[0] == "failure":
            replay(self._metrics, reply[2])
            raise DetectorFailure(reply[1])
        if reply[0] != "ok":
            log.error("the scoring process failed", extra={TRACEBACK: reply[2]})
            self._process.join(timeout=5)
            raise WorkerDied(f"failed: {reply[1]}")
        if replay_metrics:
            replay(self._metrics, reply[2])
        return reply[1]

    def _one_at_a_time(self, values: Sequence[bytes | None], died: WorkerDied) -> list[tuple]:
        """After a child died with ``values``: a new child scores them one by one, so that a
        record that ends it on its own is found, dead-lettered and the rest judged. A child that
        cannot start or a DetectorFailure ends it. Past MAX_CRASHING_RECORDS such records, each
        further one is blamed only if the new child then scores the known-good canary: if that
        ends it too, the fault is the scorer's or the machine's (a broken device, memory too
        short), and dead-lettering would throw healthy traffic away. Until 2026-12-07 a third
        such record ended the run whatever the canary would have done, so three crafted records
        in one batch stopped their partition for good (hostile review)."""
        log.warning("scoring process: %s; starting a new one to score the batch of %d again, one record at a time",
                    died, len(values))  # fmt: skip
        self._restart()
        results: list[tuple] = []
        crashed = 0
        for value in values:
            try:
                self._send([value])
                (result,) = self._results()
            except WorkerDied as exc:
                if self._closed:  # killed by close(), not by this record
                    raise WorkerDied(CLOSED) from exc
                crashed += 1
                self._restart()
                if crashed > MAX_CRASHING_RECORDS and not self._canary_scored():
                    raise WorkerDied(
                        f"{crashed} records of one batch each ended a new scoring process (the last: {exc}), and so "
                        "did a known-good record: not taken to be the records' fault; the batch was not committed"
                    ) from exc
                log.warning("scoring process: a record alone ended it (%s); dead-lettered as scorer_crashed", exc)
                result = ("e", SCORER_CRASHED, f"scoring this record alone ended the scoring process: {exc}")
            results.append(result)
        return results

    def score_canary(self) -> None:
        """As :meth:`pipeline.scoring.Scorer.score_canary`, in the child (WorkerDied if it dies)."""
        self._send([CANARY.model_dump_json(by_alias=True, exclude_none=True).encode()])
        self._results(replay_metrics=False)

    def _canary_scored(self) -> bool:
        """Whether the child scores the known-good canary (its metrics are not kept)."""
        try:
            self.score_canary()
        except WorkerDied as exc:
            if self._closed:
                raise WorkerDied(CLOSED) from exc
            log.error("scoring process: a known-good record alone ended it too (%s)", exc)
            return False
        return True

    def close(self) -> None:
        """Stop the child, for good. One in the middle of a batch is killed at once: it would
        answer the stop only after the batch, and one that hangs on a record never would. The
        stream closes its scorer with a call still running only when it stops without waiting
        for that call (a scoring call stalled past ``stream.outage_deadline_s``, or another
        outage's deadline), and it does not use that call's results. Before, this waited 15 s (10
        for an answer, 5 for the exit), and the scoring stage then started a new child to score
        the batch again while the stream stopped."""
        self._closed = True
        self._stop_child()

    def _stop_child(self) -> None:
        if self._process.is_alive():
            if self._busy:
                self._process.kill()
            else:
                try:
                    self._conn.send(("stop",))
                    # Between batches it answers at once; one that does not within 10 s is killed.
                    reply = self._receive(10.0)
                    if reply[0] == "stopped":
                        self.peak_rss_mb, self.busy_cpu_s = reply[1], reply[2]
                except (WorkerDied, BrokenPipeError, OSError):
                    pass
            self._process.join(timeout=5)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=5)
        self._conn.close()


def build_scorer(settings: Settings, metrics: PipelineMetrics) -> Scorer | ProcessScorer:
    """The stream's scorer for ``stream.scoring``: inline (this process) or a worker process."""
    if settings.stream.scoring == "process":
        return ProcessScorer(settings, metrics)
    return Scorer.from_settings(settings, metrics)
