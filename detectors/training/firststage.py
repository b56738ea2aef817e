"""Feasibility of a cheap first stage for the transformer detector (measurement, not shipped).

The issue allows a cheap first stage (e.g. a hashing-vectoriser linear model) that skips
clearly benign records, but only where it costs at most one point of recall. This module
measures what such a stage would clear, on allowed data only:

* a hashed word/char n-gram logistic regression per side, "any misuse" (detectors/training/
  lexical.py), fitted on folds 1-3 plus templated augmentation, the shipped heads' split;
* each side's threshold chosen on fold 0 (held-out allowed sources, never trained on): the
  highest one that still sends ``target_recall`` of fold 0's positives on to the backbone,
  a text counting as escalated when any of its serving windows reaches the threshold;
* reported: the share of fold 0's negatives it would clear (the speed-up's upper bound).

    HF_HUB_OFFLINE=1 .venv/bin/python -m detectors.training.firststage [--target-recall 0.99]

Result on 2026-11-29 (docs/benchmarks.md): at 99% recall it clears 3.4% of held-out benign
prompts and 17.4% of held-out benign completions, too little to pay for itself, so no first
stage ships. Nothing here reads the reserved sets.

``gate`` fits the same kind of model ("any misuse", both sides by default) for another job: not to skip records,
but to rank the windows of an earlier assistant turn so the transformer reads only the riskiest
(``history_windows``, detectors/transformer.py). It is fitted without the held-out sources
(folds 1-3 plus the augmentation), so bench/bench_history_gate.py measures the shipped ranker's
recall cost on held-out positives it never saw:

    HF_HUB_OFFLINE=1 .venv/bin/python -m detectors.training.firststage gate [--out DIR]

It writes to ``--out`` (default outside the source tree); shipping is copying that folder to
detectors/models/history-gate-v1 and committing it.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detectors.training.data import Example, assemble, fold_of
from detectors.training.lexical import LexicalConfig, LexicalModel, fit_lexical
from detectors.training.modeling import REFUSAL, WindowConfig, make_windows

DEFAULT_TARGET_RECALL = 0.99


def is_positive(example: Example) -> bool:
    """Misuse on this side (a refusal is not: a cleared refusal loses no finding)."""
    return any(label != REFUSAL for label in example.labels)


def window_texts(tokenizer, texts: Sequence[str], window: WindowConfig) -> tuple[list[str], list[int]]:
    """Every serving window of every text, and the index of the text each belongs to."""
    out, owner = [], []
    for i, text in enumerate(texts):
        for w in make_windows(tokenizer, text, window):
            out.append(text[w.char_start : w.char_end])
            owner.append(i)
    return out, owner


def max_logit_per_text(model: LexicalModel, texts: Sequence[str], tokenizer, window: WindowConfig) -> np.ndarray:
    windows, owner = window_texts(tokenizer, texts, window)
    out = np.full(len(texts), -np.inf)
    np.maximum.at(out, np.asarray(owner, dtype=np.int64), model.logits(windows)[:, 0])
    return out


def recall_threshold(max_logits: np.ndarray, target_recall: float) -> float:
    """Highest threshold t with at least ``target_recall`` of ``max_logits`` >= t."""
    ordered = np.sort(max_logits)
    k = math.floor((1.0 - target_recall) * len(ordered) + 1e-9)
    return float(ordered[min(k, len(ordered) - 1)])


def measure(window: WindowConfig | None = None, seed: int = 1234, target_recall: float = DEFAULT_TARGET_RECALL) -> dict:
    from transformers import AutoTokenizer

    from detectors.training.modeling import backbone_path
    from detectors.training.train import _by_side, _source_weights, first_window_texts

    started = time.monotonic()
    window = window or WindowConfig()
    config = LexicalConfig()
    tokenizer = AutoTokenizer.from_pretrained(str(backbone_path()), local_files_only=True)
    dataset = assemble(seed=seed)
    report: dict = {"target_recall": target_recall}
    for side, examples in _by_side(list(dataset.validation) + list(dataset.train)).items():
        held = np.array([fold_of(e) == 0 for e in examples])
        fit_ex = [e for e, h in zip(examples, held, strict=True) if not h]
        val_ex = [e for e, h in zip(examples, held, strict=True) if h]
        y = np.array([[is_positive(e)] for e in fit_ex], dtype=np.float32)
        model = fit_lexical(config, first_window_texts(tokenizer, fit_ex, window), y, _source_weights(fit_ex))
        positive = np.array([is_positive(e) for e in val_ex])
        logits = max_logit_per_text(model, [e.text for e in val_ex], tokenizer, window)
        threshold = recall_threshold(logits[positive], target_recall)
        escalated = logits >= threshold
        report[side.value] = {
            "threshold_logit": round(threshold, 3),
            "held_out_positives": int(positive.sum()),
            "held_out_negatives": int((~positive).sum()),
            "positives_escalated": round(float(escalated[positive].mean()), 4),
            "negatives_cleared": round(float((~escalated[~positive]).mean()), 4),
        }
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


GATE_VERSION = "history-gate-1.0.0"


def fit_gate(out: Path, window: WindowConfig | None = None, seed: int = 1234, sides: tuple[str, ...] = ("prompt", "completion")) -> dict:
    """Fit the history gate's ranker ("any misuse", held-out sources left out). Both sides by
    default: an earlier assistant turn is model output (or a forgery of it), so harmful
    completions are what it may carry besides requests."""
    from transformers import AutoTokenizer

    from detectors.training.lexical import save_gate
    from detectors.training.modeling import backbone_path
    from detectors.training.train import _source_weights, first_window_texts
    from pipeline.schemas import Side

    sides = tuple(Side(s) for s in sides)
    window = window or WindowConfig()
    tokenizer = AutoTokenizer.from_pretrained(str(backbone_path()), local_files_only=True)
    dataset = assemble(seed=seed)
    fit_ex = [e for e in list(dataset.validation) + list(dataset.train) if e.side in sides and fold_of(e) != 0]
    y = np.array([[is_positive(e)] for e in fit_ex], dtype=np.float32)
    model = fit_lexical(LexicalConfig(), first_window_texts(tokenizer, fit_ex, window), y, _source_weights(fit_ex))
    manifest = {
        "name": "history-gate",
        "version": GATE_VERSION,
        "label": "any misuse (data.Example labels other than refusal)",
        "trained_on": f"allowed sources (detectors/training/data.assemble), sides {', '.join(s.value for s in sides)}, folds 1-3 and templated augmentation; fold 0 (held-out sources) left out",
        "examples": len(fit_ex),
        "positives": int(y.sum()),
        "seed": seed,
        "command": "python -m detectors.training.firststage gate",
    }
    save_gate(out, model, manifest)
    return manifest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", nargs="?", choices=("measure", "gate"), default="measure")
    parser.add_argument("--target-recall", type=float, default=DEFAULT_TARGET_RECALL)
    parser.add_argument("--sides", default="prompt,completion", help="gate: the sides whose examples it is fitted on")
    parser.add_argument("--out", type=Path, default=Path.home() / ".cache" / "misuse-monitor" / "runs" / "history-gate")
    args = parser.parse_args()
    if args.command == "gate":
        from detectors.training.ship import ShippedTreeError, refuse_shipped_tree

        try:  # like train/evaluate: never into detectors/models/ (`--out detectors/models/history-gate-v1` replaced it)
            out = refuse_shipped_tree(args.out)
        except ShippedTreeError:
            parser.error(f"--out: {args.out} is inside the shipped models folder; fit the gate elsewhere and "
                         "copy it into detectors/models/ as a release step (docs/model-releases.md)")
        manifest = fit_gate(out, sides=tuple(args.sides.split(",")))
        print(f"wrote {manifest['version']} ({manifest['examples']} examples, {manifest['positives']} positive) to {args.out}")
        return
    from rich.console import Console
    from rich.table import Table

    report = measure(target_recall=args.target_recall)
    table = Table(title=f"cheap first stage at {args.target_recall:.0%} held-out recall ({report['seconds']} s)")
    for col in ("side", "held-out positives escalated", "held-out negatives cleared", "positives", "negatives"):
        table.add_column(col)
    for side in ("prompt", "completion"):
        r = report[side]
        table.add_row(side, f"{r['positives_escalated']:.1%}", f"{r['negatives_cleared']:.1%}", str(r["held_out_positives"]), str(r["held_out_negatives"]))
    Console().print(table)


if __name__ == "__main__":
    main()
