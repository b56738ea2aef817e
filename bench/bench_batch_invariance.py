"""Does a record's verdict depend on the batch it is scored in? Per backbone dtype, one run.

    COLUMNS=200 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_batch_invariance.py [--records 120] [--small 7]

The same simulated records (pipeline.simulate, seed 11) go through the ``transformer`` detector
once as one batch and once in batches of ``--small``, with both caches off, so every window is
scored in a differently padded batch. A replay after a crash or rebalance scores records in other
batches than the first time: this says how far its scores can move. Prints, per dtype, the
records whose flagged state or set of categories differs, and the largest score difference of a
finding present in both runs.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.base import DetectorConfig  # noqa: E402
from detectors.transformer import CPU_DTYPES, TransformerDetector  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402


def _by_key(findings) -> dict:
    return {(f.side.value, f.category.value, f.part): f.score for f in findings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=120)
    parser.add_argument("--small", type=int, default=7, help="records per batch of the second run")
    parser.add_argument("--dtypes", default="float32,bfloat16", help=f"comma-separated, of {', '.join(CPU_DTYPES)}")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    records = [r.log for r in simulate(args.records, seed=11, end=datetime(2026, 1, 2, tzinfo=UTC))]
    table = Table(title=f"transformer detector, {len(records)} simulate records: one batch against batches of {args.small}")
    for col in ("dtype", "records that differ", "findings in both", "max score difference"):
        table.add_column(col)
    for dtype in args.dtypes.split(","):
        det = TransformerDetector.create(DetectorConfig(device="cpu", options={"dtype": dtype, "cache_size": "0", "feature_cache_size": "0"}))
        try:
            whole = det.detect(records)
            pieces = [found for i in range(0, len(records), args.small) for found in det.detect(records[i : i + args.small])]
        finally:
            det.close()
        differ = sum((bool(a), {f.category for f in a}) != (bool(b), {f.category for f in b}) for a, b in zip(whole, pieces, strict=True))
        # score differences of the findings present in both runs
        gaps = [abs(a[k] - b[k]) for a, b in ((_by_key(x), _by_key(y)) for x, y in zip(whole, pieces, strict=True))
                for k in a.keys() & b.keys()]
        table.add_row(dtype, str(differ), str(len(gaps)), f"{max(gaps, default=0.0):.4f}")
    Console().print(table)


if __name__ == "__main__":
    main()
