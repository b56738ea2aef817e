"""The scoring journal (pipeline/scoring_journal.py): a record that crashes the stream's own
process while scored inline is found after restarts and dead-lettered, the rest of its batch
judged, and a scorer that crashes on record after record is not allowed to dead-letter traffic.

Each "run" is a fresh Python process (as a restarted stream is) that scores one batch through the
journal with a scorer that ends its process with SIGSEGV on any value containing CRASH: a real
native crash, nothing Python can catch."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.scoring_journal import ScoringJournal
from pipeline.sinks.base import SourcePosition
from pipeline.source import RawRecord

_RUN = r"""
import json, sys
from pipeline.scoring_journal import ScoringJournal
from pipeline.scoring import RecordError
from pipeline.sinks.base import SourcePosition
from pipeline.source import RawRecord
from tests.fixtures.processes import segfault

directory, spec, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
batch = [RawRecord(SourcePosition(t, p, o), None, v.encode(), (), 0) for t, p, o, v in spec]
calls = []
raising_canary = mode.endswith("+raisingcanary")
use_canary, mode = mode.endswith("canary"), mode.removesuffix("+canary").removesuffix("+raisingcanary")

def score(values):
    calls.append([v.decode() for v in values])
    if (mode == "crash" and any(b"CRASH" in v for v in values)) or mode == "broken":
        segfault()
    if mode == "raise":
        raise RuntimeError("a Python error, not a crash")
    return ["ok:" + v.decode() for v in values]

def canary():
    if raising_canary:
        raise RuntimeError("a detector raised on the known-good record")
    return score([b"canary"])

canary = canary if use_canary else None
results = ScoringJournal(__import__("pathlib").Path(directory), "group/one").score(batch, score, canary)
print(json.dumps({"calls": calls, "results": [r.reason if isinstance(r, RecordError) else r for r in results]}))
"""


def _run(journal: Path, batch: list[tuple[str, int, int, str]], mode: str = "crash") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN, str(journal), json.dumps(batch), mode],
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def _answer(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _pending(journal: Path) -> list[str]:
    """The journal's files that still say something (an empty entry is ``{}``)."""
    return [p.name for p in journal.iterdir() if p.read_bytes().strip() != b"{}"]


def _batch(values: list[str], topic: str = "logs", partition: int = 0, first: int = 0) -> list[tuple[str, int, int, str]]:
    return [(topic, partition, first + i, v) for i, v in enumerate(values)]


def test_a_record_that_crashes_the_process_is_dead_lettered_after_two_restarts_and_the_rest_judged(tmp_path):
    batch = _batch(["a", "b", "c", "d", "e CRASH", "f", "g", "h"])
    first = _run(tmp_path, batch)
    assert first.returncode == -signal.SIGSEGV  # the whole batch: nothing known yet
    second = _run(tmp_path, batch)
    assert second.returncode == -signal.SIGSEGV  # one record at a time, up to the one that crashes
    assert "ended while scoring logs-0 offsets 0-7" in second.stderr
    third = _answer(_run(tmp_path, batch))
    assert third["results"] == ["ok:a", "ok:b", "ok:c", "ok:d", "scorer_crashed", "ok:f", "ok:g", "ok:h"]
    # a-d were scored alone before e crashed the process, so they are no longer suspect: they are
    # scored together now; f, g, h alone, and e not again.
    assert third["calls"] == [["a", "b", "c", "d"], ["f"], ["g"], ["h"]]
    assert _pending(tmp_path) == []  # the range is passed: nothing left in the journal
    fourth = _answer(_run(tmp_path, _batch(["i", "j"], first=8)))
    assert fourth == {"calls": [["i", "j"]], "results": ["ok:i", "ok:j"]}


def test_records_after_the_range_are_scored_together_and_a_later_batch_clears_a_passed_range(tmp_path):
    crashed = _batch(["a", "CRASH b", "c"]) + _batch(["x", "y"], partition=1)
    assert _run(tmp_path, crashed).returncode == -signal.SIGSEGV  # every record of that batch is suspect
    assert _run(tmp_path, crashed).returncode == -signal.SIGSEGV
    again = crashed + _batch(["z"], partition=1, first=2)
    third = _answer(_run(tmp_path, again))
    assert third["results"] == ["ok:a", "scorer_crashed", "ok:c", "ok:x", "ok:y", "ok:z"]
    # a was scored alone before b crashed the process; z was not in the batch that crashed.
    assert third["calls"] == [["a", "z"], ["c"], ["x"], ["y"]]
    assert _pending(tmp_path) == []
    # A suspect range that another owner committed meanwhile: a batch past it clears it.
    assert _run(tmp_path, _batch(["CRASH"], first=10)).returncode == -signal.SIGSEGV
    assert len(_pending(tmp_path)) == 1
    later = _answer(_run(tmp_path, _batch(["k", "l"], first=20)))
    assert later == {"calls": [["k", "l"]], "results": ["ok:k", "ok:l"]}
    assert _pending(tmp_path) == []


