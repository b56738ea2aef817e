"""Write every dashboard as deterministic JSON under ``dashboards/generated/``; ``--check`` for CI.

Output is ``json.dumps(..., sort_keys=True, indent=2)`` plus a newline, so the same code always
produces the same bytes and a diff shows exactly what a code change did to a dashboard.

    python -m dashboards.generate            # rewrite the files
    python -m dashboards.generate --check    # exit 11 and list stale files, write nothing
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dashboards.detector_behaviour import detector_behaviour
from dashboards.gateway import PRESENCE_METRIC as GATEWAY_PRESENCE
from dashboards.gateway import gateway
from dashboards.overview import overview
from dashboards.pipeline_health import pipeline_health
from pipeline.stdio import open_output

GENERATED_DIR = Path(__file__).resolve().parent / "generated"

# File stem -> pure builder. The stem is also the dashboard's uid without the "mm-" prefix.
DASHBOARDS: dict[str, Callable[[], dict[str, Any]]] = {
    "misuse-overview": overview,
    "pipeline-health": pipeline_health,
    "detector-behaviour": detector_behaviour,
    "gateway": gateway,
}
# Dashboards of components an installation may not run: uid -> a metric every instance exports.
# `dashboards verify` skips such a dashboard (and says so) when Prometheus has no series of it.
OPTIONAL_DASHBOARDS: dict[str, str] = {"mm-gateway": GATEWAY_PRESENCE}


def render(dashboard: dict[str, Any]) -> str:
    return json.dumps(dashboard, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def rendered_files() -> dict[str, str]:
    """File name -> exact file content for every dashboard."""
    return {f"{stem}.json": render(build()) for stem, build in DASHBOARDS.items()}


def all_dashboards() -> list[dict[str, Any]]:
    return [build() for build in DASHBOARDS.values()]


class GenerateError(ValueError):
    """The output directory is not one the dashboards may be written to (it holds others' files)."""


def _our_dashboard(path: Path) -> bool:
    """A dashboard we generated (its uid starts with ``mm-``): only such a file is ever stale or
    deleted. Anything else in the folder is someone else's: a dashboard without a uid (Grafana
    takes those), a package.json, a file that is not JSON. Until 2026-12-07 only a file with
    another uid was spared, and a re-run deleted the others while it said "wrote" (a hostile review)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    uid = data.get("uid") if isinstance(data, dict) else None
    return isinstance(uid, str) and uid.startswith("mm-")


def stale_files(directory: Path = GENERATED_DIR) -> list[str]:
    """Names of files that are missing, different, or no longer generated."""
    expected = rendered_files()
    stale = [name for name, text in expected.items() if not (directory / name).is_file() or (directory / name).read_text() != text]
    stale += sorted(p.name for p in directory.glob("*.json") if p.name not in expected and _our_dashboard(p))
    return sorted(stale)


def write(directory: Path = GENERATED_DIR) -> list[str]:
    """Write changed files, delete files no longer generated; returns the names touched.

    Leftover JSON is deleted only in a directory that already holds our dashboards, and never a
    dashboard with another uid: ``--out /var/lib/grafana/dashboards`` (or ``--out .``) deleted
    every other team's dashboard (and package.json) there."""
    existing = next((p for p in (directory, *directory.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():  # --out itself, or a folder above it, is a file
        raise GenerateError(f"{existing} is a file; --out takes a directory")
    expected = rendered_files()
    others = sorted(p.name for p in directory.glob("*.json") if p.name not in expected) if directory.is_dir() else []
    if others and not any((directory / name).is_file() for name in expected):
        shown = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise GenerateError(
            f"{directory} holds other JSON files ({shown}) and none of our dashboards; "
            "write to an empty or dedicated directory (leftovers there are deleted)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    touched = stale_files(directory)
    for name in touched:
        path = directory / name
        if name in expected:
            # Replaced whole: Grafana's file provisioner polls this folder, and a file written in
            # place can be read half-written (or left so by a killed run).
            with open_output(path) as out:
                out.write(expected[name])
        else:
            path.unlink()
    return touched


def describe(touched: list[str]) -> str:
    """What ``write`` did, for a person: the files it wrote and those it removed."""
    if not touched:
        return "dashboards already up to date"
    expected = rendered_files()
    wrote = [name for name in touched if name in expected]
    removed = [name for name in touched if name not in expected]
    parts = ([f"wrote {', '.join(wrote)}"] if wrote else []) + ([f"removed {', '.join(removed)}"] if removed else [])
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.generate")
    parser.add_argument("--check", action="store_true", help="fail when generated files are stale")
    parser.add_argument("--out", type=Path, default=GENERATED_DIR)
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files(args.out)
        if stale:
            print(f"stale dashboards in {args.out}: {', '.join(stale)}; run `misuse-monitor dashboards generate`", file=sys.stderr)
            return 11  # as `misuse-monitor dashboards check` (README "Exit codes": 1 is a bug)
        print(f"{len(DASHBOARDS)} dashboards up to date")
        return 0
    try:
        touched = write(args.out)
    except GenerateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(describe(touched))
    return 0


if __name__ == "__main__":
    sys.exit(main())
