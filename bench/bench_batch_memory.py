"""Peak RSS and records/s of scoring with the default detector, per ``detectors.batch_size``
and per capacity of oneDNN's shape caches.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_batch_memory.py [--sizes 32 16] [--caches default 256]
        [--rounds 3] [--records 300]

Each measurement is a fresh process (the peak, VmHWM, is per process): load the default
detectors and the redactor as the stream does (two malloc arenas, ``Scorer.preload``), then
score the same simulated records in stream-sized batches (``batch.max_records``). ``--caches``
sets both ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` and ``LRU_CACHE_CAPACITY`` (ideep's, inside torch)
to each value before torch loads; ``default`` leaves them unset, as they are by default (1,024
entries each). Variants alternate round by round, so a load change on the shared machine hits
every one alike. Prints each run (with the RSS after every 400 records: a long-running process
grows while those caches fill) and the medians; the rules that use them are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")
RSS_EVERY = 400  # records between two RSS readings


def measure(batch_size: int, records: int, caches: str) -> dict:
    """In the child: scoring peak RSS and records/s for one batch size and cache capacity."""
    if caches != "default":
        for name in CACHE_VARIABLES:
            os.environ[name] = caches
    from pipeline.memory import limit_malloc_arenas, peak_rss_mb, rss_mb

    limit_malloc_arenas()
    from pipeline.metrics import PipelineMetrics
    from pipeline.scoring import Scorer
    from pipeline.settings import Settings
    from pipeline.simulate import simulate

    settings = Settings(pseudonym_key="bench-batch-memory", detectors={"batch_size": batch_size})
    scorer = Scorer.from_settings(settings, PipelineMetrics())
    scorer.preload()
    loaded = peak_rss_mb()
    logs = [r.log for r in simulate(records, seed=11)]
    size = settings.batch.max_records
    growth: list[float] = []
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(logs), size):
        scorer.score_each(logs[i : i + size])
        if (i + size) // RSS_EVERY > i // RSS_EVERY:
            growth.append(rss_mb())
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"batch_size": batch_size, "caches": caches, "loaded_mb": loaded, "peak_mb": peak_rss_mb(),
            "rate": records / elapsed, "cpu_ms": cpu / records * 1e3, "rss_mb": growth}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--caches", nargs="+", default=["default"],
                        help="capacities of oneDNN's shape caches to compare ('default': unset)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--child-caches", default="default", help=argparse.SUPPRESS)
    args = parser.parse_args()
    for value in args.caches:
        if value != "default" and not (value.isdigit() and int(value) > 0):
            parser.error(f"--caches takes positive integers or 'default', not {value!r}")
    if args.child:
        print(json.dumps(measure(args.child, args.records, args.child_caches)))
        return
    console = Console(width=160)
    runs: list[dict] = []
    variants = [(size, caches) for size in args.sizes for caches in args.caches]
    table = Table(title=f"scoring peak RSS by detectors.batch_size and shape caches (load average at start {os.getloadavg()[0]:.1f})")
    for col in ("round", "batch size", "caches", "RSS after load MB", f"RSS every {RSS_EVERY} records MB",
                "peak RSS MB", "records/s", "CPU ms/record", "load"):
        table.add_column(col, justify="right")
    for round_no in range(1, args.rounds + 1):
        for size, caches in track(variants, description=f"round {round_no}/{args.rounds}", console=console):
            child = subprocess.run([sys.executable, __file__, "--child", str(size), "--child-caches", caches,
                                    "--records", str(args.records)], capture_output=True, text=True)
            if child.returncode != 0:
                raise SystemExit(child.stderr[-3000:])
            run = json.loads(child.stdout.strip().splitlines()[-1])
            runs.append(run)
            table.add_row(str(round_no), str(size), caches, f"{run['loaded_mb']:,.0f}",
                          " ".join(f"{mb:,.0f}" for mb in run["rss_mb"]), f"{run['peak_mb']:,.0f}",
                          f"{run['rate']:.2f}", f"{run['cpu_ms']:.0f}", f"{os.getloadavg()[0]:.1f}")
    console.print(table)
    summary = Table(title="medians")
    for col in ("batch size", "caches", "peak RSS MB", "records/s", "CPU ms/record", "CPU vs the first"):
        summary.add_column(col, justify="right")
    first = variants[0]
    base = statistics.median(r["cpu_ms"] for r in runs if (r["batch_size"], r["caches"]) == first)
    for size, caches in variants:
        mine = [r for r in runs if (r["batch_size"], r["caches"]) == (size, caches)]
        cpu = statistics.median(r["cpu_ms"] for r in mine)
        summary.add_row(str(size), caches, f"{statistics.median(r['peak_mb'] for r in mine):,.0f}",
                        f"{statistics.median(r['rate'] for r in mine):.2f}", f"{cpu:.1f}", f"{cpu / base:.3f}")
    console.print(summary)


if __name__ == "__main__":
    main()