def test_a_scorer_that_crashes_on_record_after_record_is_not_allowed_to_dead_letter_them(tmp_path):
    """Three records of one range each ending the process alone: a broken device, not bad
    records. From then on the range is scored as usual (it crashes, nothing more is dead-lettered);
    once the scorer is fixed, every record gets its verdict and the journal clears."""
    batch = _batch(["CRASH a", "CRASH b", "CRASH c", "d"])
    runs = [_run(tmp_path, batch) for _ in range(5)]
    assert [r.returncode for r in runs] == [-signal.SIGSEGV] * 5
    assert "not taken to be the records' fault" in runs[4].stderr
    assert "not taken" not in runs[3].stderr
    fixed = _answer(_run(tmp_path, batch, mode="fixed"))
    assert fixed == {"calls": [["CRASH a", "CRASH b", "CRASH c", "d"]], "results": ["ok:CRASH a", "ok:CRASH b", "ok:CRASH c", "ok:d"]}
    assert _pending(tmp_path) == []


def test_with_a_canary_three_records_that_each_crash_the_process_are_dead_lettered_and_the_batch_goes_on(tmp_path):
    """A hostile review (2026-12-07): inline, three crafted records in one batch gave the range up,
    and the stream then crashed on it at every start: the partition stopped for good. Past two, a
    record is now blamed once the known-good canary scores (as a scoring process does)."""
    batch = _batch(["CRASH a", "CRASH b", "CRASH c", "d"])
    runs = [_run(tmp_path, batch, mode="crash+canary") for _ in range(4)]
    assert [r.returncode for r in runs] == [-signal.SIGSEGV] * 4  # the batch, then a, b and c alone
    fifth = _answer(_run(tmp_path, batch, mode="crash+canary"))
    assert fifth == {"calls": [["canary"], ["d"]], "results": ["scorer_crashed"] * 3 + ["ok:d"]}
    assert _pending(tmp_path) == []


def test_with_a_canary_that_crashes_too_the_range_is_given_up_not_dead_lettered(tmp_path):
    """A scorer broken for every record (a device gone): the canary ends the process too, twice
    (once could be a kill meant for something else), so the third record is not blamed; the range
    is scored as usual from then on, and a fixed scorer judges every record."""
    batch = _batch(["CRASH a", "CRASH b", "CRASH c", "d"])
    runs = [_run(tmp_path, batch, mode="broken+canary") for _ in range(7)]
    assert [r.returncode for r in runs] == [-signal.SIGSEGV] * 7
    assert "scoring a known-good record before blaming it" in runs[4].stderr  # the canary ended it
    assert "ended while scoring the known-good record" in runs[5].stderr and "checking again" in runs[5].stderr
    assert "and so did the known-good record" in runs[6].stderr and "not taken to be the records' fault" in runs[6].stderr
    fixed = _answer(_run(tmp_path, batch, mode="fixed+canary"))
    assert fixed["results"] == ["ok:CRASH a", "ok:CRASH b", "ok:CRASH c", "ok:d"] and _pending(tmp_path) == []


def test_a_canary_that_raises_leaves_the_check_for_the_next_start(tmp_path):
    """The review of the canary (2026-12-07): a Python error from the canary (a detector raising,
    a scoring process stopped for another reason) was read at the next start as the canary ending
    the process, and the scorer was taken to be broken for good: a crash loop again."""
    batch = _batch(["CRASH a", "CRASH b", "CRASH c", "d"])
    assert [_run(tmp_path, batch, mode="crash+canary").returncode for _ in range(4)] == [-signal.SIGSEGV] * 4
    raised = [_run(tmp_path, batch, mode="crash+raisingcanary") for _ in range(2)]
    assert [r.returncode for r in raised] == [1, 1] and "a detector raised on the known-good record" in raised[0].stderr
    assert "raised an error" in raised[1].stderr and "alone ended the process" not in raised[1].stderr  # told as it was
    after = _answer(_run(tmp_path, batch, mode="crash+canary"))
    assert after["results"] == ["scorer_crashed"] * 3 + ["ok:d"] and _pending(tmp_path) == []


