"""Simulator speed: time to generate (and optionally write) N simulated records.

    .venv/bin/python bench/bench_simulate.py --records 20000 [--write /tmp/sim.jsonl]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline.simulate import simulate, write_jsonl


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", type=Path, default=None, help="also write JSONL here")
    args = parser.parse_args()
    end = datetime(2025, 6, 1, tzinfo=UTC)
    start = time.perf_counter()
    if args.write:
        count = len(write_jsonl(simulate(args.records, seed=args.seed, end=end), args.write))
    else:
        count = sum(1 for _ in simulate(args.records, seed=args.seed, end=end))
    elapsed = time.perf_counter() - start
    print(f"{count} records in {elapsed:.2f} s ({count / elapsed:.0f} records/s)")


if __name__ == "__main__":
    main()
