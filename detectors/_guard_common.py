"""Helpers shared by the bring-your-own guard detectors (hf_classifier, llm_guard).

Not a detector module (the leading underscore keeps discovery away). Nothing here loads a
model at import; torch is imported inside the functions that need it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detectors.base import DetectorConfig
from detectors.taxonomy import Target
from pipeline.exits import first_line
from pipeline.redact import snippet
from pipeline.schemas import EVIDENCE_MAX_CHARS, Category, Finding, InferenceLog, ScreenedPart, Side

if TYPE_CHECKING:
    import torch


class GuardConfigError(ValueError):
    """A guard detector was configured wrongly; raised at start-up, never per record."""


class DetectorOptions:
    """``config.options`` as seen by one detector.

    DetectorSettings holds one options dict for every enabled detector, so a key may be
    namespaced: ``"llm_guard.threshold"`` wins over ``"threshold"`` for the detector named
    ``llm_guard``. ``model_dir`` may be namespaced the same way, so two guard detectors can
    run side by side with different checkpoints.
    """

    def __init__(self, detector: str, config: DetectorConfig) -> None:
        self.detector = detector
        self._config = config
        self._options = config.options

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._options.get(f"{self.detector}.{key}", self._options.get(key, default))

    def choice(self, key: str, default: str, allowed: tuple[str, ...]) -> str:
        value = (self.get(key, default) or default).strip().lower()
        if value not in allowed:
            raise GuardConfigError(f"{self.detector}: option {key}={value!r}; expected one of {allowed}")
        return value

    def integer(self, key: str, default: int, minimum: int = 1) -> int:
        raw = self.get(key)
        try:
            value = default if raw is None else int(raw)
        except ValueError as exc:
            raise GuardConfigError(f"{self.detector}: option {key}={raw!r} is not an integer") from exc
        if value < minimum:
            raise GuardConfigError(f"{self.detector}: option {key}={value} must be >= {minimum}")
        return value

    def probability(self, key: str, default: float) -> float:
        raw = self.get(key)
        try:
            value = default if raw is None else float(raw)
        except ValueError as exc:
            raise GuardConfigError(f"{self.detector}: option {key}={raw!r} is not a number") from exc
        if not 0.0 <= value <= 1.0:
            raise GuardConfigError(f"{self.detector}: option {key}={value} must lie in [0, 1]")
        return value

    def sides(self, default: str) -> tuple[Side, ...]:
        raw = self.get("sides", default) or default
        try:
            sides = tuple(dict.fromkeys(Side(part.strip()) for part in raw.split(",") if part.strip()))
        except ValueError as exc:
            raise GuardConfigError(f"{self.detector}: option sides={raw!r}; use prompt, completion or both") from exc
        if not sides:
            raise GuardConfigError(f"{self.detector}: option sides is empty")
        return sides

    def label_map(self) -> dict[str, Target | None]:
        """``options["label_map"]``: JSON object label -> "category[/subcategory]" or null (benign)."""
        raw = self.get("label_map")
        if not raw:
            return {}
        try:
            table = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GuardConfigError(f"{self.detector}: option label_map is not valid JSON") from exc
        if not isinstance(table, Mapping):
            raise GuardConfigError(f"{self.detector}: option label_map must be a JSON object")
        return {str(label): parse_target(value, self.detector) for label, value in table.items()}

    def model_dir(self) -> Path:
        raw = self.get("model_dir")
        path = Path(raw) if raw else self._config.model_dir
        if path is None:
            raise GuardConfigError(
                f"{self.detector}: set detectors.model_dir (or option {self.detector}.model_dir) "
                "to a local Hugging Face checkpoint folder"
            )
        if not (path / "config.json").is_file():
            raise GuardConfigError(f"{self.detector}: {path} is not a Hugging Face checkpoint (no config.json)")
        return path


def parse_target(value: object, detector: str) -> Target | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise GuardConfigError(f"{detector}: label_map values are 'category[/subcategory]' strings or null")
    category, _, subcategory = value.partition("/")
    try:
        return Target(Category(category.strip()), subcategory.strip() or None)
    except ValueError as exc:
        raise GuardConfigError(f"{detector}: label_map value {value!r}: {exc}") from exc


def resolve_device(requested: str) -> torch.device:
    import torch

    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise GuardConfigError(f"device {requested!r} requested but CUDA is not available")
    return device


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (``taskset``, a cpuset), capped by a
    cgroup v2 CPU quota (``docker --cpus``, a Kubernetes limit). ``os.cpu_count()`` counts the
    host's CPUs, so a container limited to 2 of 64 got 64 threads."""
    import math
    import os

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError, ZeroDivisionError):
        pass
    return max(1, cores)


def check_threads(threads: int | None) -> int | None:
    """``threads`` if this process has that many cores (:func:`usable_cores`). 100000 threads
    exhausted the memory of the process: scipy's import failed and the command hung until killed
    (hostile check, 2026-12-04); more threads than cores only slows a compute-bound CPU down."""
    cores = usable_cores()
    if threads is not None and not 0 <= threads <= cores:  # 0, like unset: every core
        raise GuardConfigError(f"threads={threads}: use 1 to {cores} (the cores of this machine), or leave it unset")
    return threads


def apply_threads(threads: int | None) -> None:
    """Runs at create(): torch's intra-op pool is per process, so this is set once."""
    if check_threads(threads):
        import torch

        torch.set_num_threads(threads)


