"""A record that crashes the stream's own process while it is scored inline does not stop its
partition: the scoring journal.

Inline (``stream.scoring = "inline"``, the default) the detectors run in the stream's process, so
a native crash on one record (a segfault in a tokenizer or a model kernel, an out-of-memory kill)
ends the stream. A restart re-reads the batch that was not committed and crashes again: until
2026-12-06 such a record stopped its partition for good. (``stream.scoring = "process"`` survives
the crash inside the stream: pipeline/score_worker.py. It does not survive a record on which a
detector hangs: the run ends at ``stream.outage_deadline_s`` and a restart re-read the batch and
hung again, so the journal is kept in both modes.)

The journal is what outlives the process. Before the scoring stage scores a batch it writes the
offsets it is about to score, in one small JSON file per (group, topic, partition) in
``stream.journal_dir``, and empties the entry when scoring returns, with verdicts or with an
exception. An entry that is still there when that partition is scored again says the process
ended while scoring those offsets. Then:

1. the records at those offsets are scored one at a time, each one's offset written first;
2. a record that was being scored alone when the process ended is dead-lettered
   (``scorer_crashed``) without being scored again; the others get their verdicts;
3. past ``MAX_CRASHING_RECORDS`` such records in one range, the next one is blamed only if the
   scorer then scores the known-good canary (``canary``, as a scoring process does): the entry
   says so first, so a canary that ends the process too is found at the next start, and checked
   again; at CANARY_DEATHS_BROKEN such starts (one could be a kill meant for something else) the
   fault is not taken to be the records' (a broken device, a machine out of memory): nothing
   more is dead-lettered, the range is scored as usual, and its batch is committed only once that
   succeeds. The journal says so in an error line at each start; a fixed scorer clears it. Until
   2026-12-07 a third such record gave up whatever the canary would have done, so three crafted
   records in one batch stopped their partition for good (in a crash loop). Past
   ``MAX_JOURNAL_CRASHED`` records in one range (the entry's size), or without a canary, it gives
   up as before.

Costs: per partition and batch, one read and two writes of 512 bytes into a file kept open (no
fsync: the page cache outlives a crashed process; a crashed machine is not the record's fault).
The file stays when its entry is empty (``{}``): 512 bytes per partition this group has owned. The file is per
partition, not per member: a partition has one owner at a time, so members on one host can share
the directory, and a member that takes over a partition whose last owner crashed on it finds the
entry when the directory is shared. A member on another host without it crashes on the record
too, once, and then finds its own entry.

A run that ends while a scoring call hangs on one record (past ``stream.outage_deadline_s``)
leaves its entry too, so that record is found the same way, in three runs (checked in both
scoring modes; tests/integration/test_stream_crash_journal.py keeps the ``process`` case). A process that ends
mid-scoring for another reason (``kill -9`` from an operator, the kernel's out-of-memory killer
choosing it for memory the record did not take) looks the same: the range is then scored one record at a time once, and a record is
dead-lettered only if the process also ends while scoring it alone. Dead letters keep the
record's bytes, so such a record can be produced again.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from pipeline.logs import OncePer
from pipeline.score_worker import CLOSED, MAX_CRASHING_RECORDS, SCORER_CRASHED, WorkerDied
from pipeline.scoring import RecordError
from pipeline.settings import Settings
from pipeline.sinks.base import SourcePosition
from pipeline.source import RawRecord

log = logging.getLogger(__name__)

SLOT = 512  # bytes every entry is padded to (an entry of a few offsets; a longer one is written whole)
# Records one range may dead-letter as scorer_crashed, each after the canary scored: an entry of
# them stays within the 64 KiB read back.
MAX_JOURNAL_CRASHED = 1000
# Starts that found the process ended on the known-good canary before the scorer is taken to be
# broken (the range given up, nothing more dead-lettered).
CANARY_DEATHS_BROKEN = 2

R = TypeVar("R")
TP = tuple[str, int]


@dataclass
class _Entry:
    """What the journal knows of one partition: offsets the process ended while scoring
    (``suspect``, first and last), and those of them that ended it alone (``crashed``)."""

    suspect: tuple[int, int] | None = None
    crashed: list[int] = field(default_factory=list)
    # Starts at which the process had ended while scoring the known-good canary: at
    # CANARY_DEATHS_BROKEN the scorer, not the records, is at fault (one could be a kill meant
    # for something else: a canary of milliseconds ended by an operator's kill -9).
    canary_deaths: int = 0
    # Ended the process alone past MAX_CRASHING_RECORDS: blamed once the canary scores.
    unconfirmed: int | None = None
    # Whether a canary checks such records; without one, past MAX_CRASHING_RECORDS it gives up.
    checked: bool = False

    @property
    def broken(self) -> bool:
        return self.canary_deaths >= CANARY_DEATHS_BROKEN

    @property
    def given_up(self) -> bool:
        limit = MAX_JOURNAL_CRASHED if self.checked else MAX_CRASHING_RECORDS
        return self.broken or len(self.crashed) > limit

    def covers(self, offset: int) -> bool:
        return self.suspect is not None and self.suspect[0] <= offset <= self.suspect[1]

    def as_dict(self, **now: object) -> dict:
        flags: dict[str, object] = {"checked": True} if self.checked else {}
        if self.canary_deaths:
            flags["canary_deaths"] = self.canary_deaths
        # A record waiting for the canary is written as it was read ("alone"), so a process that
        # ends before the check (on another partition's canary) leaves it to the next start.
        pending = {"alone": self.unconfirmed} if self.unconfirmed is not None else {}
        return {"suspect": self.suspect, "crashed": self.crashed, **flags, **pending, **now}


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _spans(positions: Iterable[SourcePosition]) -> dict[TP, list[int]]:
    """Per partition, the first and last offset (a partition's records come in offset order)."""
    spans: dict[TP, list[int]] = {}
    for pos in positions:
        span = spans.get((pos.topic, pos.partition))
        if span is None:
            spans[(pos.topic, pos.partition)] = [pos.offset, pos.offset]
        else:
            span[1] = pos.offset
    return spans


def journal_dir(settings: Settings) -> Path:
    """``stream.journal_dir``, or a ``journal`` folder beside the lake."""
    return settings.stream.journal_dir or settings.lake.path.parent / "journal"


class ScoringJournal:
    def __init__(self, directory: Path, group: str) -> None:
        self._dir = directory
        self._group = quote(group, safe="")  # a file name whatever the group id holds
        self._fds: dict[TP, int] = {}
        # Each file's size: every entry is padded to it, so a shorter entry never leaves the tail of
        # a longer one after it (an entry of 35 offsets or more read back as damaged, and its
        # crashed records were forgotten: the review of the canary, 2026-12-07).
        self._sizes: dict[TP, int] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._told: set[TP] = set()  # partitions whose given-up range was logged
        self._unwritable = OncePer(60.0)

    def score(
        self,
        batch: Sequence[RawRecord],
        score: Callable[[list[bytes | None]], list[R]],
        canary: Callable[[], object] | None = None,
    ) -> list[R | RecordError]:
        """``score`` over the values of ``batch``, journalled; a record in a range the process
        ended in is scored alone, or dead-lettered if it ended the process alone (past
        MAX_CRASHING_RECORDS of them, only once ``canary()``, which scores a known-good record,
        returns)."""
        spans = _spans(raw.position for raw in batch)
        entries = {tp: self._load(tp) for tp in spans}
        for tp, entry in entries.items():
            if entry is not None and entry.unconfirmed is not None:
                self._check_with_canary(tp, entry, canary)
        if not any(entries.values()):  # as nearly always: nothing left by a process that ended
            with self._scoring(spans, entries):
                return score([raw.value for raw in batch])  # type: ignore[return-value]
        by_tp: dict[TP, list[int]] = {}
        for i, raw in enumerate(batch):
            by_tp.setdefault((raw.position.topic, raw.position.partition), []).append(i)
        results: list[R | RecordError | None] = [None] * len(batch)
        together: list[int] = []
        alone: list[int] = []
        for tp, indexes in by_tp.items():
            entry = entries[tp]
            for i in indexes:
                offset = batch[i].position.offset
                if entry is None or entry.given_up:
                    together.append(i)
                elif offset in entry.crashed:
                    results[i] = RecordError(SCORER_CRASHED, "scoring this record alone ended the stream's process "
                                                      "(a native crash or a kill); it was not scored again")
                elif entry.covers(offset):
                    alone.append(i)
                else:
                    together.append(i)
        if together:
            with self._scoring(_spans(batch[i].position for i in together), entries):
                for i, result in zip(together, score([batch[i].value for i in together]), strict=True):
                    results[i] = result
        for i in alone:
            pos = batch[i].position
            tp = (pos.topic, pos.partition)
            entry = entries[tp]
            self._save(tp, entry, alone=pos.offset)
            try:
                (results[i],) = score([batch[i].value])
            finally:
                # In offset order: what is left of the range starts after this record, so a
                # crash on a later one does not send this one through alone again.
                entry.suspect = (pos.offset + 1, entry.suspect[1])  # type: ignore[index]
                self._save(tp, entry)
        for tp, indexes in by_tp.items():
            entry = entries[tp]
            if entry is not None and batch[indexes[-1]].position.offset >= entry.suspect[1]:  # type: ignore[index]
                if not entry.given_up:
                    log.warning("scoring journal: %s-%d: the records the process ended on are scored again; "
                                "%d dead-lettered as %s", *tp, len(entry.crashed), SCORER_CRASHED)  # fmt: skip
                self._save(tp, None)  # the range is passed
        return results  # type: ignore[return-value]

    def _check_with_canary(self, tp: TP, entry: _Entry, canary: Callable[[], object] | None) -> None:
        """Blame ``entry.unconfirmed`` (a record past MAX_CRASHING_RECORDS that ended the process
        alone) only if the scorer scores the known-good canary; the entry says the canary is
        being scored first, so a canary that ends the process marks the scorer broken at the
        next start. Without a canary the range is given up, as before."""
        offset, entry.unconfirmed = entry.unconfirmed, None
        if canary is None or len(entry.crashed) >= MAX_JOURNAL_CRASHED:
            entry.crashed.append(offset)  # type: ignore[arg-type]
            self._save(tp, entry)
            self._tell_given_up(tp, entry)
            return
        self._save(tp, entry, canary=offset)
        try:
            canary()  # may end the process: the next start finds "canary" in the entry
        except WorkerDied as exc:
            if str(exc) == CLOSED:  # the stream stops for another reason: checked at the next start
                self._save(tp, entry, canary_error=offset)
            # Else a scoring process that died on the canary, as ProcessScorer counts it itself:
            # the entry still says "canary", and the next start counts it as a process that ended
            # on it (it was taken for a Python error and checked again for ever: a review, 2026-12-07).
            raise
        except Exception:
            # A Python error (a detector that raises) is not the process ending on the canary:
            # the check is left for the next start.
            self._save(tp, entry, canary_error=offset)
            raise
        entry.crashed.append(offset)  # type: ignore[arg-type]
        entry.checked = True
        self._save(tp, entry)
        log.warning("scoring journal: the known-good record scores, so %s-%d@%d is blamed: dead-lettering it as %s",
                    *tp, offset, SCORER_CRASHED)  # fmt: skip

    def _tell_given_up(self, tp: TP, entry: _Entry) -> None:
        if entry.given_up and tp not in self._told:
            self._told.add(tp)
            log.error("scoring journal: %d records of %s-%d offsets %d-%d each ended the process alone%s: not taken "
                      "to be the records' fault (a broken device or a machine out of memory?); scoring them as "
                      "usual, and nothing after them is committed until that succeeds",
                      len(entry.crashed), *tp, *entry.suspect,  # type: ignore[misc]
                      ", and so did the known-good record" if entry.broken else "")  # fmt: skip

    @contextmanager
    def _scoring(self, spans: dict[TP, list[int]], entries: dict[TP, _Entry | None]) -> Iterator[None]:
        """Around scoring records together: each partition's span is in its entry meanwhile."""
        for tp, span in spans.items():
            self._save(tp, entries[tp], scoring=span)
        try:
            yield
        finally:
            for tp in spans:
                self._save(tp, entries[tp])

    # -- the files ---------------------------------------------------------------------------------

    def _fd(self, tp: TP) -> int:
        """The partition's file, opened once and kept open (created empty: nothing known).
        Called with ``_lock`` held."""
        if self._closed:
            raise OSError(errno.EBADF, "the journal is closed")
        fd = self._fds.get(tp)
        if fd is None:
            if not self._fds:
                self._dir.mkdir(parents=True, exist_ok=True)
            fd = self._fds[tp] = os.open(self._path(tp), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            self._sizes[tp] = os.fstat(fd).st_size
        return fd

    def _path(self, tp: TP) -> Path:
        # "+" parts the names: a quoted group id has none and a topic name cannot hold one, so
        # group "a.b" with topic "c" and group "a" with topic "b.c" never share a file. Names past
        # what a file system takes (a group id and a topic may each be 249 characters and more)
        # are hashed.
        name = f"{self._group}+{tp[0]}+{tp[1]}.json"
        if len(name.encode()) > 200:
            digest = hashlib.sha256(f"{self._group}+{tp[0]}".encode()).hexdigest()[:40]
            name = f"{digest}+{tp[1]}.json"
        return self._dir / name

    def _load(self, tp: TP) -> _Entry | None:
        """The partition's entry; one left by a process that ended mid-scoring is turned into
        suspects (it was scoring a batch) or a crashed record (it was scoring one alone)."""
        try:
            with self._lock:
                raw = os.pread(self._fd(tp), 1 << 16, 0)
                # Another member on this host may have written a longer entry since this one
                # opened the file (a partition comes back): pad to that too.
                self._sizes[tp] = max(self._sizes[tp], len(raw))
            raw = raw.strip()
        except OSError:
            return None  # cannot be opened or read: the write that follows says so (once a minute)
        try:
            data = json.loads(raw) if raw else {}
            suspect = (int(data["suspect"][0]), int(data["suspect"][1])) if data.get("suspect") else None
            deaths = int(data.get("canary_deaths") or 0) or (CANARY_DEATHS_BROKEN if data.get("broken") else 0)
            entry = _Entry(suspect, [int(o) for o in data.get("crashed") or []], canary_deaths=deaths,
                           checked=bool(data.get("checked")))  # fmt: skip
            canary_error = int(data["canary_error"]) if data.get("canary_error") is not None else None
            scoring = (int(data["scoring"][0]), int(data["scoring"][1])) if data.get("scoring") else None
            alone = int(data["alone"]) if data.get("alone") is not None else None
            canary_of = int(data["canary"]) if data.get("canary") is not None else None
        except (ValueError, TypeError, LookupError, AttributeError) as exc:
            # Not an entry (a file damaged by hand, another program's): read as "nothing known", so the
            # stream scores as usual rather than stopping on its own journal. Emptied, since an entry
            # is written over the file's start: a damaged file longer than one kept its tail, stayed
            # unreadable and disabled the journal on that partition for good (hostile review, 2026-12-07).
            log.warning("scoring journal: %s unreadable (%r); ignored and emptied", self._path(tp), exc)
            with suppress(OSError), self._lock:
                os.ftruncate(self._fd(tp), 0)
                self._sizes[tp] = 0
            return None
        if scoring is not None:
            low, high = scoring
            entry.suspect = (min(low, entry.suspect[0]), max(high, entry.suspect[1])) if entry.suspect else scoring
            log.warning("scoring journal: the process ended while scoring %s-%d offsets %d-%d; "
                        "scoring them again one record at a time", *tp, low, high)  # fmt: skip
        if alone is None and canary_of is None and not (entry.checked or entry.broken) and len(entry.crashed) > MAX_CRASHING_RECORDS:
            # Given up by a release without the canary (or with none at hand): the last record is
            # checked with it now. Left given up, a partition stuck before the upgrade stayed stuck.
            entry.unconfirmed = entry.crashed.pop()
        if canary_of is not None:
            # The process ended while scoring the known-good record: the scorer is at fault once
            # that has happened CANARY_DEATHS_BROKEN times; until then the check runs again.
            entry.canary_deaths += 1
            if entry.suspect is None:
                entry.suspect = (canary_of, canary_of)
            if not entry.broken:
                entry.unconfirmed = canary_of
                log.warning("scoring journal: the process ended while scoring the known-good record for %s-%d@%d; "
                            "checking again", *tp, canary_of)  # fmt: skip
        if canary_error is not None and entry.unconfirmed is None:
            # The canary raised at the last start (a Python error, not the process ending): again.
            entry.unconfirmed = canary_error
            log.warning("scoring journal: the known-good record raised an error for %s-%d@%d at the last start; "
                        "checking again", *tp, canary_error)  # fmt: skip
        if alone is not None:
            if entry.suspect is None:  # not written that way; kept coherent anyway
                entry.suspect = (alone, alone)
            if len(entry.crashed) < MAX_CRASHING_RECORDS or entry.given_up:
                entry.crashed.append(alone)
                log.warning("scoring journal: scoring %s-%d@%d alone ended the process; dead-lettering it as %s",
                            *tp, alone, SCORER_CRASHED)  # fmt: skip
            else:
                entry.unconfirmed = alone  # blamed once the canary scores (score())
                log.warning("scoring journal: scoring %s-%d@%d alone ended the process; the %s record of this range "
                            "to do so: scoring a known-good record before blaming it", *tp, alone,
                            _ordinal(len(entry.crashed) + 1))  # fmt: skip
        if entry.suspect is None:
            return None  # nothing to act on ({} or a hand-made file)
        self._tell_given_up(tp, entry)
        if scoring is not None or alone is not None or canary_of is not None or canary_error is not None:
            self._save(tp, entry)
        return entry

    def _save(self, tp: TP, entry: _Entry | None, **now: object) -> None:
        """Write the partition's entry with what is being scored now (``{}``: nothing known)."""
        body = json.dumps(entry.as_dict(**now) if entry is not None else now).encode()
        # One pwrite of a fixed-size block: a process that ends at any instant leaves the old
        # entry or the new one, never half of one, and no rename or unlink per batch (those cost
        # about 200 us per partition and batch here; this write, a few).
        try:
            with self._lock:
                fd = self._fd(tp)
                size = self._sizes[tp] = max(SLOT, len(body), self._sizes[tp])
                os.pwrite(fd, body.ljust(size), 0)
        except OSError as exc:
            # A full disk, the folder removed under the running stream: scoring goes on without
            # the journal (a crash meanwhile would cost what it did before the journal existed)
            # rather than stopping the stream, whose sinks report their own disk trouble.
            if self._unwritable():
                log.warning("scoring journal: cannot write %s (%s); scoring goes on without it", self._path(tp), exc)

    def close(self) -> None:
        """Close the files. Under the lock, and for good: a scoring call still running in a stage
        the stream left behind at its stop must never write through a file descriptor number
        that something else opened since."""
        with self._lock:
            self._closed = True
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
