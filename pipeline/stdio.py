"""'-' as a file name: stdin or stdout, the command-line convention every command follows."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def is_dash(path: Path | str) -> bool:
    return str(path) == "-"


def same_file(a: Path | str | None, b: Path | str | None) -> bool:
    """Do two paths (neither '-') name one file? Writing the output would truncate the input
    (or interleave two outputs) before it is read: ``classify x -o x`` emptied x and exited 0."""
    if a is None or b is None or is_dash(a) or is_dash(b):
        return False
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


@contextlib.contextmanager
def open_input(path: Path, text: bool = False) -> Iterator[IO]:
    """The file (bytes, or UTF-8 text), or stdin for '-' (left open: it is not ours to close)."""
    if is_dash(path):
        yield sys.stdin if text else sys.stdin.buffer
    else:
        with path.open("r", encoding="utf-8") if text else path.open("rb") as fh:
            yield fh


@contextlib.contextmanager
def open_output(path: Path) -> Iterator[IO[str]]:
    """The file (UTF-8, '\\n' line ends), or stdout for '-' (left open: it is not ours to close)."""
    if is_dash(path):
        yield sys.stdout
    else:
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            yield fh
