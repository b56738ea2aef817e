"""Data ablation behind v1.1's "train on every allowed source" (run by hand, not by ``train``).

    HF_HUB_OFFLINE=1 nice .venv/bin/python -m detectors.training.ablation

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

from detectors.training.data import assemble, fold_of
from detectors.training.modeling import SIDE_LABELS, WindowConfig
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


if __name__ == "__main__":
    main()
