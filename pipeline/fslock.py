"""An exclusive ``flock`` on a file, for the ``with`` block (standard library only: the
local-service scripts import it before any install)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if needed) for the ``with`` block.

    Users: ``up`` of the local services, beside the state file from reading it to writing it
    (two concurrent ``up`` start one service); the lake, around one partition's write and trim
    (two writers of one range lost rows to each other's trims).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
