"""The Sink contract and the record type every sink receives.

A sink is one file in ``pipeline/sinks/`` holding one concrete :class:`Sink` subclass
with a unique ``name``; ``Settings.sinks`` enables sinks by name. The runner commits
Kafka offsets only after ``flush()`` of every enabled sink returned, so a sink that
cannot persist must raise from ``flush()`` (after its own retries and timeout).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Self

from pipeline.schemas import InferenceLog, MisuseVerdict

if TYPE_CHECKING:
    from pipeline.metrics import PipelineMetrics
    from pipeline.settings import Settings


@dataclass(frozen=True, slots=True)
class SourcePosition:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class ScoredRecord:
    """One decoded input, its verdict and where it came from (None for files)."""

    log: InferenceLog
    verdict: MisuseVerdict
    position: SourcePosition | None = None


class Sink(ABC):
    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        """Runs once at start-up: open connections here, never at import."""

    @abstractmethod
    def write(self, records: Sequence[ScoredRecord]) -> None:
        """Runs once per micro-batch with every verdict of the batch; may buffer."""

    @abstractmethod
    def flush(self) -> None:
        """Runs after write(), before offsets are committed: persist or raise."""

    def close(self) -> None:
        """Runs once at shutdown, after the last flush."""
