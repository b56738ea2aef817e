"""English behind accents (`ráñsömwárë`): what routing its accent-folded text to the English
member changes (the rule: docs/model-releases.md, "English behind accents").

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_folded_routing.py [--route-records 2000]

"Before" is the same code with the fold turned off (``detectors.routed.fold_accents`` replaced
by the identity), so both sides run in one process on the same records:

1. the default detector on the hostile review's ten cyber requests written with accents
   (tests/fixtures/obfuscation.py ``diacritics``) and on the held-out benign requests so written:
   requests flagged ``cyber_abuse`` and benign requests given any harm category;
2. routes of ``--route-records`` simulated records (seed 11, bench/bench_routing.py's set);
3. the machine-translated CyberSecEval prompts (``../shared/data/cyberseceval``, allowed data):
   records routed to E5, of those also routed to English after, and the benign (FRR) records
   whose route changed, scored before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from detectors import routed as routed_module  # noqa: E402
from pipeline.schemas import Category, Finding, InferenceLog  # noqa: E402

HARMS = {Category.CYBER_ABUSE, Category.MISINFORMATION, Category.OTHER_HARM}


@contextmanager
def fold(on: bool):
    real = routed_module.fold_accents
    routed_module.fold_accents = real if on else (lambda text: text)
    try:
        yield
    finally:
        routed_module.fold_accents = real


def routes(logs: Sequence[InferenceLog], on: bool) -> list[tuple[bool, bool]]:
    with fold(on):
        return [routed_module.RoutedTransformerDetector.routes(log) for log in logs]


def scored(detector, logs: Sequence[InferenceLog], on: bool) -> list[list[Finding]]:
    with fold(on):
        return detector.detect(list(logs))


def count(found: list[list[Finding]], wanted: Callable[[list[Finding]], bool]) -> int:
    return sum(1 for f in found if wanted(f))


def cyber(findings: list[Finding]) -> bool:
    return any(f.category is Category.CYBER_ABUSE for f in findings)


def harm(findings: list[Finding]) -> bool:
    return any(f.category in HARMS for f in findings)


def cyberseceval_translated(data: Path) -> tuple[list[InferenceLog], list[InferenceLog]]:
    """The machine-translated CyberSecEval prompts (``data/cyberseceval``, allowed data) as logs:
    the prompt injections (system prompt and user turn) and the benign FRR prompts."""
    from tests.fixtures.obfuscation import plain_log

    root = data / "cyberseceval"
    injections = [
        InferenceLog.model_validate({"schema": "inference-log/v1", "request_id": f"inj-{row['prompt_id']}-{i}",
                                     "timestamp": "2026-01-01T00:00:00Z", "model": "m", "tenant_id": "t", "user_id": "u",
                                     "messages": [{"role": "system", "content": row["test_case_prompt"]},
                                                  {"role": "user", "content": row["user_input"]}]})
        for i, row in enumerate(json.loads((root / "prompt_injection_multilingual_machine_translated.json").read_text()))
    ]
    frr = [plain_log(row["mutated_prompt"], f"frr-{row['prompt_id']}-{i}")
           for i, row in enumerate(json.loads((root / "frr_multilingual_machine_translated.json").read_text()))]
    return injections, frr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--route-records", type=int, default=2000)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    args = parser.parse_args()

    from detectors.base import DetectorConfig
    from detectors.registry import build
    from pipeline.simulate import simulate
    from tests.fixtures.obfuscation import BENIGN_HELD_OUT, HARMFUL_CYBER, diacritics, plain_log

    (detector,) = build(["transformer_routed"], DetectorConfig())

    harmful = [plain_log(diacritics(t), f"acc-h-{i}") for i, t in enumerate(HARMFUL_CYBER)]
    benign = [plain_log(diacritics(t), f"acc-b-{i}") for i, t in enumerate(BENIGN_HELD_OUT)]
    for on in (False, True):
        h, b = scored(detector, harmful, on), scored(detector, benign, on)
        print(f"1. fold {'on ' if on else 'off'}: accented cyber requests flagged cyber_abuse {count(h, cyber)}/{len(h)}; "
              f"accented benign requests with a harm category {count(b, harm)}/{len(b)}; "
              f"routes of the requests {Counter(routes(harmful, on))}")

    end = datetime(2026, 1, 2, tzinfo=UTC)
    logs = [r.log for r in simulate(args.route_records, seed=11, end=end)]
    before, after = routes(logs, False), routes(logs, True)
    changed = sum(1 for x, y in zip(before, after, strict=True) if x != y)
    print(f"2. simulate ({len(logs)} records, seed 11): {changed} change route ({100 * changed / len(logs):.2f}%); "
          f"before {Counter(before)}, after {Counter(after)}")

    injections, frr = cyberseceval_translated(args.data)
    for name, group in (("injections", injections), ("benign (FRR)", frr)):
        before, after = routes(group, False), routes(group, True)
        to_e5 = [i for i, (_, e5) in enumerate(before) if e5]
        added = [i for i in to_e5 if after[i][0] and not before[i][0]]
        lost = [i for i, (x, y) in enumerate(zip(before, after, strict=True)) if (x[0] and not y[0]) or (x[1] and not y[1])]
        print(f"3. CyberSecEval translated {name}: {len(group)} records, {len(to_e5)} routed to E5; "
              f"{len(added)} of those now also to English ({100 * len(added) / max(1, len(to_e5)):.1f}%); "
              f"{len(lost)} lose a member")
        if name.startswith("benign") and added:
            moved = [group[i] for i in added]
            was, now = scored(detector, moved, False), scored(detector, moved, True)
            newly = sum(1 for x, y in zip(was, now, strict=True) if harm(y) and not harm(x))
            print(f"   benign records whose route changed: harm category before {count(was, harm)}, after {count(now, harm)}; "
                  f"newly flagged {newly}")
    detector.close()


if __name__ == "__main__":
    main()
