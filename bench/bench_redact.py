"""What PII redaction of evidence costs per record, next to the default detector's own time.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_redact.py [--records 200] [--threads N]

On the same simulated records (pipeline.simulate, fixed seed), in one process:
1. build the Presidio analyzer (import + spaCy model load: once per process);
2. the shipped transformer detector (score cache off) with PII redaction of its evidence,
   timing every call into the redactor;
3. the same detector and records with a redactor that finds nothing (the detector's own cost).
Reports redaction ms per record (averaged over all records: only reported findings get
evidence) and per redacted snippet, and its share of the detector's time per record; the
target is under 10%. Numbers depend on the machine's load: report them with the command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


class Timed:
    """Wraps a redactor and adds up the time spent in it."""

    def __init__(self, inner) -> None:  # noqa: ANN001
        self.inner, self.calls, self.seconds, self.chars = inner, 0, 0.0, 0

    def spans(self, text: str):  # noqa: ANN201
        t0 = time.perf_counter()
        try:
            return self.inner.spans(text)
        finally:
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            self.chars += len(text)


class Nothing:
    def spans(self, text: str) -> list:
        return []


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch
    from rich.console import Console
    from rich.table import Table

    from detectors.base import DetectorConfig
    from detectors.transformer import TransformerDetector
    from pipeline import redact
    from pipeline.simulate import simulate

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    records = [r.log for r in simulate(args.records, seed=11, end=datetime(2026, 1, 2, tzinfo=UTC))]

    t0 = time.perf_counter()
    presidio = redact.PresidioRedactor.create()
    built = time.perf_counter() - t0
    presidio.spans("warm up Jane Doe 555-867-5309")

    detector = TransformerDetector.create(DetectorConfig(options={"cache_size": "0"}))
    detector.detect(records[:4])  # warm-up

    timed = Timed(presidio)
    redact.install(timed)
    t0 = time.perf_counter()
    found = detector.detect(records)
    with_redaction = time.perf_counter() - t0

    redact.install(Nothing())
    t0 = time.perf_counter()
    detector.detect(records)
    without = time.perf_counter() - t0
    redact.install(None)

    n = len(records)
    flagged = sum(1 for f in found if f)
    findings = sum(len(f) for f in found)
    per_record_detector = without / n * 1000
    per_record_redact = timed.seconds / n * 1000
    table = Table(title=f"PII redaction cost, {n} simulated records ({flagged} flagged, {findings} findings)")
    for col in ("what", "value"):
        table.add_column(col)
    table.add_row("analyzer build (import + spaCy load, once per process)", f"{built:.2f} s")
    table.add_row("detector alone, ms/record (no-op redactor)", f"{per_record_detector:.1f}")
    table.add_row("detector with redaction, ms/record", f"{with_redaction / n * 1000:.1f}")
    table.add_row("redaction calls / chars per call", f"{timed.calls} / {timed.chars / max(timed.calls, 1):.0f}")
    table.add_row("redaction ms per call", f"{timed.seconds / max(timed.calls, 1) * 1000:.1f}")
    table.add_row("redaction ms/record (all records)", f"{per_record_redact:.2f}")
    table.add_row("redaction share of detector time", f"{per_record_redact / per_record_detector:.1%}")
    Console().print(table)


if __name__ == "__main__":
    main()
