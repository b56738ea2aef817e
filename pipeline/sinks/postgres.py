"""PostgreSQL sink: one row per verdict in ``misuse_events`` (see :mod:`pipeline.events_db`)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Self

from prometheus_client import Counter

from pipeline.sinks.base import ScoredRecord, Sink

if TYPE_CHECKING:
    import sqlalchemy as sa

    from pipeline.metrics import PipelineMetrics
    from pipeline.postgres_settings import PostgresSettings
    from pipeline.settings import Settings

# An escaped NUL in JSON text (an escaped backslash followed by "u0000" is not one).
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


class PostgresSink(Sink):
    """Buffers verdicts per batch; flush() upserts them by request_id in one transaction.

    A record whose request_id already holds a different record is kept under a suffixed key and
    counted in ``mm_events_conflicts_total`` (see :mod:`pipeline.events_db`).
    """

    name = "postgres"

    def __init__(self, engine: sa.Engine, settings: PostgresSettings, conflicts: Counter | None = None) -> None:
        self._engine = engine
        self._settings = settings
        self._conflicts = conflicts
        # Records, not bare verdicts: the source position tells a replay from a different record.
        self._pending: list[ScoredRecord] = []

    @classmethod
    def create(cls, settings: Settings, metrics: PipelineMetrics) -> Self:
        # Imported here: SQLAlchemy is the optional "db" extra and sink discovery imports this module.
        from pipeline import events_db

        pg_settings = settings.postgres
        engine = events_db.create_engine(pg_settings)
        if pg_settings.create_schema:
            events_db.create_schema(engine)
        conflicts = Counter(
            "mm_events_conflicts_total",
            "Verdicts whose request_id already held a different record in misuse_events (kept under a suffixed key)",
            registry=metrics.registry,
        )
        return cls(engine, pg_settings, conflicts)

    def check(self, records: Sequence[ScoredRecord]) -> dict[int, str]:
        """PostgreSQL text cannot hold NUL: refuse such a record rather than fail the batch."""
        return {i: "postgres cannot store NUL (U+0000) in text" for i, rec in enumerate(records) if _JSON_NUL.search(rec.verdict_json())}

    def write(self, records: Sequence[ScoredRecord]) -> None:
        self._pending.extend(records)

    def flush(self) -> None:
        """Upsert the buffered verdicts (retrying transient errors) or raise EventStoreError.

        The buffer is kept on failure, so the rows go out with the next flush if the stream
        carries on; the runner does not commit offsets for a batch whose flush raised.
        """
        from pipeline.events_db import upsert_with_retry

        if not self._pending:
            return
        result = upsert_with_retry(self._engine, self._pending, self._settings.flush_attempts)
        self._pending.clear()
        if self._conflicts is not None and result.conflicts:
            self._conflicts.inc(result.conflicts)

    def close(self) -> None:
        self._engine.dispose()
