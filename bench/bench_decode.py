"""Per-record cost of decode on simulated records: the hardened path and its parts, in one run.

    .venv/bin/python bench/bench_decode.py --records 2000 [--baseline-commit REV]

Prints microseconds per record (best of --repeats loops) for: the full ``decode_log``; the guarded
JSON parse alone; a bare ``json.loads``; pydantic's ``model_validate_json`` (Rust parser, no
duplicate-key or integer-size check); and the same records re-encoded with ``ensure_ascii`` (every
non-ASCII character a \\u escape, which sends records with \\uD8xx pairs down the text-scan path).
With ``--baseline-commit`` (default: the commit before decode was hardened) that commit's
``pipeline/decode.py`` and ``pipeline/schemas.py`` are loaded from git and timed on the same
records in the same process, so the ratio is side by side.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.decode import decode_log, parse_json_object  # noqa: E402
from pipeline.schemas import InferenceLog  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402


def best_us(fn: Callable[[bytes], object], data: list[bytes], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for item in data:
            fn(item)
        best = min(best, time.perf_counter() - started)
    return best / len(data) * 1e6


BEFORE_HARDENING = "2ecc13d7888298aaefc46c34ee94f19ebfd5925f"  # parent of the hardening commit 8e3007e


def load_baseline(rev: str) -> Callable[[bytes, int], object]:
    """``decode_log`` of ``rev`` (its decode.py and schemas.py, from git) as a separate package."""
    root = Path(tempfile.mkdtemp(prefix="bench-decode-"))
    package = root / "baseline_pipeline"
    package.mkdir()
    (package / "__init__.py").write_text("")
    for name in ("decode", "schemas"):
        text = subprocess.run(
            ["git", "show", f"{rev}:pipeline/{name}.py"], capture_output=True, text=True, check=True,
            cwd=Path(__file__).resolve().parents[1],
        ).stdout
        (package / f"{name}.py").write_text(text.replace("from pipeline.schemas", "from baseline_pipeline.schemas"))
    sys.path.insert(0, str(root))
    spec = importlib.util.find_spec("baseline_pipeline.decode")
    assert spec is not None
    module = importlib.import_module("baseline_pipeline.decode")
    return module.decode_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-commit", default=BEFORE_HARDENING, help="'' to skip the baseline")
    args = parser.parse_args()
    lines = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(args.records, seed=7)]
    escaped = [json.dumps(json.loads(line)).encode() for line in lines]
    limit = 1 << 20
    print(f"{len(lines)} simulated records, {sum(map(len, lines)) // len(lines)} bytes mean")
    rows = []
    if args.baseline_commit:
        baseline = load_baseline(args.baseline_commit)
        rows.append((f"decode_log at {args.baseline_commit[:8]} (before hardening)", lambda b: baseline(b, limit), lines))
    rows += [
        ("decode_log (hardened, UTF-8 records)", lambda b: decode_log(b, limit), lines),
        ("decode_log (hardened, ensure_ascii records)", lambda b: decode_log(b, limit), escaped),
        ("parse_json_object (guarded parse only)", lambda b: parse_json_object(b, limit), lines),
        ("json.loads (bare parse, no guards)", json.loads, lines),
        ("InferenceLog.model_validate_json (no dup/int guards)", InferenceLog.model_validate_json, lines),
    ]
    best = {name: float("inf") for name, _, _ in rows}
    for _ in range(args.repeats):  # interleaved, best of: a busy shared machine hits every row alike
        for name, fn, data in rows:
            best[name] = min(best[name], best_us(fn, data, 1))
    for name, us in best.items():
        print(f"{name:55s} {us:7.1f} us/record")
    if args.baseline_commit:
        first = next(iter(best))
        print(f"hardened / before: {best['decode_log (hardened, UTF-8 records)'] / best[first]:.2f}x")


if __name__ == "__main__":
    main()