def test_a_range_given_up_by_the_release_before_the_canary_is_checked_with_it(tmp_path):
    """The review of the canary (2026-12-07): an entry the previous release gave up (3 crashed
    offsets, no canary then) stayed given up, so the partitions it was meant to free stayed in
    their crash loop after the upgrade."""
    (tmp_path / "group%2Fone+logs+0.json").write_text(json.dumps({"suspect": [0, 3], "crashed": [0, 1, 2]}).ljust(512))
    after = _answer(_run(tmp_path, _batch(["CRASH a", "CRASH b", "CRASH c", "d"]), mode="crash+canary"))
    assert after == {"calls": [["canary"], ["d"]], "results": ["scorer_crashed"] * 3 + ["ok:d"]}


def test_an_entry_longer_than_a_slot_then_a_shorter_one_reads_back_whole(tmp_path, caplog):
    """The review of the canary (2026-12-07): an entry is written over the file's start; one of
    35 ten-digit offsets or more outgrew the 512-byte slot, and the next, shorter one left its
    tail behind: read as damaged, emptied, and every crashed record of the range forgotten."""
    from pipeline.scoring_journal import _Entry

    base = 10**10
    journal = ScoringJournal(tmp_path, "group/one")
    entry = _Entry(suspect=(base, base + 100), crashed=[base + i for i in range(40)], checked=True)
    journal._save(("logs", 0), entry, scoring=[base, base + 100])
    journal._save(("logs", 0), entry, alone=base + 41)  # shorter: the process ends on this record
    journal.close()
    with caplog.at_level("WARNING", logger="pipeline.scoring_journal"):
        loaded = ScoringJournal(tmp_path, "group/one")._load(("logs", 0))  # the next start
    assert "unreadable" not in caplog.text
    assert loaded is not None and loaded.crashed == [base + i for i in range(40)]
    assert loaded.unconfirmed == base + 41  # blamed once the canary scores


def test_one_kill_during_the_canary_is_checked_again_not_taken_for_a_broken_scorer(tmp_path):
    """The review of the canary (2026-12-07): one kill -9 (or an out-of-memory kill meant for
    something else) during the canary marked the scorer broken for good, so the crafted records
    were never dead-lettered. One such end is now checked again at the next start."""
    entry = {"suspect": [2, 3], "crashed": [0, 1], "canary": 2}  # the process ended on the canary once
    (tmp_path / "group%2Fone+logs+0.json").write_text(json.dumps(entry).ljust(512))
    after = _answer(_run(tmp_path, _batch(["CRASH a", "CRASH b", "CRASH c", "d"]), mode="crash+canary"))
    assert after == {"calls": [["canary"], ["d"]], "results": ["scorer_crashed"] * 3 + ["ok:d"]}


def test_a_longer_entry_another_member_wrote_is_not_left_with_a_tail(tmp_path, caplog):
    """Members on one host share the directory; one that opened a partition's file before another
    wrote a longer entry to it padded its own to the size it had seen, leaving the other's tail."""
    from pipeline.scoring_journal import _Entry

    base, tp = 10**10, ("logs", 0)
    first, second = ScoringJournal(tmp_path, "group/one"), ScoringJournal(tmp_path, "group/one")
    first._save(tp, None)  # opened at 512 bytes
    # The partition's owner meanwhile, with a long entry (a note of what it scored, beside the record it ended on).
    second._save(tp, _Entry(suspect=(base, base + 100), crashed=[base + i for i in range(40)], checked=True),
                 alone=base + 41, note="x" * 200)  # fmt: skip
    loaded = first._load(tp)  # the partition comes back: its pending record is kept, a shorter entry
    assert loaded is not None and loaded.unconfirmed == base + 41
    with caplog.at_level("WARNING", logger="pipeline.scoring_journal"):
        again = ScoringJournal(tmp_path, "group/one")._load(tp)
    assert "unreadable" not in caplog.text and again is not None and len(again.crashed) == 40


def test_a_python_error_while_scoring_leaves_nothing_in_the_journal(tmp_path):
    done = _run(tmp_path, _batch(["a", "b"]), mode="raise")
    assert done.returncode == 1 and "a Python error, not a crash" in done.stderr
    assert _pending(tmp_path) == []
    assert _answer(_run(tmp_path, _batch(["a", "b"]))) == {"calls": [["a", "b"]], "results": ["ok:a", "ok:b"]}


