"""'-' as a file name: stdin or stdout, the command-line convention every command follows."""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO


def is_dash(path: Path | str) -> bool:
    return str(path) == "-"


def path_or_dash(value: str) -> Path:
    """A command-line path (typer's ``parser=``): ``-`` is stdin or stdout, and any other
    spelling of a file named ``-`` (``./-``) is that file. ``Path("./-")`` is ``Path("-")``, so
    ``classify ./-`` read stdin and ``-o ./-`` wrote stdout while the file was ignored, exit 0
    (a newcomer's review, 2026-12-06); such a path is kept absolute instead."""
    path = Path(value)
    return path.absolute() if value != "-" and is_dash(path) else path


def output_path_or_dash(value: str) -> Path:
    """:func:`path_or_dash` for an output file: a name that ends in a slash names a folder, and
    was written as a file of the folder's name (``simulate -o out/`` made a file ``out``: a
    hostile review, 2026-12-07)."""
    if value.endswith(("/", os.sep)):
        raise ValueError(f"{value!r} ends with a slash: give a file name (e.g. {value.rstrip('/' + os.sep) or '.'}/out.jsonl)")
    return path_or_dash(value)


def same_file(a: Path | str | None, b: Path | str | None) -> bool:
    """Do two paths (neither '-') name one file? Writing the output would truncate the input
    (or interleave two outputs) before it is read: ``classify x -o x`` emptied x and exited 0."""
    if a is None or b is None or is_dash(a) or is_dash(b):
        return False
    a, b = Path(a), Path(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def output_path_problem(path: Path, creates_folders: bool) -> str | None:
    """Why ``path`` cannot be an output file (a usage error, exit 2, before any work), or None.

    A folder, a path under a file, and (``creates_folders`` False) a folder that does not exist.
    Without it these were found only when the output was opened, after the work: "internal
    error: FileExistsError" (exit 1) from ``report -o FILE/r.html``, and a hidden temporary
    file's name from ``classify -o /missing/o.jsonl`` (a newcomer's review, 2026-12-06)."""
    if is_dash(path):
        return None
    if path.is_dir():
        return f"'{path}' is a directory; give a file name"
    existing = next(p for p in path.parents if p.exists() or p == p.parent)
    if existing.exists() and not existing.is_dir():
        return f"'{existing}' is a file, not a folder for '{path.name}'"
    if not creates_folders and not path.parent.is_dir():
        return f"folder '{path.parent}' does not exist"
    return None


# Errors of a file being written that Python raises without its name (a write or a close on a
# full disk): open_output adds the name the user gave.
_UNNAMED_WRITE_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS)


GZIP_MAGIC = b"\x1f\x8b"

# Files that hold prompts as they arrived (the gateway's spill and rejected files, Spark's dead
# letters) are created readable by their owner only. They used the umask's mode, 0644 on most
# hosts: every local account could read every spilled prompt (a privacy review, 2026-12-06).
PRIVATE_FILE_MODE = 0o600


def open_private(path: Path, mode: str = "a") -> IO:
    """``path`` opened for appending (``"a"``, UTF-8 text) or writing (``"wb"``), created with
    PRIVATE_FILE_MODE if it does not exist. A file that exists keeps its mode: an operator may
    have chosen one (a log shipper's group)."""
    if mode not in ("a", "wb"):
        raise ValueError(f"open_private: mode {mode!r} is not 'a' or 'wb'")
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if mode == "a" else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    return os.fdopen(fd, mode, encoding="utf-8") if mode == "a" else os.fdopen(fd, mode)


@dataclass(frozen=True)
class LongLine:
    """Stands for a line longer than the reader's ``max_line_bytes``: its length without the line
    end. The line itself was read in pieces and dropped, never held whole."""

    size: int


# Read in pieces of this size while skipping a long line.
_PIECE = 1 << 20


def bounded_lines(fh: IO[bytes], max_line_bytes: int) -> Iterator[bytes | LongLine]:
    """The lines of a binary stream; one that does not end within ``max_line_bytes`` + 2 bytes
    (room for "\r\n") is a :class:`LongLine`. ``for line in fh`` held a whole line: a 1 GB line
    without a newline took 2 GB of memory in ``classify``, a 10 GB one (or ``/dev/zero``) all
    there is. A line a byte or two over the limit still comes whole: its reader's size check
    names it."""
    while True:
        line = fh.readline(max_line_bytes + 2)
        if not line:
            return
        if line.endswith(b"\n") or len(line) < max_line_bytes + 2:
            yield line
            continue
        size = len(line)
        while not line.endswith(b"\n"):
            line = fh.readline(_PIECE)
            if not line:
                break
            size += len(line)
        yield LongLine(size - (2 if line.endswith(b"\r\n") else 1 if line.endswith(b"\n") else 0))


