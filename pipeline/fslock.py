"""``flock`` on a file, for the ``with`` block (standard library only: the local-service
scripts import it before any install)."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path


class LockTimeout(TimeoutError):
    """The lock was still held by someone else when the timeout ran out."""


@contextlib.contextmanager
def exclusive_lock(path: Path, *, timeout: float | None = None) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    Users: ``up`` of the local services, beside the state file from reading it to writing it
    (two concurrent ``up`` start one service); the lake, around one partition's write and trim
    (two writers of one range lost rows to each other's trims), and `lake prune` around each
    removal (see ``shared_lock``). With ``timeout`` (seconds), LockTimeout past it.
    """
    with _flock(path, fcntl.LOCK_EX, timeout):
        yield


@contextlib.contextmanager
def shared_lock(path: Path) -> Iterator[None]:
    """Hold a shared ``flock`` on ``path``: many holders at once, none beside an exclusive one.

    The lake's writers hold the lake's lock shared while they write, and `lake prune` holds it
    exclusive while it removes: a partition removed under a writer took its temporary file
    and its lock file with it (the writer failed, and the next writer of the partition locked
    a new lock file beside one still held).
    """
    with _flock(path, fcntl.LOCK_SH, None):
        yield


@contextlib.contextmanager
def _flock(path: Path, mode: int, timeout: float | None) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        if timeout is None:
            fcntl.flock(fh, mode)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fh, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LockTimeout(f"{path} was held for {timeout:g} s") from None
                    time.sleep(0.01)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
