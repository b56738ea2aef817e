"""Backfill throughput (records/s per core) against in-process classify on the same records.

    .venv/bin/python bench/bench_backfill.py --records 5000 --cores 2 [--detectors rules] [--threads 1] [--input FILE]
    .venv/bin/python bench/bench_backfill.py --records 2000 --compare-isolation   # the cost of --isolate-crashes

classify: ``pipeline.cli.classify_lines`` with the stream's Scorer, batch by batch, in this
process on one core (what ``misuse-monitor classify`` does, minus the file write and progress bar).
backfill: ``backfill_to_lake`` from the same JSONL on local[cores], end to end (read, score,
write the lake and dead letters); the first run is cold (Python workers start, detectors load),
the second warm (workers up, models loaded) over the measured records, which the warm-up run
(other simulated records) has not seen. Session start-up (JVM) is excluded and printed separately.
The machine's other load is printed too: on a shared 2-core box it moves these numbers a lot.
Prints one line per measurement and the ratio backfill-per-core / classify.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.cli import classify_lines  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from pipeline.settings import Settings  # noqa: E402


def _simulated(path: Path, records: int, seed: int) -> None:
    from pipeline.simulate import simulate, write_jsonl

    write_jsonl(simulate(records, seed=seed, end=datetime(2026, 11, 20, tzinfo=UTC), span=timedelta(days=7)), path)


def bench_classify(lines: list[bytes], settings: Settings) -> float:
    scorer = Scorer.from_settings(settings)
    try:
        started = time.perf_counter()
        numbered = list(enumerate(lines, start=1))
        size = settings.batch.max_records
        for start in range(0, len(numbered), size):
            classify_lines(numbered[start : start + size], scorer, settings.batch.max_record_bytes)
        return time.perf_counter() - started
    finally:
        scorer.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--detectors", default="rules")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="detector threads in classify and in each Spark worker (1: a per-core comparison)",
    )
    parser.add_argument(
        "--input", type=Path, default=None,
        help="JSONL to use instead of simulated traffic (also the warm-up: score caches then help the warm run)",
    )
    parser.add_argument(
        "--compare-isolation", action="store_true",
        help="also run with --isolate-crashes (a scoring process per worker), interleaved with the plain runs "
             "over fresh records each, and print the ratio",
    )  # fmt: skip
    args = parser.parse_args()

    settings = Settings(detectors={"enabled": args.detectors.split(","), "threads": args.threads})
    work = Path(tempfile.mkdtemp(prefix="mm-bench-backfill-"))
    source = args.input or work / "logs.jsonl"
    # Warm-up traffic: other records (another seed), so detectors that cache scores per text
    # (transformer) do not see the measured records before the measured run.
    warmup = args.input or work / "warmup.jsonl"
    if args.input is None:
        _simulated(source, args.records, seed=3)
        _simulated(warmup, args.records, seed=4)
    lines = source.read_bytes().splitlines()
    n = len(lines)
    print(f"command: {' '.join(shlex.quote(a) for a in [sys.executable, *sys.argv])}")
    print(f"records: {n} ({source}), detectors: {args.detectors}, cpu_count: {os.cpu_count()}")
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")

    classify_s = bench_classify(lines, settings)
    classify_rate = n / classify_s
    print(f"classify (in-process, 1 core): {classify_s:.2f}s  {classify_rate:.0f} records/s")

    from pipeline.spark import backfill
    from pipeline.spark.session import SparkOptions, build_session

    started = time.perf_counter()
    spark = build_session(SparkOptions(master=f"local[{args.cores}]", shuffle_partitions=args.cores))
    spark.sparkContext.setLogLevel("ERROR")
    print(f"spark session start: {time.perf_counter() - started:.1f}s (excluded)")
    spec = backfill.ScoringSpec.from_settings(settings)
    if args.compare_isolation:
        return compare_isolation(spark, backfill, spec, args, work, warmup)
    rates = {}
    for label, path in (("cold (warm-up records)", warmup), ("warm", source)):
        started = time.perf_counter()
        result = backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [path]), spec, work / f"lake-{path.stem}")
        elapsed = time.perf_counter() - started
        records = result.verdicts + result.dead_letters
        rates[label] = records / elapsed / args.cores
        print(
            f"backfill {label} (local[{args.cores}]): {elapsed:.2f}s  {records / elapsed:.0f} records/s  "
            f"{rates[label]:.0f} records/s/core  ({result.verdicts} verdicts, {result.dead_letters} dead letters)"
        )
    spark.stop()
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"ratio backfill warm per core / classify: {rates['warm'] / classify_rate:.2f}")
    return 0


def compare_isolation(spark, backfill, spec, args, work: Path, warmup: Path) -> int:  # noqa: ANN001 - lazily imported
    """Plain and ``isolate_crashes`` backfills side by side: each arm cold once on the warm-up
    records, then two warm rounds, the arms alternating, each run on records neither arm has
    seen (seeds 10-13), so that no detector cache favours the later one."""
    import dataclasses

    arms = {"plain": spec, "isolated": dataclasses.replace(spec, isolate_crashes=True)}
    rates: dict[str, list[float]] = {arm: [] for arm in arms}
    runs = [(arm, "cold", warmup) for arm in arms]
    for seed, arm in zip(range(10, 14), ["plain", "isolated", "isolated", "plain"], strict=True):
        path = work / f"fresh-{seed}.jsonl"
        if args.input is None:
            _simulated(path, args.records, seed=seed)
        runs.append((arm, "warm", args.input or path))
    for n, (arm, label, path) in enumerate(runs):
        started = time.perf_counter()
        result = backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [path]), arms[arm], work / f"lake-{n}")
        elapsed = time.perf_counter() - started
        records = result.verdicts + result.dead_letters
        if label == "warm":
            rates[arm].append(records / elapsed)
        print(f"backfill {arm} {label} (local[{args.cores}]): {elapsed:.2f}s  {records / elapsed:.0f} records/s  "
              f"({result.verdicts} verdicts, {result.dead_letters} dead letters)", flush=True)  # fmt: skip
    spark.stop()
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    plain, isolated = (sum(rates[a]) / len(rates[a]) for a in ("plain", "isolated"))
    print(f"warm records/s, mean of 2: plain {plain:.0f}, isolated {isolated:.0f}; ratio isolated / plain {isolated / plain:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
