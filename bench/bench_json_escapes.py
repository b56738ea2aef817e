"""JSON escaped a second time: what the structure reading's unescaping changes for the
transformer (the rule: docs/obfuscation-eval.md, "JSON escaped a second time").

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_json_escapes.py

The ten cyber requests and the held-out benign requests of tests/fixtures/obfuscation.py, each
as ``json_double`` (a JSON object serialised twice) and ``json_escaped`` (the same pasted after a
line of prose, without the outer quotes), scored by the shipped transformer with the unescaping
turned off (``detectors.normalize._escaped_json_pieces`` returning nothing) and on, in one
process. The readings' cost on simulate traffic: ``bench/bench_decoders.py --structure``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from detectors import normalize  # noqa: E402
from pipeline.schemas import Category  # noqa: E402

HARMS = {Category.CYBER_ABUSE, Category.MISINFORMATION, Category.OTHER_HARM}


def main() -> None:
    from detectors.base import DetectorConfig
    from detectors.transformer import TransformerDetector
    from tests.fixtures.obfuscation import BENIGN_HELD_OUT, HARMFUL_CYBER, json_double, json_escaped, plain_log

    real = normalize._escaped_json_pieces
    for on in (False, True):
        normalize._escaped_json_pieces = real if on else (lambda *args: [])
        normalize.structure_reading.cache_clear()  # its cache would hand one side the other's readings
        detector = TransformerDetector.create(DetectorConfig())  # fresh caches for each side
        try:
            for name, trick in (("json_double", json_double), ("json_escaped", json_escaped)):
                harmful = detector.detect([plain_log(trick(t), f"{name}-h-{i}") for i, t in enumerate(HARMFUL_CYBER)])
                benign = detector.detect([plain_log(trick(t), f"{name}-b-{i}") for i, t in enumerate(BENIGN_HELD_OUT)])
                cyber = sum(any(f.category is Category.CYBER_ABUSE for f in found) for found in harmful)
                harm = sum(any(f.category in HARMS for f in found) for found in benign)
                print(f"unescaping {'on ' if on else 'off'} {name}: cyber requests flagged cyber_abuse {cyber}/{len(harmful)}; "
                      f"benign requests with a harm category {harm}/{len(benign)}")
        finally:
            detector.close()
    normalize._escaped_json_pieces = real


if __name__ == "__main__":
    main()
