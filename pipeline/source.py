"""Kafka source: a consumer-group member that hands out micro-batches and commits finished ones.

In: the input topic (kafka-python consumer, auto-commit off). Out: lists of :class:`RawRecord`
(``next_batch``), and offset commits for the batches the runner reports finished (``mark_done``
then ``commit_done``).

The consumer is not thread-safe: one thread (the runner's) calls every method here except
``mark_done``, which the runner's sink stage calls. kafka-python 3 runs rebalance listeners on its
own IO thread, so the listener below is async and never calls a blocking consumer method.

Rebalance guarantee: every record not committed is delivered again, whoever owns its partition
next, this member included.
- On revoke, the listener waits (without blocking heartbeats) until the runner has finished every
  batch already handed out, commits their offsets, and drops the records fetched but not yet
  handed out. A graceful rebalance therefore re-delivers nothing that reached the sinks.
- On assign, every assigned partition is moved to its committed offset (or to the first dropped
  record when the group has no commit yet) before any of its records is handed out. kafka-python
  keeps the fetch position of a partition that stays with the same member; without this seek the
  dropped records would never be read again and the next commit would skip them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline.metrics import PipelineMetrics
from pipeline.settings import BatchSettings, KafkaSettings
from pipeline.sinks.base import SourcePosition

log = logging.getLogger(__name__)

JOIN_POLL_MS = 3000
DRAIN_POLL_S = 0.02


@dataclass(frozen=True, slots=True)
class RawRecord:
    position: SourcePosition
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


class RebalanceHooks:
    """What the runner does around a rebalance; every method is optional to override."""

    def drained(self) -> bool:
        """Polled from kafka-python's IO thread during a revoke: True once no batch is in flight."""
        return True

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Runs after the drain and the commit, before the partitions go to their next owner."""

    def assigned(self, partitions: set[TopicPartition]) -> None:
        """Runs in the runner's thread, after the seek and before any record of ``partitions``."""


