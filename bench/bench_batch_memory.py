"""Peak RSS and records/s of scoring with the default detector, per ``detectors.batch_size``.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_batch_memory.py [--sizes 32 16] [--rounds 3] [--records 300]

Each measurement is a fresh process (the peak, VmHWM, is per process): load the default
detectors and the redactor as the stream does (two malloc arenas, ``Scorer.preload``), then
score the same simulated records in stream-sized batches (``batch.max_records``). Sizes
alternate round by round, so a load change on the shared machine hits every size alike.
Prints each run and the medians; the rule that uses them is in docs/benchmarks.md.
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
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def measure(batch_size: int, records: int) -> dict:
    """In the child: scoring peak RSS and records/s for one batch size."""
    from pipeline.memory import limit_malloc_arenas, peak_rss_mb

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
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(logs), size):
        scorer.score_each(logs[i : i + size])
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {"batch_size": batch_size, "loaded_mb": loaded, "peak_mb": peak_rss_mb(), "rate": records / elapsed,
            "cpu_ms": cpu / records * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 16])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.records)))
        return
    console = Console(width=160)
    runs: list[dict] = []
    table = Table(title=f"scoring peak RSS by detectors.batch_size (load average at start {os.getloadavg()[0]:.1f})")
    for col in ("round", "batch size", "RSS after load MB", "peak RSS MB", "records/s", "CPU ms/record", "load"):
        table.add_column(col, justify="right")
    for round_no in range(1, args.rounds + 1):
        for size in args.sizes:
            child = subprocess.run([sys.executable, __file__, "--child", str(size), "--records", str(args.records)],
                                   capture_output=True, text=True)
            if child.returncode != 0:
                raise SystemExit(child.stderr[-3000:])
            run = json.loads(child.stdout.strip().splitlines()[-1])
            runs.append(run)
            table.add_row(str(round_no), str(size), f"{run['loaded_mb']:,.0f}", f"{run['peak_mb']:,.0f}",
                          f"{run['rate']:.2f}", f"{run['cpu_ms']:.0f}", f"{os.getloadavg()[0]:.1f}")
    console.print(table)
    summary = Table(title="medians")
    for col in ("batch size", "peak RSS MB", "records/s", f"records/s vs {args.sizes[0]}"):
        summary.add_column(col, justify="right")
    base = statistics.median(r["rate"] for r in runs if r["batch_size"] == args.sizes[0])
    for size in args.sizes:
        mine = [r for r in runs if r["batch_size"] == size]
        rate = statistics.median(r["rate"] for r in mine)
        summary.add_row(str(size), f"{statistics.median(r['peak_mb'] for r in mine):,.0f}", f"{rate:.2f}", f"{rate / base:.2f}")
    console.print(summary)


if __name__ == "__main__":
    main()
