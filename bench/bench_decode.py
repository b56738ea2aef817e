"""Per-record cost of decode on simulated records: the hardened path and its parts, in one run.

    .venv/bin/python bench/bench_decode.py --records 2000

Prints microseconds per record (best of --repeats loops) for: the full ``decode_log``; the guarded
JSON parse alone; a bare ``json.loads``; pydantic's ``model_validate_json`` (Rust parser, no
duplicate-key or integer-size check); and the same records re-encoded with ``ensure_ascii`` (every
non-ASCII character a \\u escape, which sends records with \\uD8xx pairs down the text-scan path).
"""

from __future__ import annotations

import argparse
import json
import sys
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    lines = [r.log.model_dump_json(by_alias=True, exclude_none=True).encode() for r in simulate(args.records, seed=7)]
    escaped = [json.dumps(json.loads(line)).encode() for line in lines]
    limit = 1 << 20
    print(f"{len(lines)} simulated records, {sum(map(len, lines)) // len(lines)} bytes mean")
    rows = [
        ("decode_log (hardened, UTF-8 records)", lambda b: decode_log(b, limit), lines),
        ("decode_log (hardened, ensure_ascii records)", lambda b: decode_log(b, limit), escaped),
        ("parse_json_object (guarded parse only)", lambda b: parse_json_object(b, limit), lines),
        ("json.loads (bare parse, no guards)", json.loads, lines),
        ("InferenceLog.model_validate_json (no dup/int guards)", InferenceLog.model_validate_json, lines),
    ]
    for name, fn, data in rows:
        print(f"{name:55s} {best_us(fn, data, args.repeats):7.1f} us/record")


if __name__ == "__main__":
    main()
