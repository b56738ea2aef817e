"""'-' as a file name: stdin or stdout, the command-line convention every command follows."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def is_dash(path: Path | str) -> bool:
    return str(path) == "-"


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