@contextlib.contextmanager
def open_input(path: Path, max_line_bytes: int | None = None) -> Iterator[Iterable]:
    """The lines (bytes) of the file, or of stdin for '-' (left open: it is not ours to close).
    With ``max_line_bytes``, a longer line comes as a :class:`LongLine` and is never held whole
    (see :func:`bounded_lines`).

    Gzip-compressed input (archived gateway logs, ``.jsonl.gz``) is read decompressed, told by
    its magic bytes rather than its name, as ``zcat -f`` does: read raw, every "line" of a
    compressed file was a ``not_utf8`` error line. A truncated or corrupt archive ends the
    command with an :class:`~pipeline.exits.InputError` naming the line it got to."""
    def lines(fh: IO[bytes]) -> Iterable:
        return fh if max_line_bytes is None else bounded_lines(fh, max_line_bytes)

    if is_dash(path):
        raw = getattr(sys.stdin, "buffer", None)
        if raw is None:  # stdin replaced by a text stream (a test, an embedding program): its lines as UTF-8
            yield (line.encode("utf-8") for line in sys.stdin)
            return
        peek = getattr(raw, "peek", None)  # absent where a test runner gives stdin as a BytesIO
        if peek is not None and peek(2)[:2] == GZIP_MAGIC:
            with gzip.open(raw, "rb") as fh:
                yield _lines_of_archive(lines(fh), "stdin")
        else:
            yield lines(raw)
        return
    # Opened once and peeked, not probed and reopened: a pipe (`/dev/stdin`, `<(zcat f)`) can be
    # read only once, and a probe would have eaten its first two bytes.
    with path.open("rb") as raw_file:
        if raw_file.peek(2)[:2] == GZIP_MAGIC:
            with gzip.open(raw_file, "rb") as fh:
                yield _lines_of_archive(lines(fh), str(path))
        else:
            yield lines(raw_file)


def count_lines(path: Path) -> int | None:
    """Lines in a file (gzip read decompressed, as :func:`open_input` reads it), for a progress
    bar: newlines counted in 1 MiB blocks, plus a last line without one. None for '-' or a pipe
    (it cannot be read twice) and for a damaged archive (the command's own read reports it,
    with the line it got to). Counting ``open_input``'s bounded lines took twice as long."""
    if is_dash(path) or not path.is_file():
        return None
    with path.open("rb") as raw_file:
        fh: IO[bytes] = gzip.open(raw_file, "rb") if raw_file.peek(2)[:2] == GZIP_MAGIC else raw_file  # type: ignore[assignment]
        count, last = 0, b"\n"
        try:
            while block := fh.read(_PIECE):
                count += block.count(b"\n")
                last = block[-1:]
        except (EOFError, OSError, zlib.error):  # gzip.BadGzipFile is an OSError
            return None
    return count + (last != b"\n")


def _lines_of_archive(fh: Iterable, name: str) -> Iterator:
    """The lines of an open gzip stream; a damaged archive is an InputError, not a traceback."""
    from pipeline.exits import InputError

    line_no = 0
    try:
        for line_no, line in enumerate(fh, start=1):  # noqa: B007 - line_no is read after the loop
            yield line
    except (EOFError, OSError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise InputError(f"{name}: the gzip data is truncated or corrupt ({exc}); {line_no} line(s) read before it") from exc


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM (``timeout``, systemd, Kubernetes) ends the process as Ctrl-C does, through the
    ``finally`` blocks, so the temporary file goes (exit 143, as the signal's default). It was
    left behind until 2026-12-07 (a hostile review). Only where SIGTERM has its default action,
    in the main thread: a command with its own handler (the stream) keeps it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def unwind(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, unwind)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextlib.contextmanager
def open_output(path: Path, private: bool = False) -> Iterator[IO[str]]:
    """The file (UTF-8, '\\n' line ends), or stdout for '-' (left open: it is not ours to close).

    A regular file is written whole or not at all: into a hidden ``.<name>.<pid>.tmp`` next to
    it, renamed over ``path`` when the block ends without an error. A run that fails, is
    interrupted or is killed leaves ``path`` as it was, never a shorter file that looks finished
    (``classify`` promises one line per input line; ``simulate`` emptied ``-o`` and then failed
    when its data packages were missing: 2026-12-04). Anything else that exists there (a FIFO,
    ``/dev/null``, ``/dev/stdout``) is written in place; a symlink is followed.

    ``private``: a new file is created with PRIVATE_FILE_MODE (0600) whatever the umask (the
    report's page holds representative prompts); a file replaced keeps the mode it had.

    A regular file whose name ends in ``.gz`` is written gzip-compressed, as the commands read
    such a file (it was plain text under a `.gz` name until 2026-12-07).
    """
    if is_dash(path):
        yield sys.stdout
        return
    target = Path(os.path.realpath(path))
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fh = raw = None
    if not target.exists() or target.is_file():
        # PermissionError: a folder we may not create in, holding a file we may write.
        with contextlib.suppress(PermissionError):
            try:
                # The umask's mode, as a plain open() gives, or owner-only when private.
                opener = (lambda name, flags: os.open(name, flags, PRIVATE_FILE_MODE)) if private else None
                if target.name.endswith(".gz"):
                    raw = open(tmp, "xb", opener=opener)  # noqa: SIM115 - closed below
                    # The name in the gzip header is the output's, not the temporary file's.
                    packed = gzip.GzipFile(filename=target.name, mode="wb", fileobj=raw)
                    fh = io.TextIOWrapper(packed, encoding="utf-8", newline="\n")
                else:
                    fh = open(tmp, "x", encoding="utf-8", newline="\n", opener=opener)  # noqa: SIM115 - closed below
            except (FileNotFoundError, NotADirectoryError) as exc:  # name what the user gave, not the temporary file
                raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    try:
        if fh is None:  # written in place
            with path.open("w", encoding="utf-8", newline="\n") as out:
                yield out
            return
        try:
            with fh, _sigterm_unwinds():
                yield fh
            if raw is not None:  # closing the gzip layer leaves the file it wrote to open
                raw.close()
            if target.exists():
                with contextlib.suppress(OSError):  # keep the mode the file had
                    os.chmod(tmp, target.stat().st_mode & 0o7777)
            os.replace(tmp, target)
        finally:
            if raw is not None:
                raw.close()
            tmp.unlink(missing_ok=True)
    except OSError as exc:
        if exc.filename is None and exc.errno in _UNNAMED_WRITE_ERRORS:
            raise type(exc)(exc.errno, exc.strerror, str(path)) from None
        raise
