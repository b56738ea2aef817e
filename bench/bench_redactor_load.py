"""How long a fresh process takes to build the evidence redactor, with and without
``transformers.pipelines`` imported on the way (docs/benchmarks.md, "Loading the redactor
without transformers.pipelines").

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_redactor_load.py [--rounds 6]

Each round starts one fresh process per case, in alternation, so the machine's load falls on
every case alike:

* ``rules, deferred``: what a rules-only process (``mm classify --detector rules``, a scoring
  process of the rules detector) does now: ``PresidioRedactor.create()``;
* ``rules, eager``: what it did before: ``transformers.pipelines`` imported inside the build
  (Presidio's ``from transformers import pipeline``), then the same ``create()``;
* the same two in a process that has built the default detectors first (their models
  loaded; not timed): what the stream and a scoring process of the default detector do.

Each process reports its build time, its peak RSS, and a digest of the spans it finds in the
sentences of ``tests/fixtures/pii_cases.jsonl``, which must be the same in every case.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
CASES = ROOT / "tests" / "fixtures" / "pii_cases.jsonl"
KINDS = {
    "rules, deferred": ("rules", False),
    "rules, eager (before)": ("rules", True),
    "default detector, deferred": ("default", False),
    "default detector, eager (before)": ("default", True),
}


def child(detector: str, eager: bool) -> None:
    if detector == "default":  # the shipped detectors built, their models loaded (not timed)
        from pipeline.metrics import PipelineMetrics
        from pipeline.scoring import Scorer
        from pipeline.settings import Settings
        from prometheus_client import CollectorRegistry

        Scorer.from_settings(Settings(), PipelineMetrics(CollectorRegistry()))
    from pipeline import redact

    started = time.perf_counter()
    if eager:
        import transformers.pipelines  # noqa: F401 - what Presidio's import did before
    redactor = redact.PresidioRedactor.create()
    seconds = time.perf_counter() - started
    texts = [json.loads(line)["text"] for line in CASES.read_text().splitlines() if line.strip()]
    spans = [[(s.start, s.end, s.entity) for s in redactor.spans(t)] for t in texts]
    print(json.dumps({
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "spans": hashlib.sha256(json.dumps(spans).encode()).hexdigest()[:16],
        "pipelines_imported": "transformers.pipelines" in sys.modules,
    }))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--child", nargs=2, metavar=("DETECTOR", "EAGER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.child:
        child(args.child[0], args.child[1] == "1")
        return

    from rich.console import Console
    from rich.progress import track
    from rich.table import Table

    runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for _ in track(range(args.rounds), description="fresh processes"):
        for kind, (detector, eager) in KINDS.items():
            out = subprocess.run(
                [sys.executable, __file__, "--child", detector, "1" if eager else "0"],
                check=True, capture_output=True, text=True, cwd=ROOT,
            ).stdout
            runs[kind].append(json.loads(out.strip().splitlines()[-1]))
    table = Table(title=f"building the redactor, {args.rounds} fresh processes per case (medians)")
    for column in ("case", "build s", "peak RSS MB", "transformers.pipelines imported", "spans digest"):
        table.add_column(column)
    for kind, rows in runs.items():
        table.add_row(
            kind,
            f"{statistics.median(r['seconds'] for r in rows):.2f}",
            f"{statistics.median(r['peak_rss_mb'] for r in rows):.0f}",
            ", ".join(sorted({str(r["pipelines_imported"]) for r in rows})),
            ", ".join(sorted({r["spans"] for r in rows})),
        )
    Console(width=130).print(table)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
