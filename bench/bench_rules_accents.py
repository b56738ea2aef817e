"""English behind accents in the rules detector: the accent-folded reading, off and on in one
process (the rule: docs/obfuscation-eval.md, "Accents in the rules detector").

    PYTHONPATH=. .venv/bin/python bench/bench_rules_accents.py [--records 2000] [--rounds 7]

"Off" is the same code with ``detectors.rules.folded_reading`` returning None, so both sides run
on the same records:

1. the ten cyber requests of tests/fixtures/obfuscation.py written with accents (``diacritics``):
   flagged ``cyber_abuse`` by the rules, and how many of those carry the obfuscation signal;
2. the 22 benign requests so written: given a harm category;
3. the machine-translated CyberSecEval prompts (``../shared/data/cyberseceval``, allowed data):
   records whose rules findings change, and benign (FRR) records that gain a harm category, listed;
4. ``--records`` simulated records (seed 11): records whose rules findings change, listed;
5. CPU of ``RulesDetector.detect`` per simulate record, off and on interleaved over ``--rounds``
   rounds, with an A/A pair (off against off) for the noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from detectors import rules as rules_module  # noqa: E402
from pipeline.schemas import Category, Finding, InferenceLog  # noqa: E402

HARMS = {Category.CYBER_ABUSE, Category.MISINFORMATION, Category.OTHER_HARM}


@contextmanager
def folded(on: bool):
    real = rules_module.folded_reading
    rules_module.folded_reading = real if on else (lambda text: None)
    try:
        yield
    finally:
        rules_module.folded_reading = real


def detect(logs: Sequence[InferenceLog], on: bool) -> list[list[Finding]]:
    with folded(on):
        return rules_module.RulesDetector().detect(list(logs))


def key(findings: list[Finding]) -> list[tuple[str, str, tuple[str, ...]]]:
    return sorted((f.category.value, f.side.value, tuple(s.value for s in f.signals)) for f in findings)


def harm(findings: list[Finding]) -> bool:
    return any(f.category in HARMS for f in findings)


def changes(logs: Sequence[InferenceLog]) -> list[tuple[InferenceLog, list[Finding], list[Finding]]]:
    off, on = detect(logs, False), detect(logs, True)
    return [(log, x, y) for log, x, y in zip(logs, off, on, strict=True) if key(x) != key(y)]


def show(log: InferenceLog, off: list[Finding], on: list[Finding]) -> str:
    text = " ".join(p.text for p in log.screened_parts())[:140].replace("\n", " ")
    return f"   {log.request_id}: {[k[0] for k in key(off)]} -> {[k[0] for k in key(on)]}: {text!r}"


def cpu_per_record(logs: Sequence[InferenceLog], on: bool) -> float:
    from detectors import normalize

    for cache in (normalize._plain_and_base, normalize.cached_readings, normalize.folded_reading):
        cache.cache_clear()
    with folded(on):
        detector = rules_module.RulesDetector()
        start = time.process_time()
        detector.detect(list(logs))
        return (time.process_time() - start) / len(logs) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()

    from pipeline.simulate import simulate
    from tests.fixtures.obfuscation import BENIGN_HELD_OUT, BENIGN_REQUESTS, HARMFUL_CYBER, diacritics, plain_log

    harmful = [plain_log(diacritics(t), f"acc-h-{i}") for i, t in enumerate(HARMFUL_CYBER)]
    benign = [plain_log(diacritics(t), f"acc-b-{i}") for i, t in enumerate([*BENIGN_REQUESTS, *BENIGN_HELD_OUT])]
    for on in (False, True):
        h, b = detect(harmful, on), detect(benign, on)
        cyber = [f for f in h if any(x.category is Category.CYBER_ABUSE for x in f)]
        signalled = sum(1 for f in cyber if any(x.category is Category.CYBER_ABUSE and x.signals for x in f))
        print(f"fold {'on ' if on else 'off'}: 1. accented cyber requests flagged cyber_abuse {len(cyber)}/{len(h)} "
              f"({signalled} with the obfuscation signal); 2. accented benign requests with a harm category "
              f"{sum(map(harm, b))}/{len(b)}")

    from bench_folded_routing import cyberseceval_translated  # bench/ is on sys.path when run as a script

    injections, frr = cyberseceval_translated(args.data)
    for name, group in (("benign (FRR)", frr), ("prompt injections", injections)):
        changed = changes(group)
        gained = [c for c in changed if harm(c[2]) and not harm(c[1])]
        print(f"3. CyberSecEval translated {name}: {len(group)} records, rules findings change on {len(changed)} "
              f"({100 * len(changed) / len(group):.2f}%); gain a harm category {len(gained)} "
              f"({100 * len(gained) / len(group):.2f}%)")
        for change in changed:
            print(show(*change))

    end = datetime(2026, 1, 2, tzinfo=UTC)
    logs = [r.log for r in simulate(args.records, seed=11, end=end)]
    changed = changes(logs)
    print(f"4. simulate ({len(logs)} records, seed 11): rules findings change on {len(changed)}")
    for change in changed:
        print(show(*change))

    off, on, aa = [], [], []
    cpu_per_record(logs, False)  # warm-up (ICU, regexes)
    for _ in range(args.rounds):
        off.append(cpu_per_record(logs, False))
        on.append(cpu_per_record(logs, True))
        aa.append(cpu_per_record(logs, False))
    ratio = statistics.median(b / a for a, b in zip(off, on, strict=True))
    noise = statistics.median(b / a for a, b in zip(off, aa, strict=True))
    print(f"5. rules CPU per simulate record ({args.rounds} interleaved rounds): off {statistics.median(off):.0f} us, "
          f"on {statistics.median(on):.0f} us, median ratio {ratio:.3f}x (A/A {noise:.3f}x)")


if __name__ == "__main__":
    main()