class _Listener(AsyncConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._source._on_revoked(set(revoked), lost=False)

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        await self._source._on_revoked(set(lost), lost=True)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._source._on_assigned(set(assigned))


class KafkaSource:
    def __init__(
        self,
        kafka: KafkaSettings,
        batch: BatchSettings,
        metrics: PipelineMetrics,
        hooks: RebalanceHooks | None = None,
        drain_timeout_s: float | None = None,
    ) -> None:
        self._kafka = kafka
        self._batch = batch
        self._metrics = metrics
        self.hooks = hooks or RebalanceHooks()
        # A drain longer than the rebalance timeout gets this member evicted anyway.
        self._drain_timeout_s = drain_timeout_s or kafka.max_poll_interval_ms / 1000 * 0.8
        self._pending: list[RawRecord] = []
        self._assigned: set[TopicPartition] = set()
        # Written by the listener (IO thread), applied by next_batch (runner thread).
        self._to_reposition: set[TopicPartition] = set()
        self._dropped_from: dict[TopicPartition, int] = {}
        # Offsets of finished batches, written by the sink stage, committed by commit_done().
        self._done: dict[TopicPartition, int] = {}
        self._done_lock = threading.Lock()
        self._last_poll = time.monotonic()
        self._consumer = KafkaConsumer(
            group_id=kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
            fetch_max_bytes=max(kafka.max_partition_fetch_bytes, 52428800),
            max_poll_records=batch.max_records,
            session_timeout_ms=kafka.session_timeout_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            metadata_max_age_ms=kafka.metadata_max_age_ms,
            **kafka.client_options(),
        )
        # kafka-python 3.0.12 can lose an assignment when a poll times out in the middle of
        # a metadata-triggered rejoin (the member then stays joined with no partitions).
        # Two guards: the topic's partitions are fetched before the first join (so that join
        # is complete and no second one follows), and polls are long while joining.
        if not self._consumer.partitions_for_topic(kafka.input_topic):
            log.warning("input topic %s has no partitions yet (it may be auto-created)", kafka.input_topic)
        self._consumer.subscribe([kafka.input_topic], listener=_Listener(self))

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    # -- rebalance (listener methods run on kafka-python's IO thread) ------------------------

    async def _on_revoked(self, revoked: set[TopicPartition], *, lost: bool) -> None:
        self._metrics.rebalances.labels("lost" if lost else "revoked").inc()
        if lost:
            # The group evicted this member (session or poll interval expired): its finished but
            # uncommitted batches are re-read by the next owner, as after a crash.
            log.warning("rebalance: membership lost; uncommitted batches of %d partition(s) will be re-delivered", len(revoked))
        else:
            # Sleep on kafka-python's own loop, so heartbeats go on while the batches finish.
            net = self._consumer._net  # noqa: SLF001 - the loop the listener runs on (kafka-python 3.0.12)
            deadline = time.monotonic() + self._drain_timeout_s
            drained = True
            while not self.hooks.drained():
                if time.monotonic() > deadline:
                    log.warning("rebalance: batches still in flight after %.0f s; they will be re-delivered", self._drain_timeout_s)
                    drained = False
                    break
                await net.sleep(DRAIN_POLL_S)
            offsets = self._take_done(self._assigned)
            if offsets:
                try:
                    # The coordinator's own pre-rebalance commit path: the generation is still valid here.
                    await self._consumer._coordinator._commit_offsets_sync_async(offsets)  # noqa: SLF001
                    self._metrics.commits.labels("ok").inc()
                except KafkaError as exc:
                    self._metrics.commits.labels("failed").inc()
                    log.warning("rebalance: commit before revoke failed (%s); those records will be re-delivered", exc)
        self._assigned -= revoked
        kept = []
        for rec in self._pending:
            tp = TopicPartition(rec.position.topic, rec.position.partition)
            if tp in revoked:
                self._dropped_from[tp] = min(self._dropped_from.get(tp, rec.position.offset), rec.position.offset)
            else:
                kept.append(rec)
        if len(kept) != len(self._pending):
            log.info("rebalance: %d fetched records of revoked partitions will be re-read", len(self._pending) - len(kept))
        self._pending = kept
        for tp in revoked:
            try:  # another member reports this partition's lag from now on
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass
        if not lost and drained:
            # Nothing is in flight, so the hooks never race the runner's sink stage.
            self.hooks.revoked(revoked)

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assigned").inc()
        self._assigned |= assigned
        self._to_reposition |= assigned
        log.info("rebalance: assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))

    def _reposition(self) -> None:
        """Move newly assigned partitions to their committed offsets (runner thread)."""
        todo, self._to_reposition = self._to_reposition & self._assigned, set()
        for tp in sorted(todo):
            committed = self._consumer.committed(tp)
            target = committed if committed is not None else self._dropped_from.get(tp)
            self._dropped_from.pop(tp, None)
            if target is not None:
                self._consumer.seek(tp, target)
        if todo:
            self.hooks.assigned(todo)

    # -- batches --------------------------------------------------------------------------------

    def next_batch(self) -> list[RawRecord]:
        """Up to ``max_records`` records, waiting at most ``max_wait_ms`` for them."""
        deadline = time.monotonic() + self._batch.max_wait_ms / 1000
        while len(self._pending) < self._batch.max_records:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            self._poll_into_pending(remaining_ms, self._batch.max_records - len(self._pending))
        batch, self._pending = self._pending, []
        return batch

    def keep_alive(self, every_s: float = 1.0) -> None:
        """Poll without taking records of the partitions owned, at most once per ``every_s``.

        The runner calls this while its stages are full. kafka-python evicts a member that does not
        poll within ``max_poll_interval_ms``, and a slow detector (a CPU, a long batch) could
        otherwise keep this member from polling that long: it would be evicted, re-read the same
        batches after rejoining, and be evicted again. Polling also lets it take part in
        rebalances. Records of partitions assigned during the call are kept for next_batch."""
        if time.monotonic() - self._last_poll < every_s:
            return
        owned = set(self._consumer.assignment())
        if owned:
            self._consumer.pause(*owned)
        try:
            self._poll_into_pending(0, max(1, self._batch.max_records - len(self._pending)))
        finally:
            still_owned = owned & set(self._consumer.assignment())
            if still_owned:
                self._consumer.resume(*still_owned)

    def _poll_into_pending(self, timeout_ms: int, max_records: int) -> None:
        if self._joining():
            # A short poll that times out in the middle of a rejoin can leave kafka-python 3.0.12
            # joined with no partitions (see __init__): give the join its round trips.
            timeout_ms = max(timeout_ms, JOIN_POLL_MS)
        polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        self._last_poll = time.monotonic()
        stale = self._to_reposition
        if stale:
            # Records fetched before the seek are re-read after it (from the committed offset,
            # or from the first of them when the group has no commit for the partition yet).
            for tp in stale & polled.keys():
                first = polled.pop(tp)[0].offset
                self._dropped_from[tp] = min(self._dropped_from.get(tp, first), first)
            self._reposition()
        for tp, records in polled.items():
            self._metrics.records_consumed.labels(tp.topic).inc(len(records))
            topic, partition = tp.topic, tp.partition
            self._pending.extend(
                RawRecord(
                    SourcePosition(topic, partition, rec.offset),
                    rec.key,
                    rec.value,
                    tuple(rec.headers) if rec.headers else (),
                    rec.timestamp,
                )
                for rec in records
            )

    def _joining(self) -> bool:
        """No partitions yet, or the coordinator is (about to be) rebalancing."""
        coordinator = self._consumer._coordinator  # noqa: SLF001 - no public way to ask (kafka-python 3.0.12)
        return not self._assigned or coordinator.need_rejoin() or coordinator.rebalance_in_progress()

    def mark_done(self, records: Sequence[RawRecord]) -> None:
        """Record that every sink flushed ``records`` (any thread); commit_done() commits them."""
        latest: dict[TopicPartition, int] = {}
        for rec in records:
            pos = rec.position
            tp = TopicPartition(pos.topic, pos.partition)
            if latest.get(tp, -1) < pos.offset:
                latest[tp] = pos.offset
        with self._done_lock:
            for tp, offset in latest.items():
                if self._done.get(tp, -1) < offset + 1:
                    self._done[tp] = offset + 1

    def _take_done(self, owned: set[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        with self._done_lock:
            done, self._done = self._done, {}
        return {tp: OffsetAndMetadata(nxt, "", -1) for tp, nxt in done.items() if tp in owned}

    def commit_done(self) -> bool | None:
        """Commit the offsets of every finished batch of a partition still owned.

        None when there was nothing to commit. False when the commit failed; the offsets are kept and go out with the next call (a later
        offset subsumes an earlier one), unless the group moved on, in which case the next owner
        re-reads those records.
        """
        offsets = self._take_done(self._assigned)
        if not offsets:
            return None
        try:
            self._consumer.commit(offsets=offsets)
        except CommitFailedError as exc:
            self._metrics.commits.labels("failed").inc()
            log.warning("offset commit rejected, the group moved on (%s); the next owner re-reads those records", exc)
            return False
        except KafkaError as exc:
            self._metrics.commits.labels("failed").inc()
            log.warning("offset commit failed (%s); retried with the next commit", exc)
            with self._done_lock:
                for tp, meta in offsets.items():
                    if self._done.get(tp, -1) < meta.offset:
                        self._done[tp] = meta.offset
            return False
        self._metrics.commits.labels("ok").inc()
        self._metrics.last_commit.set_to_current_time()
        self._record_lag(offsets)
        return True

    def _record_lag(self, committed: dict[TopicPartition, OffsetAndMetadata]) -> None:
        for tp, meta in committed.items():
            high = self._consumer.highwater(tp)
            if high is not None:
                self._metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - meta.offset))

    def partition_count(self) -> int:
        return len(self._consumer.partitions_for_topic(self._kafka.input_topic) or ())

    def close(self) -> None:
        self._consumer.close(autocommit=False)
