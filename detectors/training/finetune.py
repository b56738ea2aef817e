"""LoRA fine-tuning of the backbone together with the heads (peft), the v2 recipe.

The v1 recipe (train.py) keeps all-MiniLM-L6-v2 frozen and trains small heads on its pooled
features. Here low-rank adapters (peft LoRA) on every attention and feed-forward projection of
the six layers are trained jointly with the heads, so the features themselves adapt to the
task. Steps (deterministic for a seed and the installed data packages):

1. assemble the examples (detectors.training.data); fold 0 (the held-out sources plus the
   hash-split share, data.fold_of) is never trained on: it calibrates and validates;
2. reference: heads trained on frozen features of the other folds (train.train_heads, the
   v1 recipe), scored on fold 0 like the fine-tuned model, for a like-for-like comparison;
3. fine-tune adapters + fresh heads on the same examples' first windows (AdamW, linear
   warm-up and decay, batches bucketed by length so that padding costs little on the CPU);
4. merge the adapters into the backbone, encode fold 0, fit Platt scaling and thresholds for
   the stated precision there, and report cross-fitted P/R/F1 on fold 0 next to the frozen
   warm-start heads scored the same way (like for like: same data, same split);
5. write the artifact: manifest (with the LoRA settings), heads, calibration and the peft
   adapter directory (``adapter/``, about 1.4 MB). The backbone still comes from its package.

Cost on 2 CPU cores: one epoch is about 6-7 minutes (11k examples; measured numbers are in the
training report), the whole recipe well under the hour the issue allows.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from detectors.training.data import Example, fold_of
from detectors.training.modeling import (
    ADAPTER_DIR,
    FEATURE_LAYERS,
    MAX_POOL_LAYERS,
    Encoder,
    Heads,
    Window,
    make_windows,
    pad_batch,
    pooled_features,
    save_artifact,
    seal_artifact,
)
from detectors.training.train import (
    FeatureCache,
    TrainConfig,
    _by_side,
    _report,
    artifact_manifest,
    calibrate_heads,
    cross_fitted,
    encode_examples,
    heads_loss,
    prepare,
    set_seed,
    side_logits,
    side_tensors,
    train_heads,
    validation_report,
)
from pipeline.schemas import Side

ARTIFACT_VERSION = "transformer-minilm-v2.0.0"
FROZEN_VERSION = "transformer-minilm-v1.0.0"  # the same recipe without LoRA
# Every attention projection and both feed-forward projections of the six encoder layers (the
# pooler is not used by the features, so it gets no adapter).
LORA_TARGETS = (
    r".*encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|intermediate\.dense|output\.dense)"
)
BACKBONE_NAME = "sentence-transformers/all-MiniLM-L6-v2"


@dataclass(frozen=True)
class LoraSettings:
    """Adapter shape and optimisation; pinned in the manifest of the artifact it made."""

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    epochs: int = 2
    learning_rate: float = 5e-4  # adapters
    heads_learning_rate: float = 1e-3
    batch_size: int = 16
    warmup_share: float = 0.06
    bucket_batches: int = 50  # batches drawn together, then sorted by length (padding)
    target_modules: str = field(default=LORA_TARGETS)


def length_batches(lengths: Sequence[int], batch_size: int, bucket: int, gen: torch.Generator) -> list[list[int]]:
    """Shuffled batches of indices with similar lengths: shuffle, cut into buckets of
    ``bucket`` batches, sort each bucket by length and cut it into batches."""
    perm = torch.randperm(len(lengths), generator=gen).tolist()
    size = batch_size * bucket
    out: list[list[int]] = []
    for start in range(0, len(perm), size):
        part = sorted(perm[start : start + size], key=lambda i: lengths[i])
        out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return out


def _schedule(total: int, warmup_share: float) -> Callable[[int], float]:
    warmup = max(1, int(total * warmup_share))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def finetune(
    encoder: Encoder,
    heads: Heads,
    examples: dict[Side, Sequence[Example]],
    windows: dict[Side, Sequence[Window]],
    settings: LoraSettings,
    seed: int,
    progress: Callable[[str], None] = lambda _: None,
):
    """Train LoRA adapters on ``encoder.model`` and ``heads`` jointly; returns the peft model
    (adapters not merged: save them first, then ``merge_and_unload``)."""
    from peft import LoraConfig, get_peft_model

    set_seed(seed)
    model = get_peft_model(
        encoder.model,
        LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, target_modules=settings.target_modules),
    )
    adapters = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": adapters, "lr": settings.learning_rate},
            {"params": list(heads.parameters()), "lr": settings.heads_learning_rate},
        ],
        weight_decay=0.01,
    )
    examples = {side: exs for side, exs in examples.items() if exs}
    data = {side: side_tensors(examples[side], side) for side in examples}
    lengths = {side: [len(w.input_ids) for w in windows[side]] for side in examples}
    gen = torch.Generator().manual_seed(seed)
    per_epoch = sum(math.ceil(len(examples[s]) / settings.batch_size) for s in examples)
    total = per_epoch * settings.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _schedule(total, settings.warmup_share))
    model.train()
    heads.train()
    step, started, seen, running = 0, time.monotonic(), 0, 0.0
    report_every = max(1, total // 40)
    for epoch in range(settings.epochs):
        batches = [
            (side, idx)
            for side in examples
            for idx in length_batches(lengths[side], settings.batch_size, settings.bucket_batches, gen)
        ]
        order = torch.randperm(len(batches), generator=gen).tolist()
        for b in order:
            side, idx = batches[b]
            ids, mask = pad_batch([windows[side][i] for i in idx])
            feats = pooled_features(model, ids, mask, FEATURE_LAYERS, MAX_POOL_LAYERS)
            y, sub, w = data[side]
            t = torch.tensor(idx)
            loss = heads_loss(heads, side, feats, y[t], sub[t], w[t])
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapters + list(heads.parameters()), 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            value = float(loss.detach())
            running = 0.98 * running + 0.02 * value if step > 1 else value
            if step % report_every == 0 or step == total:
                elapsed = time.monotonic() - started
                eta = elapsed / step * (total - step)
                progress(
                    f"fine-tuning epoch {epoch + 1}/{settings.epochs} step {step}/{total} "
                    f"loss {running:.3f} {seen / elapsed:.1f} windows/s, ~{eta / 60:.1f} min left"
                )
    model.eval()
    heads.eval()
    return model


def save_adapter(model, directory: Path) -> None:
    """peft's own format (adapter_config.json + adapter_model.safetensors); the base model path
    is replaced by the backbone's public name (the local path differs per machine), and peft's
    generated README is dropped (the model card lives in docs/)."""
    if directory.exists():
        shutil.rmtree(directory)
    model.save_pretrained(str(directory))
    (directory / "README.md").unlink(missing_ok=True)
    config_path = directory / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = BACKBONE_NAME
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def run_holdout_training(config: TrainConfig, settings: LoraSettings | None, progress: Callable[[str], None] = print) -> dict:
    """The hold-out recipe (module docstring); returns the training report (also written).

    With ``settings`` the backbone is fine-tuned with LoRA (v2). Without, the frozen-backbone
    heads of step 1 are shipped, calibrated on fold 0: that is the v1.0 recipe."""
    started = time.monotonic()
    dataset, encoder = prepare(config, progress)
    every = _by_side(list(dataset.validation) + list(dataset.train))
    held = {s: np.array([fold_of(e) == 0 for e in every[s]]) for s in every}
    fit_ex = {s: [e for e, h in zip(every[s], held[s], strict=True) if not h] for s in every}
    val_ex = {s: [e for e, h in zip(every[s], held[s], strict=True) if h] for s in every}

    config.output_dir.mkdir(parents=True, exist_ok=True)
    # 1. the frozen-backbone reference on the same split (features cached on disk by text hash).
    t0 = time.monotonic()
    cache = FeatureCache(config.cache_dir / ("features-maxpool.pt" if MAX_POOL_LAYERS else "features.pt"))
    frozen = {s: encode_examples(encoder, every[s], cache, config.window, config.encode_batch_size, progress) for s in every}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the heads are tiny; see train.run_training
    heads = train_heads({s: frozen[s][torch.from_numpy(~held[s])] for s in every}, fit_ex, config)
    torch.set_num_threads(threads)
    frozen_logits = {s: side_logits(heads, s, frozen[s][torch.from_numpy(held[s])]) for s in every}
    warm_s = time.monotonic() - t0

    if settings is not None:
        # 2. LoRA + fresh heads (the frozen heads above fit the training folds almost perfectly,
        # loss ~0.004, which would leave the adapters no gradient to learn from).
        t1 = time.monotonic()
        set_seed(config.seed)
        heads = Heads(hidden=config.heads_hidden)
        windows = {s: [make_windows(encoder.tokenizer, e.text, config.window)[0] for e in fit_ex[s]] for s in every}
        model = finetune(encoder, heads, fit_ex, windows, settings, config.seed, progress)
        finetune_s = time.monotonic() - t1
        config.output_dir.mkdir(parents=True, exist_ok=True)
        save_adapter(model, config.output_dir / ADAPTER_DIR)
        encoder.model = model.merge_and_unload().eval()
        # 3. features of the held-out fold with the tuned backbone.
        t2 = time.monotonic()
        val_windows = {s: [make_windows(encoder.tokenizer, e.text, config.window)[0] for e in val_ex[s]] for s in every}
        tuned = {s: encoder.features(val_windows[s], batch_size=config.encode_batch_size) for s in every}
        logits = {s: side_logits(heads, s, tuned[s]) for s in every}
    else:
        finetune_s, t2 = 0.0, time.monotonic()
        shutil.rmtree(config.output_dir / ADAPTER_DIR, ignore_errors=True)
        logits = frozen_logits
    # Calibrate and validate on the held-out fold.
    calibration = calibrate_heads(logits, val_ex, config.target_precision)
    crossfit = {s.value: _report(cross_fitted(logits[s], val_ex[s], s, config.target_precision)) for s in every}
    frozen_crossfit = {s.value: _report(cross_fitted(frozen_logits[s], val_ex[s], s, config.target_precision)) for s in every}
    in_sample = validation_report(calibration, logits, val_ex)
    calibrate_s = time.monotonic() - t2

    manifest = artifact_manifest(
        config,
        ARTIFACT_VERSION if settings is not None else FROZEN_VERSION,
        adapter=asdict(settings) if settings is not None else None,
    )
    save_artifact(config.output_dir, manifest, heads, calibration, write_manifest=False)
    for stale in ("lexical.safetensors", "evaluation-report.json"):
        # An evaluation report belongs to the artifact it scored; v2 has no lexical view.
        (config.output_dir / stale).unlink(missing_ok=True)
    manifest = seal_artifact(config.output_dir, manifest)
    report = {
        "version": manifest.version,
        "recipe": "lora" if settings is not None else "holdout",
        "seed": config.seed,
        "target_precision": config.target_precision,
        "lora": asdict(settings) if settings is not None else None,
        "data": dataset.stats,
        "examples": {
            "fine_tuned_on": {s.value: len(fit_ex[s]) for s in every},
            "calibrated_on_held_out_fold": {s.value: len(val_ex[s]) for s in every},
        },
        "timing_s": {
            "frozen_reference": round(warm_s, 1),
            "fine_tune": round(finetune_s, 1),
            "calibrate": round(calibrate_s, 1),
            "total": round(time.monotonic() - started, 1),
            "torch_threads": torch.get_num_threads(),
        },
        "thresholds": {side: {label: asdict(c) for label, c in labels.items()} for side, labels in calibration.items()},
        "validation_cross_fitted": crossfit,
        "validation_cross_fitted_frozen_reference": frozen_crossfit,
        "validation_in_sample_thresholds": {side: _report(m) for side, m in in_sample.items()},
    }
    (config.output_dir / "training-report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    progress(f"artifact written to {config.output_dir} in {report['timing_s']['total']} s")
    return report
