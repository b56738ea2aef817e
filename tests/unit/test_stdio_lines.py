"""``open_input``'s bounded lines: what ``classify`` and ``produce`` read through.

A hostile review (2026-12-05): one line without a newline was read whole. A 1 GB line took 2 GB
of memory in ``classify`` (23.7 s, then one ``too_large`` error line); a 10 GB one, a gzip bomb
of zeros or ``/dev/zero`` would take all there is. A line longer than the command can use is now
read in pieces and dropped, and reported with its size.
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.stdio import LongLine, bounded_lines, count_lines, open_input

GOOD = json.dumps({"schema": "inference-log/v1", "request_id": "ok", "timestamp": "2026-12-05T00:00:00Z",
                   "model": "m", "prompt": "hello"}).encode()


def test_short_lines_come_whole_and_long_ones_by_their_size() -> None:
    data = b"a\n" + b"x" * 10 + b"\r\n" + b"y" * 11 + b"\n" + b"z" * 5000 + b"\r\n" + b"end"
    assert list(bounded_lines(io.BytesIO(data), 10)) == [
        b"a\n", b"x" * 10 + b"\r\n",
        b"y" * 11 + b"\n",  # a byte over: whole, so the reader's own size check names it
        LongLine(5000), b"end",
    ]
    assert list(bounded_lines(io.BytesIO(b"q" * 50), 10)) == [LongLine(50)]  # the last line, no newline
    assert list(bounded_lines(io.BytesIO(b""), 10)) == []


def _peak_mb(path: Path, max_line_bytes: int) -> tuple[list, float]:
    tracemalloc.start()
    try:
        with open_input(path, max_line_bytes=max_line_bytes) as fh:
            lines = list(fh)
        return lines, tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_a_64_mb_line_is_never_held_whole(tmp_path: Path) -> None:
    plain = tmp_path / "one-line.jsonl"
    plain.write_bytes(GOOD + b"\n" + b"x" * (64 << 20) + b"\n" + GOOD + b"\n")
    lines, peak = _peak_mb(plain, 1 << 20)
    assert lines == [GOOD + b"\n", LongLine(64 << 20), GOOD + b"\n"]
    assert peak < 8, f"{peak:.1f} MB held"
    packed = tmp_path / "bomb.jsonl.gz"  # 64 MB of zeros without a newline, 64 KB on disk
    with gzip.open(packed, "wb") as fh:
        fh.write(GOOD + b"\n" + bytes(64 << 20))
    lines, peak = _peak_mb(packed, 1 << 20)
    assert lines == [GOOD + b"\n", LongLine(64 << 20)]
    assert peak < 8, f"{peak:.1f} MB held"


def test_classify_writes_one_line_per_input_line_with_the_long_ones_sized(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_bytes(GOOD + b"\n" + b"x" * 3_000_000 + b"\r\n" + GOOD + b"\n" + b"y" * 2_000_000)
    out = tmp_path / "out.jsonl"
    assert main(["classify", str(src), "-o", str(out), "--detectors", "rules", "--allow-errors"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["schema"] for r in rows] == ["misuse-verdict/v1", "misuse-error/v1", "misuse-verdict/v1", "misuse-error/v1"]
    assert rows[1] == {"schema": "misuse-error/v1", "line": 2, "reason": "too_large",
                       "detail": "3000000 bytes > limit 1048576 bytes"}
    assert rows[3]["line"] == 4 and rows[3]["detail"] == "2000000 bytes > limit 1048576 bytes"


@pytest.mark.parametrize(
    "data",
    [b"", b"\n", b"a", b"a\nb", b"a\nb\n", b"a\r\nb\r\n\r\n", b"x" * 3_000_000 + b"\n" + b"y" * (1 << 20), b"\n" * (1 << 20)],
    ids=["empty", "one-newline", "no-newline", "last-unended", "ended", "crlf", "long-lines", "a-block-of-newlines"],
)
@pytest.mark.parametrize("packed", [False, True], ids=["plain", "gzip"])
def test_count_lines_counts_what_open_input_reads(tmp_path: Path, data: bytes, packed: bool) -> None:
    """The progress bar's total: the lines the command will read, counted in blocks."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(gzip.compress(data) if packed else data)
    with open_input(path, max_line_bytes=1024) as lines:
        expected = sum(1 for _ in lines)
    assert count_lines(path) == expected


def test_count_lines_gives_no_total_for_a_damaged_archive_or_stdin(tmp_path: Path) -> None:
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"a": 1}\n' * 10_000)[:-40])
    assert count_lines(path) is None  # the command's own read names the line it got to
    assert count_lines(Path("-")) is None
