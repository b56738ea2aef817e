"""A greeting in another language before an English request: what the default detector flags.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_greetings.py

Through the default detector set (``transformer_routed``, caches off), on sets written for this
check (tests/fixtures/obfuscation.py; not from any training or reserved source):

* ``GREETINGS`` (five greetings x four joins) and ``GREETINGS_HELD_OUT`` (eight wrappers) around
  the 10 harmful cyber requests: recall (``cyber_abuse`` kept); around the 22 benign requests:
  how many get a harm category;
* ``GREETING_BENIGN_REVIEW`` (40) and ``GREETING_BENIGN_FRESH`` (20), benign questions behind a
  greeting or a framing clause: how many get a harm category, listed.

The clause readings tried on 2026-12-06 and left out (docs/benchmarks.md, "A greeting in another
language") were measured with this script's sets against the commit before them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from detectors.base import DetectorConfig  # noqa: E402
from detectors.registry import build  # noqa: E402
from pipeline.schemas import Category, Finding  # noqa: E402
from tests.fixtures.obfuscation import (  # noqa: E402
    BENIGN_HELD_OUT,
    BENIGN_REQUESTS,
    GREETING_BENIGN_FRESH,
    GREETING_BENIGN_REVIEW,
    GREETINGS,
    GREETINGS_HELD_OUT,
    HARMFUL_CYBER,
    plain_log,
)


def _harm(findings: list[Finding]) -> bool:
    return any(f.category is not Category.JAILBREAK for f in findings)


def main() -> None:
    detector = build(["transformer_routed"], DetectorConfig(options={"cache_size": "0", "feature_cache_size": "0"}))[0]
    benign = BENIGN_REQUESTS + BENIGN_HELD_OUT
    print("| set | wrappers | recall (`cyber_abuse`) | benign with a harm category |")
    print("|---|---|---|---|")
    for name, wrappers in (("GREETINGS", GREETINGS), ("GREETINGS_HELD_OUT", GREETINGS_HELD_OUT)):
        texts = [build_(t) for build_ in wrappers.values() for t in HARMFUL_CYBER + benign]
        found = detector.detect([plain_log(t, f"g-{i}") for i, t in enumerate(texts)])
        per = len(HARMFUL_CYBER) + len(benign)
        recall = false_pos = 0
        for k in range(len(wrappers)):
            chunk = found[k * per:(k + 1) * per]
            recall += sum(any(f.category is Category.CYBER_ABUSE for f in fs) for fs in chunk[: len(HARMFUL_CYBER)])
            false_pos += sum(_harm(fs) for fs in chunk[len(HARMFUL_CYBER):])
        print(f"| {name} | {len(wrappers)} | {recall}/{len(wrappers) * len(HARMFUL_CYBER)} | {false_pos}/{len(wrappers) * len(benign)} |")
    for name, texts in (("GREETING_BENIGN_REVIEW", GREETING_BENIGN_REVIEW), ("GREETING_BENIGN_FRESH", GREETING_BENIGN_FRESH)):
        found = detector.detect([plain_log(t, f"b-{i}") for i, t in enumerate(texts)])
        hits = [(t, sorted({f.category.value for f in fs} - {"jailbreak"})) for t, fs in zip(texts, found, strict=True) if _harm(fs)]
        print(f"\n{name}: {len(hits)}/{len(texts)} with a harm category")
        for text, categories in hits:
            print(f"- {', '.join(categories)}: {text}")
    detector.close()


if __name__ == "__main__":
    main()
