"""The Detector contract: a batch of inference logs in, findings per record out.

A detector is one file in ``detectors/`` holding one concrete :class:`Detector`
subclass with a unique ``name``; the registry finds it, nothing lists it by hand.
Importing a detector module must not load models: that happens in :meth:`create`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Self

from pipeline.schemas import Finding, InferenceLog


@dataclass(frozen=True)
class DetectorConfig:
    """What a detector may need at construction; built from Settings at the process edge."""

    model_dir: Path | None = None
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:N"
    batch_size: int = 16  # pipeline/settings.py says why
    threads: int | None = None
    options: dict[str, str] = field(default_factory=dict)


class PartialDetectionError(RuntimeError):
    """A detector screened the batch but could not judge some records or sides (e.g. a
    generative guard answered outside its format). ``partial`` holds the findings of every
    record (those it could judge); ``failures`` says which records failed and why.

    The scorer keeps ``partial``, counts and logs the failures and goes on: one bad model
    answer must not stop the stream, and replaying the batch would repeat it."""

    def __init__(self, message: str, partial: list[list[Finding]], failures: Sequence[object]) -> None:
        super().__init__(message)
        self.partial = partial
        self.failures = list(failures)


class Detector(ABC):
    """Screens prompts and completions. Subclasses set ``name`` and ``version``."""

    name: ClassVar[str]
    version: ClassVar[str]
    # The keys of ``DetectorConfig.options`` this detector reads (each also as ``<name>.<key>``).
    # One options dict serves every enabled detector; a key that none of them reads is refused
    # at start-up (detectors.registry.check_options), so a typo is not silently a default.
    option_keys: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def create(cls, config: DetectorConfig) -> Self:
        """Runs once at start-up: load models/artifacts here, never at import."""
        return cls()

    @abstractmethod
    def detect(self, records: Sequence[InferenceLog]) -> list[list[Finding]]:
        """Runs once per micro-batch. Returns, for each record in order, the findings whose
        calibrated score reached this detector's pinned threshold (empty list: clean)."""

    def take_truncated(self) -> dict[str, int]:
        """Texts this detector could not read in full (a length cap) since the last call, by
        part kind (``PartKind`` values); the scorer exports them as
        ``mm_detector_truncated_texts_total``. Detectors without a cap return nothing."""
        return {}

    def take_first_pass(self) -> dict[str, int]:
        """Windows a cheap first pass escalated to the model or cleared on its own since the
        last call (``escalated`` / ``cleared``); the scorer exports them as
        ``mm_detector_first_pass_windows_total``. Detectors without a first pass return nothing."""
        return {}

    def close(self) -> None:
        """Runs once at shutdown; release devices and threads."""


def pinned_version(detector: Detector) -> str:
    """The version a detector's findings carry: the artifact's pinned version for detectors that
    load one (``detector_version``, set in :meth:`Detector.create`), else the class version."""
    return getattr(detector, "detector_version", detector.version)
