"""Output directories of the Spark jobs: never replace a non-empty one by accident.

In: the directories a job is about to write and the user's ``--overwrite``. Out: nothing, or an
``InputError`` (exit 4, one line) before any SparkSession starts. Spark writes with mode
"overwrite" (a job's directory is replaced whole) and the backfill trims overlapping offset ranges
of a lake, so a mistyped ``--out`` must not cost a dataset. Both entry points use it: the
``misuse-monitor spark`` commands and the job files run by spark-submit.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path


def refuse_overwrite(targets: Iterable[Path], overwrite: bool) -> None:
    """Raise InputError naming every non-empty target, unless ``overwrite``; a target that is
    (or lies under) a file is refused even with ``overwrite``: Spark could only fail after the job ran."""
    from pipeline.exits import InputError

    targets = [Path(t) for t in targets]
    for target in targets:
        existing = next((p for p in (target, *target.parents) if p.exists()), None)
        if existing is not None and not existing.is_dir():
            raise InputError(f"{existing} is a file, not a directory; choose another --out")
    busy = [t for t in targets if t.is_dir() and any(t.iterdir())]
    if busy and not overwrite:
        raise InputError(f"{', '.join(map(str, busy))} is not empty; pass --overwrite to replace it")


def bounded(kind: type, low: float, high: float | None = None):  # noqa: ANN201
    """An argparse ``type=`` for a finite number of ``kind`` from ``low`` to ``high``: the job files spark-submit runs took any float (NaN, 0, -1) the ``misuse-monitor
    spark`` commands refuse (a hostile review, 2026-12-07: `--half-life-days nan` exited 0 with
    every risk NaN)."""
    import math

    def parse(text: str):  # noqa: ANN202
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not math.isfinite(value) or value < low or (high is not None and value > high):
            bound = f"at least {low:g}" + (f" and at most {high:g}" if high is not None else "")
            raise argparse.ArgumentTypeError(f"{text!r}: must be {bound}")
        return value

    return parse


def refuse_inside_lake(targets: Iterable[Path], lakes: Iterable[Path | None], *, source_lake: Path | None = None) -> None:
    """Raise InputError for a target inside a lake's ``verdicts`` or ``dead_letters`` folder (the
    jobs read those folders whole: aggregates written to ``<lake>/verdicts`` were counted as 47
    more verdicts, and offenders then crashed), or a backfill target that is its own source lake
    (re-scoring a lake into itself trimmed away the rows whose text it had not kept: 300 rows
    became 158). Both found by a hostile review, 2026-12-06."""
    from pipeline.exits import InputError

    for target in targets:
        where = Path(target).resolve()
        for lake in filter(None, lakes):
            root = Path(lake).resolve()
            for folder in (root / "verdicts", root / "dead_letters"):
                if where == folder or folder in where.parents:
                    raise InputError(f"--out {target} lies inside the lake's {folder.name} folder ({folder}), which the "
                                     "jobs read whole; choose a folder outside it")  # fmt: skip
        if source_lake is not None and where == Path(source_lake).resolve():
            raise InputError(f"--out {target} is the source lake: rows whose text the lake did not keep cannot be "
                             "re-scored and would be trimmed away; backfill into a new lake, then swap it in")  # fmt: skip


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite", action="store_true", help="replace what an earlier run wrote there (refused when not empty)"
    )