def checkpoint_fingerprint(model_dir: Path) -> str:
    """8 hex chars identifying a checkpoint: its config, tokenizer files and weight sizes.

    Hashing multi-gigabyte weights at start-up is too slow; the sizes plus configs tell
    checkpoints apart in practice. ``options["revision"]`` overrides it with a pinned name.
    """
    digest = hashlib.sha256()
    for path in sorted(model_dir.iterdir()):
        if not path.is_file():
            continue
        digest.update(path.name.encode())
        if path.suffix in (".json", ".jinja", ".txt", ".model"):
            digest.update(path.read_bytes())
        else:
            digest.update(str(path.stat().st_size).encode())
    return digest.hexdigest()[:8]


def head_tail(text: str, max_chars: int) -> str:
    """``text`` cut to ``max_chars``, keeping its start and its end (injections hide at the end)."""
    if len(text) <= max_chars:
        return text
    half = (max_chars - 5) // 2
    return f"{text[:half]} [...] {text[-half:]}"


def evidence(text: str, labels: tuple[str, ...] = (), start: int = 0, end: int | None = None) -> str:
    """A redacted snippet of ``text`` prefixed with the guard's own labels, e.g. ``[S1,S9] ...``."""
    joined = ",".join(labels)
    if len(joined) > 56:
        joined = joined[:55] + "…"
    prefix = f"[{joined}] " if labels else ""
    return prefix + snippet(text, start, end, max_chars=EVIDENCE_MAX_CHARS - len(prefix))


# What a checkpoint folder's own files can do wrong at load time: a truncated or foreign
# weights file, a config.json that is not a JSON object, a tokenizer that will not build.
def _load_errors() -> tuple[type[BaseException], ...]:
    import pickle

    from safetensors import SafetensorError

    return (OSError, ValueError, TypeError, KeyError, SafetensorError, pickle.UnpicklingError)


def load_pretrained(model_dir: Path, loader: Any, what: str, **kwargs: Any) -> Any:
    """``loader.from_pretrained(model_dir)`` offline and from safetensors weights only.

    The folder is whatever the operator points ``model_dir`` at. transformers falls back to a
    pickled ``pytorch_model.bin``; its ``weights_only`` unpickler blocks code, but the refusal
    came out as exit 1 with advice to retry with ``weights_only=False``. Every published guard
    (Llama Guard 3/4, Qwen3Guard, Prompt Guard 2) ships safetensors, so only those are read,
    and an unreadable folder is a GuardConfigError (exit 3) naming it (hostile check, 2026-12-04).
    """
    try:
        return loader.from_pretrained(model_dir, local_files_only=True, use_safetensors=True, **kwargs)
    except _load_errors() as exc:
        detail = first_line(exc, type(exc).__name__, 200)
        raise GuardConfigError(
            f"{model_dir}: cannot load the {what} ({detail}); a guard checkpoint needs config.json and "
            "*.safetensors weights (pickled .bin weights are not loaded)"
        ) from exc


def load_tokenizer(model_dir: Path) -> Any:
    """The checkpoint's own tokenizer, refused when it cannot read plain English.

    A folder without tokenizer files got a default tokenizer of the model type with a 7-token
    vocabulary: every word became [UNK] and the guard scored the same noise for every text,
    silently (hostile check, 2026-12-04)."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        ids = tokenizer("What is the capital of France?", add_special_tokens=False)["input_ids"]
    except _load_errors() as exc:
        detail = first_line(exc, type(exc).__name__, 200)
        raise GuardConfigError(f"{model_dir}: cannot load the tokenizer ({detail})") from exc
    unknown = getattr(tokenizer, "unk_token_id", None)
    if not ids or all(i == unknown for i in ids):
        raise GuardConfigError(
            f"{model_dir}: the tokenizer reads plain English as unknown tokens only; "
            "the folder lacks the checkpoint's tokenizer files (tokenizer.json, tokenizer.model or vocab files)"
        )
    return tokenizer


def require_complete_load(model_dir: Path, loading_info: Mapping[str, object]) -> None:
    """Refuse a model whose weights were partly missing from the checkpoint.

    transformers initialises missing weights at random and carries on; a guard with a random
    head (a base encoder, a checkpoint of another architecture) would score noise. Unexpected
    weights are fine: Llama Guard 4's vision tower is unused for text moderation.
    """
    missing = sorted(str(k) for k in loading_info.get("missing_keys") or ())  # type: ignore[union-attr]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise GuardConfigError(f"{model_dir}: weights missing from the checkpoint ({shown}); wrong model class?")


def parts_to_screen(record: InferenceLog, sides: tuple[Side, ...]) -> list[ScreenedPart]:
    """The parts of ``record`` a guard judges: every part of ``InferenceLog.screened_parts``
    (system prompt, each turn of the history, tool calls and results, prompt, completion,
    reasoning) on one of the guard's ``sides``, so guards screen what the other detectors do."""
    return [part for part in record.screened_parts() if part.side in sides]


def strongest_per_target(findings: Iterable[Finding]) -> list[Finding]:
    """One finding per (category, subcategory, side): the highest score, the earlier part on
    ties. A record whose history repeats a request in several turns gets one finding for it,
    naming the part that scored it most (the same rule as the other detectors)."""
    best: dict[tuple[Category, str | None, Side], Finding] = {}
    for finding in findings:
        key = (finding.category, finding.subcategory, finding.side)
        held = best.get(key)
        if held is None or finding.score > held.score:
            best[key] = finding
    return list(best.values())
