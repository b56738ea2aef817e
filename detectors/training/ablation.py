"""Ablations run by hand (not by ``train``), allowed sources only.

    HF_HUB_OFFLINE=1 nice .venv/bin/python -m detectors.training.ablation            # data
    HF_HUB_OFFLINE=1 nice .venv/bin/python -m detectors.training.ablation heads      # head settings

``heads``: the shipped (hold-out) recipe's heads trained with other settings (epochs, weight
decay, width, learning rate) on folds 1-3 and scored on fold 0, cross-fitted as in the model
card: does the head's optimisation limit cross-source quality? About 2 minutes on 2 cores.

Data ablation:
Question: do the sources v1.0 held out for validation (cross-fitting fold 0) help on sources a
model has never seen? For each of folds 1-3, MLP heads (no lexical view) are trained on the other
folds, once without and once with fold 0, and score the fold; the pooled out-of-fold logits of
folds 1-3 are then cross-fitted as in the model card. Needs the feature cache written by
``misuse-monitor train`` (data/training-cache). Allowed sources only; about 6 minutes on 2 cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import torch

import sys
from dataclasses import replace

from detectors.training.data import assemble, fold_of
from detectors.training.modeling import SIDE_LABELS, WindowConfig
from pipeline.schemas import Side
from detectors.training.train import FeatureCache, TrainConfig, _by_side, _mean_f1, cross_fitted, side_logits, train_heads


def main(cache_path: Path = Path("data/training-cache/features.pt")) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t0 = time.monotonic()
    ds = assemble(seed=1234)
    every = _by_side(list(ds.validation) + list(ds.train))
    cache = FeatureCache(cache_path)
    window = WindowConfig()
    feats = {s: torch.stack([cache.data[FeatureCache.key(e.text, window)].float() for e in every[s]]) for s in every}
    folds = {s: np.array([fold_of(e) for e in every[s]]) for s in every}
    torch.set_num_threads(1)
    config = TrainConfig(output_dir=Path("unused"))
    for variant in ("without_fold0", "with_fold0"):
        oof = {s: np.zeros((len(every[s]), len(SIDE_LABELS[s])), dtype=np.float32) for s in every}
        for k in (1, 2, 3):
            fit = {s: (folds[s] != k) & ((folds[s] != 0) if variant == "without_fold0" else True) for s in every}
            heads = train_heads(
                {s: feats[s][torch.from_numpy(fit[s])] for s in every},
                {s: [e for e, m in zip(every[s], fit[s], strict=True) if m] for s in every},
                config,
            )
            for s in every:
                test = folds[s] == k
                oof[s][test] = side_logits(heads, s, feats[s][torch.from_numpy(test)])
        for s in every:
            mask = folds[s] >= 1
            result = cross_fitted(oof[s][mask], [e for e, m in zip(every[s], mask, strict=True) if m], s, 0.9)
            labels = " ".join(
                f"{label}:P{m.precision or 0:.3f}/R{m.recall or 0:.3f}/F1 {m.f1 or 0:.3f}/n{m.support}" for label, m in result.items()
            )
            print(f"{variant} {s.value} meanF1={_mean_f1(result):.3f} {labels} ({time.monotonic() - t0:.0f} s)")


HEAD_VARIANTS: dict[str, dict] = {
    "shipped: 40 epochs, wd 0.01, hidden 256, lr 2e-3": {},
    "5 epochs": {"epochs": 5},
    "10 epochs": {"epochs": 10},
    "20 epochs": {"epochs": 20},
    "weight decay 0.1": {"weight_decay": 0.1},
    "10 epochs, weight decay 0.1": {"epochs": 10, "weight_decay": 0.1},
    "hidden 64": {"heads_hidden": 64},
    "lr 5e-4": {"learning_rate": 5e-4},
}


def heads_sweep(cache_path: Path = Path("data/training-cache/features.pt")) -> None:
    from rich.console import Console
    from rich.table import Table

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ds = assemble(seed=1234)
    every = _by_side(list(ds.validation) + list(ds.train))
    cache = FeatureCache(cache_path)
    window = WindowConfig()
    feats = {s: torch.stack([cache.data[FeatureCache.key(e.text, window)].float() for e in every[s]]) for s in every}
    held = {s: np.array([fold_of(e) == 0 for e in every[s]]) for s in every}
    fit_ex = {s: [e for e, h in zip(every[s], held[s], strict=True) if not h] for s in every}
    val_ex = {s: [e for e, h in zip(every[s], held[s], strict=True) if h] for s in every}
    torch.set_num_threads(1)
    table = Table(title="heads on the frozen backbone, fold 0 cross-fitted (F1; labels with >= 20 positives)")
    for col in ("variant", "prompt mean F1", "cyber", "misinfo", "jailbreak", "other_harm", "completion other_harm"):
        table.add_column(col)
    for name, change in HEAD_VARIANTS.items():
        config = replace(TrainConfig(output_dir=Path("unused")), **change)
        heads = train_heads({s: feats[s][torch.from_numpy(~held[s])] for s in every}, fit_ex, config)
        result = {
            s: cross_fitted(side_logits(heads, s, feats[s][torch.from_numpy(held[s])]), val_ex[s], s, config.target_precision)
            for s in every
        }
        p, c = result[Side.PROMPT], result[Side.COMPLETION]
        table.add_row(
            name, f"{_mean_f1(p):.3f}", *(f"{p[k].f1 or 0:.3f}" for k in ("cyber_abuse", "misinformation", "jailbreak", "other_harm")),
            f"{c['other_harm'].f1 or 0:.3f}",
        )
    Console().print(table)


if __name__ == "__main__":
    heads_sweep() if sys.argv[1:] == ["heads"] else main()
