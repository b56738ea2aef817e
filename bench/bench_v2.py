"""Records/s of detector-v2 artifacts next to the shipped v1.0.0, side by side in one run.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_v2.py --model-dir RUN [--model-dir RUN2] [--records 60] [--threads 2]

The same simulated records (pipeline.simulate, fixed seed) go through the shipped
``transformer`` detector and through a ``transformer`` detector loaded from each given artifact
(its manifest names the backbone: MiniLM, mpnet or multilingual E5), cold caches, one pass
each, in the order given; then the language detection alone (detectors/language.py). Prints
records/s and the ratio to v1.0.0. Numbers depend on the machine's load: report them with the
command and the load average printed at the end.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--model-dir", type=Path, action="append", default=[])
    args = parser.parse_args()

    from detectors.base import DetectorConfig
    from detectors.language import detect_language
    from detectors.transformer import DEFAULT_ARTIFACT_DIR, TransformerDetector
    from pipeline.simulate import simulate

    from datetime import UTC, datetime

    records = [r.log for r in simulate(args.records, seed=7, end=datetime(2026, 1, 2, tzinfo=UTC))]
    rows = []
    for directory in [DEFAULT_ARTIFACT_DIR, *args.model_dir]:
        det = TransformerDetector.create(DetectorConfig(model_dir=directory, device="cpu", threads=args.threads))
        started = time.perf_counter()
        for start in range(0, len(records), 32):
            det.detect(records[start : start + 32])
        elapsed = time.perf_counter() - started
        rows.append((det.detector_version, len(records) / elapsed))
        det.close()
    detect_language("warm the model up")
    started = time.perf_counter()
    for r in records:
        detect_language(r.prompt_text)
        if r.completion:
            detect_language(r.completion)
    lang_rate = len(records) / (time.perf_counter() - started)
    base = rows[0][1]
    print("| detector artifact | records/s | vs v1.0.0 |")
    print("|---|---|---|")
    for version, rate in rows:
        print(f"| {version} | {rate:.2f} | {rate / base:.2f}x |")
    print(f"| language detection only (CLD2, prompt + completion) | {lang_rate:.0f} | {lang_rate / base:.0f}x |")
    print(f"records: {len(records)}, load average: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
