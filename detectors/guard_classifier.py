"""Bring-your-own sequence classifier: any local Hugging Face
AutoModelForSequenceClassification checkpoint (Prompt Guard 1/2, a fine-tuned DeBERTa...).

Labels come from the checkpoint's ``id2label`` and are translated to our taxonomy by
``options["label_map"]`` (JSON label -> "category[/subcategory]" or null for benign), else
by the Prompt Guard defaults of docs/taxonomy.md (BENIGN/LABEL_0 benign; INJECTION ->
jailbreak/prompt_injection; JAILBREAK, MALICIOUS, LABEL_1 -> jailbreak). A label that maps
nowhere stops ``create``: a silent "benign" for an unknown class would hide misuse.

What is scored: every part of a record on the configured sides (``InferenceLog.screened_parts``:
system prompt, each turn of the history, tool calls and results, prompt; completion, reasoning),
each on its own; a finding names its part, one per target and side (the strongest part).

Scores: softmax over the labels (sigmoid for ``problem_type=multi_label_classification`` and
for single-logit heads);
labels that map to the same target add up. Texts longer than the model's window are split
into overlapping windows and a text scores the maximum over its windows, the way Meta's
Prompt Guard inference code does; evidence points at the strongest window. Windows from the
whole micro-batch are sorted by length before batching, so padding stays small.

Options (each may be namespaced ``hf_classifier.<key>``): ``label_map``, ``sides`` (default
``prompt``: prompt-attack classifiers judge inputs), ``threshold`` (0.5, pinned; calibrate
per checkpoint), ``max_length`` (tokens per window; default the checkpoint's limit, at
most 512), ``stride`` (overlap tokens, default 64 or a quarter window), ``max_windows`` (per text, default 16:
the first ones and the last one are kept, bounding the cost of huge completions),
``revision``, ``model_dir``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from detectors._guard_common import (
    DetectorOptions,
    GuardConfigError,
    apply_threads,
    checkpoint_fingerprint,
    evidence,
    load_pretrained,
    load_tokenizer,
    parts_to_screen,
    require_complete_load,
    resolve_device,
    strongest_per_target,
)
from detectors.base import Detector, DetectorConfig
from detectors.taxonomy import Target
from pipeline.schemas import Category, Finding, InferenceLog, ScreenedPart, Side

DEFAULT_THRESHOLD = 0.5
DEFAULT_STRIDE = 64
DEFAULT_MAX_WINDOWS = 16
MAX_WINDOW_TOKENS = 512

# Prompt Guard conventions (v1: three classes; v2: binary LABEL_0/LABEL_1), casefolded.
DEFAULT_LABELS: dict[str, Target | None] = {
    "benign": None,
    "safe": None,
    "injection": Target(Category.JAILBREAK, "prompt_injection"),
    "jailbreak": Target(Category.JAILBREAK),
    "malicious": Target(Category.JAILBREAK),
}
_BINARY_DEFAULTS: dict[str, Target | None] = {"label_0": None, "label_1": Target(Category.JAILBREAK)}


def resolve_label_map(id2label: dict[int, str], overrides: dict[str, Target | None]) -> dict[int, Target | None]:
    """Class index -> target (None: benign). Raises GuardConfigError for unmapped labels."""
    table = dict(DEFAULT_LABELS)
    if len(id2label) == 2:
        table.update(_BINARY_DEFAULTS)  # LABEL_0/LABEL_1 only mean benign/malicious when binary
    table.update({k.casefold(): v for k, v in overrides.items()})
    resolved: dict[int, Target | None] = {}
    unmapped = []
    for index, label in sorted(id2label.items()):
        key = str(label).casefold()
        if key not in table:
            unmapped.append(label)
            continue
        resolved[int(index)] = table[key]
    if unmapped:
        raise GuardConfigError(
            f"hf_classifier: labels {unmapped} of the checkpoint have no mapping; set options['label_map'] "
            'to a JSON object such as {"LABEL_1": "jailbreak/prompt_injection", "LABEL_0": null}'
        )
    if all(target is None for target in resolved.values()):
        raise GuardConfigError("hf_classifier: every label maps to benign; nothing could ever be flagged")
    return resolved


@dataclass(frozen=True)
class _Window:
    task: int  # index into the task list
    input_ids: list[int]
    start: int  # character span of the window in the task's text
    end: int


class HFClassifierDetector(Detector):
    name = "hf_classifier"
    option_keys = ("model_dir", "max_length", "sides", "threshold", "stride", "max_windows", "label_map", "revision")
    version = "1"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        label_targets: dict[int, Target | None],
        *,
        sides: tuple[Side, ...] = (Side.PROMPT,),
        threshold: float = DEFAULT_THRESHOLD,
        batch_size: int = 32,
        max_length: int = MAX_WINDOW_TOKENS,
        stride: int = DEFAULT_STRIDE,
        max_windows: int = DEFAULT_MAX_WINDOWS,
        detector_version: str | None = None,
    ) -> None:
        if stride >= max_length - 2:
            raise GuardConfigError(f"hf_classifier: stride {stride} must be below max_length {max_length} - 2")
        self.model = model
        self.tokenizer = tokenizer
        self.sides = sides
        self.threshold = threshold
        self.batch_size = batch_size
        self.max_length = max_length
        self.stride = stride
        self.max_windows = max_windows
        self.detector_version = detector_version or self.version
        self.id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        # Independent sigmoids for multi-label heads and single-logit heads (softmax over one
        # logit would always say 1.0).
        self.multi_label = (
            getattr(model.config, "problem_type", None) == "multi_label_classification" or len(self.id2label) == 1
        )
        # Columns of the probability matrix that add up into each flagged target.
        self._columns: dict[Target, list[int]] = {}
        for index, target in sorted(label_targets.items()):
            if target is not None:
                self._columns.setdefault(target, []).append(index)

    @classmethod
    def create(cls, config: DetectorConfig) -> Self:
        from transformers import AutoModelForSequenceClassification

        opts = DetectorOptions(cls.name, config)
        model_dir = opts.model_dir()
        apply_threads(config.threads)
        device = resolve_device(config.device)
        tokenizer = load_tokenizer(model_dir)
        model, info = load_pretrained(
            model_dir, AutoModelForSequenceClassification, "sequence-classification model", output_loading_info=True
        )
        require_complete_load(model_dir, info)
        model = model.to(device).eval()
        id2label = {int(k): str(v) for k, v in model.config.id2label.items()}
        max_length = opts.integer("max_length", _model_window(model, tokenizer), minimum=8)
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and 0 < positions < max_length:
            # Longer windows failed every text longer than the checkpoint's positions, record by
            # record, while short ones passed (hostile check, 2026-12-04).
            raise GuardConfigError(
                f"hf_classifier: option max_length={max_length} exceeds the checkpoint's {positions} positions"
            )
        return cls(
            model,
            tokenizer,
            resolve_label_map(id2label, opts.label_map()),
            sides=opts.sides("prompt"),
            threshold=opts.probability("threshold", DEFAULT_THRESHOLD),
            batch_size=config.batch_size,
            max_length=max_length,
            stride=opts.integer("stride", min(DEFAULT_STRIDE, max_length // 4), minimum=0),
            max_windows=opts.integer("max_windows", DEFAULT_MAX_WINDOWS),
            detector_version=f"{cls.version}+{opts.get('revision') or checkpoint_fingerprint(Path(model_dir))}",
        )

    def scores(self, texts: Sequence[str]) -> list[tuple[dict[Target, float], tuple[int, int]]]:
        """Per text: target -> max-over-windows probability, and the strongest window's span."""
        import torch

        unique = list(dict.fromkeys(texts))  # repeated texts in a batch are scored once
        windows = self._windows(unique)
        best: list[dict[Target, float]] = [dict.fromkeys(self._columns, 0.0) for _ in unique]
        spans: list[tuple[int, int]] = [(0, len(t)) for t in unique]
        top: list[float] = [-1.0] * len(unique)
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
        for start in range(0, len(order), self.batch_size):
            chunk = [windows[i] for i in order[start : start + self.batch_size]]
            batch = self.tokenizer.pad({"input_ids": [w.input_ids for w in chunk]}, return_tensors="pt")
            batch = {k: v.to(self.model.device) for k, v in batch.items()}
            with torch.inference_mode():
                logits = self.model(**batch).logits.float()
            probs = (logits.sigmoid() if self.multi_label else logits.softmax(dim=-1)).cpu()
            for row, window in enumerate(chunk):
                for target, columns in self._columns.items():
                    p = float(probs[row, columns].sum().clamp(max=1.0))
                    if p > best[window.task][target]:
                        best[window.task][target] = p
                    if p > top[window.task]:
                        top[window.task] = p
                        spans[window.task] = (window.start, window.end)
        scored = dict(zip(unique, zip(best, spans, strict=True), strict=True))
        return [scored[text] for text in texts]

    def _windows(self, texts: Sequence[str]) -> list[_Window]:
        """Overlapping token windows of every text; at most max_windows per text."""
        enc = self.tokenizer(
            list(texts),
            truncation=True,
            max_length=self.max_length,
            stride=self.stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        per_text: list[list[_Window]] = [[] for _ in texts]
        for ids, offsets, task in zip(
            enc["input_ids"], enc["offset_mapping"], enc["overflow_to_sample_mapping"], strict=True
        ):
            spans = [(s, e) for s, e in offsets if e > s]
            start, end = (spans[0][0], spans[-1][1]) if spans else (0, len(texts[task]))
            per_text[task].append(_Window(task, ids, start, end))
        windows: list[_Window] = []
        for found in per_text:
            # Keep the head and the very end: injected instructions often close a long text.
            windows.extend(found if len(found) <= self.max_windows else found[: self.max_windows - 1] + found[-1:])
        return windows

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        """Every part of each record on the configured sides (``parts_to_screen``) is scored on
        its own; each finding names its part, one per target and side (the strongest part)."""
        tasks: list[tuple[int, ScreenedPart]] = [
            (index, part) for index, record in enumerate(records) for part in parts_to_screen(record, self.sides)
        ]
        found: list[list[Finding]] = [[] for _ in records]
        if not tasks:
            return found
        for (index, part), (by_target, (start, end)) in zip(
            tasks, self.scores([part.text for _, part in tasks]), strict=True
        ):
            for target, score in by_target.items():
                if score < self.threshold:
                    continue
                labels = tuple(self.id2label[c] for c in self._columns[target])
                found[index].append(
                    Finding(
                        category=target.category,
                        subcategory=target.subcategory,
                        side=part.side,
                        score=round(score, 6),
                        detector=self.name,
                        detector_version=self.detector_version,
                        evidence=evidence(part.text, labels, start, end),
                        part=part.kind,
                        location=part.location,
                    )
                )
        return [strongest_per_target(f) for f in found]

    def close(self) -> None:
        self.model = None


def _model_window(model: Any, tokenizer: Any) -> int:
    """Tokens per window: the tokenizer's and the model's limits, capped at 512."""
    limits = [MAX_WINDOW_TOKENS]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_limit, int) and 0 < tok_limit < 1_000_000:  # HF uses 1e30 for "unset"
        limits.append(tok_limit)
    pos_limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(pos_limit, int) and pos_limit > 0:
        limits.append(pos_limit)
    return min(limits)
