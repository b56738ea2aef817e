"""The Sink contract and the record type every sink receives.

A sink is one file in ``pipeline/sinks/`` holding one concrete :class:`Sink` subclass
with a unique ``name``; ``Settings.sinks`` enables sinks by name. The runner commits
Kafka offsets only after ``flush()`` of every enabled sink returned, so a sink that
cannot persist must raise from ``flush()`` (after its own retries and timeout), keeping what it
could not persist: the runner calls ``flush()`` again until it succeeds or the outage deadline
passes. A record the sink could never store is refused in ``check()`` instead, so it is
dead-lettered and reaches no sink, and the failure of one record never stops the stream.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
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
    # misuse-verdict/v1 JSON, serialised once for every sink that needs it (see verdict_json()).
    json: str | None = None

    def verdict_json(self) -> str:
        return self.json if self.json is not None else self.verdict.to_json()


class Sink(ABC):
    name: ClassVar[str]

    @classmethod
    @abstractmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        """Runs once at start-up: open connections here, never at import."""

    def check(self, records: Sequence[ScoredRecord]) -> dict[int, str]:
        """Runs once per micro-batch, before any sink's write(): index -> reason for each record
        this sink could never store. Those records are dead-lettered; the default accepts all."""
        return {}

    @abstractmethod
    def write(self, records: Sequence[ScoredRecord]) -> None:
        """Runs once per micro-batch with every verdict of the batch; may buffer."""

    @abstractmethod
    def flush(self) -> None:
        """Runs after write(), before offsets are committed: persist or raise."""

    def waiting(self) -> bool:
        """Right after write(): did it wait in vain for its destination (a Kafka topic whose
        metadata did not come)? The runner then counts the write as the start of an outage."""
        return False

    def on_assigned(self, partitions: Iterable[tuple[str, int]], partition_count: int) -> None:
        """Runs after a rebalance gave this member input partitions, before any of their records."""

    def on_revoked(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Runs when partitions leave this member, after their last batch was flushed and committed."""

    def close(self) -> None:
        """Runs once at shutdown, after the last flush."""
