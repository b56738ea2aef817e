"""CPU cost of detecting the language of every screened part (issue 11's unscreened_language signal).

    .venv/bin/python bench/bench_language_cost.py [--records 3000] [--rounds 2]

On the same simulated records, process CPU per record of CLD2 language detection
(detectors/language.py, head of each text, its cache cleared before each run), interleaved:
* ``joined prompt + completion``: what the scorer detected until 2026-12-02 (two texts);
* ``every screened part``: what it detects now (one text per part of ``screened_parts()``).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors import language  # noqa: E402
from pipeline.schemas import InferenceLog  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402


def joined(records: list[InferenceLog]) -> None:
    for r in records:
        language.detect_language(r.prompt_text)
        if r.has_completion:
            language.detect_language(r.completion or "")


def per_part(records: list[InferenceLog]) -> None:
    for r in records:
        for part in r.screened_parts():
            language.detect_language(part.text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    records = [r.log for r in simulate(args.records, seed=7)]
    parts = sum(len(r.screened_parts()) for r in records)
    print(f"{len(records)} simulate records, {parts / len(records):.2f} screened parts per record")
    for round_ in range(1, args.rounds + 1):
        for name, fn in (("joined prompt + completion", joined), ("every screened part", per_part)):
            language._detect_head.cache_clear()
            started = time.process_time()
            fn(records)
            print(f"round {round_}: {name}: {(time.process_time() - started) / len(records) * 1e6:.1f} us of CPU per record")


if __name__ == "__main__":
    main()
