"""Misinformation requests among benign sentences: the sentence pass with and without its deception cues.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_misinformation_cues.py [--records 2000]

The transformer's sentence pass re-reads alone the prompt sentences ``_names_harm`` matches
(detectors/transformer.py). ``without cues`` runs the shipped detector; ``with cues`` runs it with
``_names_harm`` also matching the deception cues below (the candidate of 2026-12-07, left out by
its rule). Both use one loaded model, side by side.

Sets (tests/fixtures/obfuscation.py): the harmful misinformation requests (held-out, mine, the
review's) and benign requests on the same topics, plus the cyber table's 22 benign requests,
each plain and among 60 benign sentences before and after (``padded``). Recall: records with a
``misinformation`` finding; benign: records with a finding other than ``jailbreak``. Then
simulate traffic: how many items the sentence pass adds, and which records' flag or categories
change. Only records with a text the cues match can change, so only those are scored.
The decision rule and its result: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import detectors.transformer as transformer_module  # noqa: E402
from pipeline.schemas import Category, Finding, InferenceLog  # noqa: E402

# The candidate, as written before it was measured (docs/benchmarks.md).
CUES = re.compile(
    r"\bfake\b|\bfabricat|\bmade[- ]up\b|\bmake up\b|\binvent(?:ed|s)?\b|\bhoax|\bpropaganda"
    r"|\b(?:dis|mis)information\b|\bconspirac"
    r"|\bfalse(?:ly)? (?:claim|news|stor|report|rumou?r|information|quote|statistic|evidence)"
    r"|\bclaiming that\b|\bconvincing\b|\bgo(?:es|ing)? viral\b"
    r"|\b(?:convince|persuade|trick|fool)s? (?:people|readers|voters|the public|everyone|them)\b"
    r"|\blooks? (?:like )?(?:real|legit(?:imate)?|authentic|genuine|official)\b",
    re.IGNORECASE,
)


@contextmanager
def cues(on: bool) -> Iterator[None]:
    shipped = transformer_module._names_harm
    if on:
        transformer_module._names_harm = lambda sentence: bool(CUES.search(sentence)) or shipped(sentence)
    try:
        yield
    finally:
        transformer_module._names_harm = shipped


class Counting:
    """Counts the items a detector scores and how many of them the sentence pass added."""

    def __init__(self, detector: transformer_module.TransformerDetector) -> None:
        self.items = self.sentences = 0
        score_items, sentence_pass = detector._score_items, detector._sentence_pass

        def counted_score(items: Sequence[object]) -> list[object]:
            self.items += len(items)
            return score_items(items)  # type: ignore[arg-type]

        def counted_pass(scored: Sequence[object]) -> list[object]:
            out = sentence_pass(scored)  # type: ignore[arg-type]
            self.sentences += len(out)
            return out

        detector._score_items = counted_score  # type: ignore[method-assign]
        detector._sentence_pass = counted_pass  # type: ignore[method-assign]


def _misinformation(findings: list[Finding]) -> bool:
    return any(f.category is Category.MISINFORMATION for f in findings)


def _harm(findings: list[Finding]) -> bool:
    return any(f.category is not Category.JAILBREAK for f in findings)


def _verdict(findings: list[Finding]) -> tuple[bool, frozenset[str]]:
    return bool(findings), frozenset(f.category.value for f in findings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=2000, help="simulate records (seed 7)")
    args = parser.parse_args()

    from detectors.base import DetectorConfig
    from pipeline.simulate import simulate
    from tests.fixtures import obfuscation as ob

    detector = transformer_module.TransformerDetector.create(DetectorConfig(options={"cache_size": "0"}))
    counting = Counting(detector)
    shapes: dict[str, Callable[[str, str], InferenceLog]] = {"plain": ob.plain_log, "padded": ob.TRANSFORMATIONS["padded_60"]}
    harmful = {"held-out": ob.HELD_OUT_MISINFORMATION, "mine": ob.HARMFUL_MISINFORMATION, "review": ob.REVIEW_MISINFORMATION}
    benign = {
        "held-out": ob.HELD_OUT_MISINFORMATION_BENIGN, "mine": ob.BENIGN_MISINFORMATION_TOPICS,
        "cyber table": ob.BENIGN_REQUESTS + ob.BENIGN_HELD_OUT,
    }
    console = Console()
    table = Table(title=f"misinformation findings, transformer {detector.detector_version}, sentence_pass={detector.sentence_pass}")
    for column in ("set", "shape", "without cues", "with cues"):
        table.add_column(column)
    changed_texts: list[str] = []
    for kind, sets, judge in (("harmful", harmful, _misinformation), ("benign", benign, _harm)):
        for name, texts in sets.items():
            for shape, build in shapes.items():
                logs = [build(t, f"{name}-{shape}-{i}") for i, t in enumerate(texts)]
                results = []
                for on in (False, True):
                    with cues(on):
                        results.append(detector.detect(logs))
                counts = [sum(judge(r) for r in res) for res in results]
                table.add_row(f"{kind}: {name}", shape, f"{counts[0]}/{len(logs)}", f"{counts[1]}/{len(logs)}")
                changed_texts += [
                    f"{kind} {name} {shape} #{i}: {_verdict(a)} -> {_verdict(b)}"
                    for i, (a, b) in enumerate(zip(*results, strict=True)) if _verdict(a) != _verdict(b)
                ]
    console.print(table)
    for line in changed_texts:
        console.print(line, markup=False)

    records = [r.log for r in simulate(args.records, seed=7, end=datetime(2026, 1, 2, tzinfo=UTC))]
    cued = [r for r in records if any(CUES.search(p.text) for p in r.screened_parts())]
    console.print(f"simulate (seed 7): {len(records)} records, {len(cued)} with a text the cues match; scoring those")
    runs = []
    for on in (False, True):
        counting.items = counting.sentences = 0
        with cues(on):
            runs.append((detector.detect(cued), counting.items, counting.sentences))
    (old, old_items, old_sentences), (new, new_items, new_sentences) = runs
    changed = [(r.request_id, _verdict(a), _verdict(b)) for r, a, b in zip(cued, old, new, strict=True) if _verdict(a) != _verdict(b)]
    # Items on every record without the cues: readings and structure pieces need no model, and the
    # sentence pass of the uncued records is the same in both runs (they cannot change), so the
    # denominator counts the cued records' old items plus the other records' first-pass items.
    with cues(False):
        others = [r for r in records if r not in cued]
        first_pass = sum(
            sum(1 for _ in transformer_module.iter_all(p.text)) + len(detector._structure_pieces(p))
            for r in others for p in r.screened_parts()
        )
    console.print(
        f"items scored on the cued records: {old_items} without cues ({old_sentences} by the sentence pass), "
        f"{new_items} with ({new_sentences}); added {new_items - old_items}, "
        f"{(new_items - old_items) / (old_items + first_pass):.2%} of at least {old_items + first_pass} items on all "
        f"{len(records)} records (the uncued records' sentence-pass items left out of the denominator)"
    )
    console.print(f"records whose flag or categories changed: {len(changed)}")
    for rid, a, b in changed:
        console.print(f"  {rid}: {a} -> {b}", markup=False)


if __name__ == "__main__":
    main()