@pytest.mark.parametrize("damaged", [b'{"suspect": [0, ', b'{"suspect": "x"}', b"[1, 2]", b'{"alone": []}', b'{"crashed": [0]}'])
def test_a_damaged_journal_file_is_ignored(tmp_path, damaged):
    journal = ScoringJournal(tmp_path, "g")
    (tmp_path / "g+logs+0.json").write_bytes(damaged)
    batch = [RawRecord(SourcePosition("logs", 0, 0), None, b"a", (), 0)]
    assert journal.score(batch, lambda values: [v.decode() for v in values]) == ["a"]
    assert _pending(tmp_path) == []


def test_a_damaged_journal_file_longer_than_an_entry_is_cleared_and_the_journal_works_again(tmp_path):
    """An entry is one 512-byte block written over the file's start. A damaged file longer than
    that kept its tail after each write, so it stayed unreadable, and a record that crashed the
    process was never found again on that partition (hostile review, 2026-12-07)."""
    (tmp_path / "group%2Fone+logs+0.json").write_bytes(b'{"suspect": null}' + b" " * 600 + b"tail")
    assert _answer(_run(tmp_path, _batch(["a", "b"])))["results"] == ["ok:a", "ok:b"]
    assert _pending(tmp_path) == []
    batch = _batch(["c", "d CRASH"], first=2)
    assert _run(tmp_path, batch).returncode == -signal.SIGSEGV
    assert "ended while scoring logs-0 offsets 2-3" in _run(tmp_path, batch).stderr  # found again
    assert _answer(_run(tmp_path, batch))["results"] == ["ok:c", "scorer_crashed"]


def test_a_group_id_with_a_slash_names_one_file_inside_the_directory(tmp_path):
    batch = _batch(["CRASH"])
    assert _run(tmp_path, batch).returncode == -signal.SIGSEGV
    assert [p.name for p in tmp_path.iterdir()] == ["group%2Fone+logs+0.json"]
    assert _pending(tmp_path) == ["group%2Fone+logs+0.json"]


def test_groups_and_topics_with_dots_or_long_names_never_share_a_file(tmp_path):
    """Group "a.b" on topic "c" and group "a" on topic "b.c" once had the same file; a group id and
    a topic of 249 characters each made a name no file system takes (the journal then wrote nothing)."""
    long_group, long_topic = "g" * 249, "t" * 249
    paths = {ScoringJournal(tmp_path, group)._path((topic, 0)) for group, topic in
             [("a.b", "c"), ("a", "b.c"), (long_group, long_topic), (long_group, long_topic[:-1] + "u")]}
    assert len(paths) == 4 and all(len(p.name.encode()) <= 200 for p in paths)
    journal = ScoringJournal(tmp_path, long_group)
    batch = [RawRecord(SourcePosition(long_topic, 0, 0), None, b"a", (), 0)]
    journal._save((long_topic, 0), None, scoring=[0, 0])  # as before a batch is scored
    assert len(_pending(tmp_path)) == 1
    assert journal.score(batch, lambda values: [v.decode() for v in values]) == ["a"]


def test_a_journal_that_cannot_be_written_does_not_stop_scoring(tmp_path, caplog):
    """The folder removed under a running stream (or a full disk): scoring goes on, with a warning."""
    (tmp_path / "gone").write_text("")  # a file where the folder should be: every open fails
    journal = ScoringJournal(tmp_path / "gone", "g")
    batch = [RawRecord(SourcePosition("logs", 0, i), None, b"a", (), 0) for i in range(2)]
    assert journal.score(batch, lambda values: [v.decode() for v in values]) == ["a", "a"]
    assert journal.score(batch, lambda values: [v.decode() for v in values]) == ["a", "a"]
    assert caplog.text.count("cannot write") == 1  # once a minute, not per batch
    assert "unreadable" not in caplog.text


def test_a_closed_journal_touches_no_file_again(tmp_path, caplog):
    """Closed at the stream's stop while a scoring call may still run in a stage left behind:
    that call scores without the journal and writes nothing (before, it opened the file again;
    and between looking a descriptor up and writing through it, a close could hand its number
    to another file: the lock closes that window)."""
    journal = ScoringJournal(tmp_path, "g")
    batch = [RawRecord(SourcePosition("logs", 0, 0), None, b"a", (), 0)]
    assert journal.score(batch, lambda values: [v.decode() for v in values]) == ["a"]
    journal.close()
    (tmp_path / "g+logs+0.json").write_bytes(b"{}  sentinel")
    assert journal.score(batch, lambda values: [v.decode() for v in values]) == ["a"]
    assert (tmp_path / "g+logs+0.json").read_bytes() == b"{}  sentinel"
    assert "the journal is closed" in caplog.text
