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

Membership that stops making progress is repaired, not waited on forever. kafka-python 3.0.12 was
seen (2 of about 20 loaded runs of the stream tests) to stay in a rejoin for good: heartbeats went
on, the broker saw an empty group, the stream polled without partitions. A watchdog thread
replaces the consumer when the member has been unstable or owed a rejoin for
``kafka.join_watchdog_s`` (not counting a drain of its own batches, nor a broker outage): the
batches in flight finish, their offsets are committed, and a new consumer joins; what was not
committed is re-read, as after any revoke. The first join waits for the topic's metadata, which
removes the needless second rebalance kafka-python otherwise starts a moment after every start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import (
    CommitFailedError,
    CorruptRecordError,
    IllegalStateError,
    KafkaConnectionError,
    KafkaError,
    UnsupportedCodecError,
)
from kafka.structs import MemberState, OffsetAndMetadata

from pipeline import kafka_batches
from pipeline.metrics import PipelineMetrics
from pipeline.preflight import kafka_reachable
from pipeline.settings import BatchSettings, KafkaSettings
from pipeline.sinks.base import SourcePosition

log = logging.getLogger(__name__)

JOIN_POLL_MS = 3000
DRAIN_POLL_S = 0.02
# Pause after a poll that found no broker (a join during an outage), so next_batch does not spin.
OUTAGE_POLL_PAUSE_S = 0.5
METADATA_WAIT_S = 10.0
WATCHDOG_CLOSE_MS = 5000
WATCHDOG_TICK_S = 1.0
# How long one offset commit (and the close) may wait for the broker. kafka-python's default is
# request_timeout_ms (30 s), and with the broker down every commit attempt blocked the poll loop
# that long: a stream past its outage deadline took over a minute to exit. A commit that times
# out is retried with the next one (its offsets are kept), or re-read by the next owner.
COMMIT_TIMEOUT_MS = 10_000


class MembershipStuck(Exception):
    """Raised into a consumer call the watchdog woke up (deliberately not a KafkaError)."""


@dataclass(frozen=True, slots=True)
class RawRecord:
    position: SourcePosition
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int
    # Set when the consumer could not read the record at ``position`` (its value is None):
    # why, for its dead letter (reason corrupt_record).
    unreadable: str | None = None


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
    """Forwards the callbacks of one consumer; those of a consumer the source replaced are ignored."""

    def __init__(self, source: KafkaSource, consumer_id: int) -> None:
        self._source = source
        self._id = consumer_id

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._source._on_revoked(set(revoked), lost=False, consumer_id=self._id)

    async def on_partitions_lost(self, lost: Iterable[TopicPartition]) -> None:
        await self._source._on_revoked(set(lost), lost=True, consumer_id=self._id)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._source._on_assigned(set(assigned), consumer_id=self._id)


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
        # Written by the listener (IO thread), applied by next_batch (runner thread), under
        # _reposition_lock with _assigned: an assignment that landed between _reposition's read of
        # the set and its reset would have skipped the seek of a partition kept through a revoke
        # (found by reading, in a soak's review, 2026-12-04; not reproduced).
        self._to_reposition: set[TopicPartition] = set()
        self._reposition_lock = threading.Lock()
        self._dropped_from: dict[TopicPartition, int] = {}
        # Offsets of finished batches, written by the sink stage, committed by commit_done().
        self._done: dict[TopicPartition, int] = {}
        self._done_lock = threading.Lock()
        self._last_poll = time.monotonic()
        # Membership watchdog: whether the revoke listener is waiting for this member's own
        # batches (its drain has a deadline).
        self._draining = False
        self._consumer_id = 0
        self._consumer = self._new_consumer()
        self._replace_requested = False
        self._closing = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="mm-group-watchdog", daemon=True)
        self._watchdog.start()

    def _new_consumer(self) -> KafkaConsumer:
        kafka = self._kafka
        kafka_batches.install(kafka.max_batch_decompressed_bytes)
        consumer = KafkaConsumer(
            group_id=kafka.group_id,
            enable_auto_commit=False,
            auto_offset_reset=kafka.auto_offset_reset,
            max_partition_fetch_bytes=kafka.max_partition_fetch_bytes,
            fetch_max_bytes=max(kafka.max_partition_fetch_bytes, 52428800),
            max_poll_records=self._batch.max_records,
            session_timeout_ms=kafka.session_timeout_ms,
            max_poll_interval_ms=kafka.max_poll_interval_ms,
            metadata_max_age_ms=kafka.metadata_max_age_ms,
            **kafka.client_options(),
        )
        if not consumer.partitions_for_topic(kafka.input_topic):
            log.warning("input topic %s has no partitions yet (it may be auto-created)", kafka.input_topic)
        self._consumer_id += 1
        consumer.subscribe([kafka.input_topic], listener=_Listener(self, self._consumer_id))
        self._await_subscription_metadata(consumer)
        return consumer

    def _await_subscription_metadata(self, consumer: KafkaConsumer) -> None:
        """Refresh metadata once after subscribing, so the first join already sees the partitions.

        kafka-python 3.0.12 builds the group leader's metadata snapshot only from updates that
        arrive after subscribe(). A join before one arrives assigns nothing, and the refresh that
        follows forces a second rebalance a moment after start, while the first batches are in
        flight: a needless rebalance, and the moment at which its IO loop was seen to lose a task.
        """
        coordinator = consumer._coordinator  # noqa: SLF001 - no public way (kafka-python 3.0.12)
        deadline = time.monotonic() + METADATA_WAIT_S
        while not coordinator._metadata_snapshot.get(self._kafka.input_topic):  # noqa: SLF001
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                log.info("no partitions of %s in the metadata yet; joining without them", self._kafka.input_topic)
                return
            update = consumer._cluster.request_update()  # noqa: SLF001
            try:
                consumer._net.run(consumer._manager.wait_for, update, remaining_ms)  # noqa: SLF001
            except KafkaError:
                time.sleep(min(0.1, remaining_ms / 1000))

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    # -- rebalance (listener methods run on kafka-python's IO thread) ------------------------

    async def _on_revoked(self, revoked: set[TopicPartition], *, lost: bool, consumer_id: int) -> None:
        if consumer_id != self._consumer_id:
            return
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
            self._draining = True
            try:
                while not self.hooks.drained():
                    if time.monotonic() > deadline:
                        log.warning("rebalance: batches still in flight after %.0f s; they will be re-delivered", self._drain_timeout_s)
                        drained = False
                        break
                    await net.sleep(DRAIN_POLL_S)
            finally:  # also when the watchdog wakes this wait to replace the consumer
                self._draining = False
            if consumer_id != self._consumer_id:  # replaced by the watchdog meanwhile
                return
            offsets = self._take_done(self._assigned)
            if offsets:
                try:
                    # The coordinator's own pre-rebalance commit path: the generation is still valid here.
                    await self._consumer._coordinator._commit_offsets_sync_async(offsets, COMMIT_TIMEOUT_MS)  # noqa: SLF001
                    self._metrics.commits.labels("ok").inc()
                except KafkaError as exc:
                    self._metrics.commits.labels("failed").inc()
                    log.warning("rebalance: commit before revoke failed (%s); those records will be re-delivered", exc)
        self._forget(revoked)
        if not lost and drained:
            # Nothing is in flight, so the hooks never race the runner's sink stage.
            self.hooks.revoked(revoked)

    def _forget(self, revoked: set[TopicPartition]) -> None:
        """Drop revoked partitions and their fetched records (re-read by whoever owns them next)."""
        with self._reposition_lock:
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

    def _on_assigned(self, assigned: set[TopicPartition], *, consumer_id: int) -> None:
        if consumer_id != self._consumer_id:
            return
        self._metrics.rebalances.labels("assigned").inc()
        with self._reposition_lock:
            self._assigned |= assigned
            self._to_reposition |= assigned
        log.info("rebalance: assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))

    def _reposition(self) -> None:
        """Move newly assigned partitions to their committed offsets (runner thread)."""
        with self._reposition_lock:
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

    def unread(self, timeout_s: float) -> dict[TopicPartition, tuple[int | None, int]] | None:
        """Owned partitions the broker holds records of past this member's position, asked now:
        ``{partition: (position, end offset)}``, empty when everything was read. None while this
        member owns nothing (joining), or when the watchdog woke the call or a rebalance took a
        partition during it. Raises what the client raises (``KafkaTimeoutError`` within
        ``timeout_s``) when the broker does not answer."""
        owned = sorted(self._assigned & set(self._consumer.assignment()))
        if not owned:
            if not kafka_reachable(self._kafka):
                raise KafkaConnectionError(f"no broker accepts a connection at {self._kafka.bootstrap_servers}")
            return None
        timeout_ms = int(timeout_s * 1000)
        try:
            ends = self._consumer.end_offsets(owned, timeout_ms=timeout_ms)
            positions = {tp: self._consumer.position(tp, timeout_ms=timeout_ms) for tp in owned}
        except (MembershipStuck, IllegalStateError):
            return None  # the consumer is replaced at the next poll / a rebalance took a partition meanwhile
        return {tp: (pos, ends[tp]) for tp, pos in positions.items() if pos is None or pos < ends[tp]}

    def keep_alive(self, every_s: float = 1.0) -> None:
        """Poll without taking records of the partitions owned, at most once per ``every_s``.

        The runner calls this while its stages are full. kafka-python evicts a member that does not
        poll within ``max_poll_interval_ms``, and a slow detector (a CPU, a long batch) could
        otherwise keep this member from polling that long: it would be evicted, re-read the same
        batches after rejoining, and be evicted again. Polling also lets it take part in
        rebalances. Records of partitions assigned during the call are kept for next_batch."""
        if time.monotonic() - self._last_poll < every_s:
            return
        fetcher = self._consumer._fetcher  # noqa: SLF001 - no public way
        pending = fetcher._next_in_line_exception_metadata  # noqa: SLF001
        if pending is not None:
            # A poll's error kafka-python keeps for the next poll (an unreadable record after records
            # of another partition) is raised there only if its partition can be fetched: the paused
            # poll below dropped it, and the spent records it left made every later poll spin for
            # good (a review, 2026-12-07). Dropped with them, the records are fetched again and the
            # error is raised by a poll that can handle it.
            fetcher._next_in_line_exception_metadata = None  # noqa: SLF001
            part = fetcher._next_partition_records  # noqa: SLF001
            if part and part.topic_partition == pending.partition:
                part.drain()
                fetcher._next_partition_records = None  # noqa: SLF001
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
        if self._replace_requested:
            self._replace_consumer()
        if self._joining():
            # A short poll that times out in the middle of a rejoin can leave kafka-python 3.0.12
            # joined with no partitions: give the join its round trips.
            timeout_ms = max(timeout_ms, JOIN_POLL_MS)
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except MembershipStuck:
            return  # the watchdog woke this call; the consumer is replaced at the next poll
        except (CorruptRecordError, UnsupportedCodecError) as exc:  # the latter: a v0/v1 batch (kafka_batches: v2)
            self._skip_unreadable(exc)
            return
        except KafkaConnectionError as exc:
            # kafka-python 3.0.12 raises this from the coordinator lookup of a join (a member
            # joining, or rejoining because another did) when no broker answers; a stable member's
            # poll does not. An outage, waited out like any other: no records are handed out, and
            # the runner's broker check (unread) reports it and applies stream.outage_deadline_s.
            log.debug("poll during a join found no broker (%s); retried", exc)
            time.sleep(min(timeout_ms / 1000, OUTAGE_POLL_PAUSE_S))
            return
        self._last_poll = time.monotonic()
        with self._reposition_lock:
            stale = set(self._to_reposition)
        if stale:
            # Records fetched before the seek are re-read after it (from the committed offset,
            # or from the first of them when the group has no commit for the partition yet).
            for tp in stale & polled.keys():
                first = polled.pop(tp)[0].offset
                self._dropped_from[tp] = min(self._dropped_from.get(tp, first), first)
            try:
                self._reposition()
            except MembershipStuck:  # woken by the watchdog: these records are re-read after the replacement
                for tp, records in polled.items():
                    first = records[0].offset
                    self._dropped_from[tp] = min(self._dropped_from.get(tp, first), first)
                return
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

    def _skip_unreadable(self, exc: CorruptRecordError | UnsupportedCodecError) -> None:
        """Hand out a placeholder for the record the consumer cannot read, and read on after it.

        kafka-python raises from ``poll()`` on a record it cannot parse (a header key that is not
        UTF-8, which librdkafka and raw clients can write; a CRC failure), at the same offset on
        every poll: the stream ended on every start, and not even the records before it were
        stored (a hostile review, 2026-12-07). The record becomes a dead letter with reason
        ``corrupt_record`` and no value (its bytes cannot be had through kafka-python). Records
        after it in the same record batch cannot be parsed either (the batch is read in order):
        each raises in turn and gets its own dead letter, so every offset is accounted for.

        A whole record batch that cannot be read (:class:`pipeline.kafka_batches.UnreadableBatch`:
        it does not decompress, or not within ``kafka.max_batch_decompressed_bytes``) names its
        last offset: every offset up to it gets its dead letter at once (one for them all, at the
        last, when they are more than ``batch.max_records``), and the consumer reads on after it.
        One offset at a time, each seek fetched and decompressed the batch again.
        """
        part = getattr(self._consumer._fetcher, "_next_partition_records", None)  # noqa: SLF001 - no public way to learn where
        tp = getattr(part, "topic_partition", None)
        # Only records being read are to blame: kafka-python keeps a partition's used-up records
        # in that slot (falsy once drained), and a broker's CORRUPT_MESSAGE for another partition
        # raises while they sit there; blaming them skipped readable records (a review of this
        # change, 2026-12-07). Where it cannot be told, the stream ends as before.
        if not part or tp is None or tp not in self._consumer.assignment():
            raise exc
        with self._reposition_lock:
            stale = tp in self._to_reposition
        if stale:
            # The join in this poll gave the partition back: it is read again from its committed
            # offset, as the records of a poll are (placeholders here were emitted twice, and the
            # commit after them could pass records before them; a review, 2026-12-07).
            with contextlib.suppress(MembershipStuck):  # the consumer is replaced at the next poll
                self._reposition()
            return
        offset = self._consumer.position(tp)
        last = exc.last_offset if isinstance(exc, kafka_batches.UnreadableBatch) and exc.last_offset >= offset else offset
        if last == offset:
            detail = f"the consumer could not read this record (or one before it in its record batch): {exc}"
            at = [offset]
        elif last - offset < self._batch.max_records:
            detail = f"the consumer could not read this record's record batch: {exc}"
            at = list(range(offset, last + 1))
        else:
            # More records than a batch holds: one dead letter, at the last offset (so the commit
            # after it is past the batch), names them all. One per offset made 10 million
            # placeholders at once of a 7.7 MB zstd batch (a review, 2026-12-07).
            detail = f"the consumer could not read offsets {offset}-{last} ({last + 1 - offset} records), one record batch: {exc}"
            at = [last]
        log.warning("%s-%d@%d-%d: %s", tp.topic, tp.partition, offset, last, detail)
        self._pending.extend(RawRecord(SourcePosition(tp.topic, tp.partition, o), None, None, (), 0, detail[:1000]) for o in at)
        self._metrics.records_consumed.labels(tp.topic).inc(last + 1 - offset)
        self._consumer.seek(tp, last + 1)

    # -- membership watchdog ------------------------------------------------------------------

    def _watch(self) -> None:
        """Watchdog thread: ask for a new consumer when group membership stopped making progress.

        Progress means: the member is stable and no rejoin is pending. Time during which the
        revoke listener waits for this member's own batches does not count (that drain has its
        own deadline), nor does an outage (no broker accepts a connection). kafka-python 3.0.12
        was seen to stay in a rejoin forever (heartbeats went on, the broker saw an empty group,
        the stream polled without partitions). The runner thread may then be blocked inside the
        consumer, so besides setting the flag this thread fails the consumer's blocked calls
        (kafka-python's own way of waking them when its loop stops) and the runner thread
        replaces the consumer at its next poll (``_replace_consumer``).
        """
        unsettled_since: float | None = None
        while not self._closing.wait(WATCHDOG_TICK_S):
            try:
                unsettled_since = self._check_membership(unsettled_since)
            except Exception:  # noqa: BLE001 - the watchdog must outlive a surprise; logged
                log.exception("group watchdog check failed")
                unsettled_since = None

    def _check_membership(self, unsettled_since: float | None) -> float | None:
        """One watchdog tick: returns since when membership has been unsettled (None: settled)."""
        consumer = self._consumer
        coordinator = consumer._coordinator  # noqa: SLF001 - no public way (kafka-python 3.0.12)
        settled = coordinator.state == MemberState.STABLE and not coordinator.need_rejoin()
        if settled or self._replace_requested or (self._draining and not self.hooks.drained()):
            return None
        now = time.monotonic()
        if unsettled_since is None or now - unsettled_since <= self._kafka.join_watchdog_s:
            return unsettled_since or now
        if not kafka_reachable(self._kafka):
            return now  # the broker is down: an outage to wait out, not a stuck client
        log.warning(
            "group membership made no progress for %.0f s (state %s, rejoin pending: %s); "
            "replacing the consumer; records not committed are re-read",
            now - unsettled_since, coordinator.state, coordinator.need_rejoin(),
        )
        self._metrics.rebalances.labels("watchdog").inc()
        self._replace_requested = True
        consumer._net._fail_pending_waiters(MembershipStuck("group membership made no progress"))  # noqa: SLF001
        return None

    def _replace_consumer(self) -> None:
        """Close the stuck consumer (after the batches in flight) and join with a new one (runner thread)."""
        old = self._consumer
        owned = set(self._assigned)
        deadline = time.monotonic() + self._drain_timeout_s
        while not self.hooks.drained() and time.monotonic() < deadline:
            time.sleep(DRAIN_POLL_S)  # the runner's stages finish the batches in flight
        drained = self.hooks.drained()
        offsets = self._take_done(owned)
        if offsets:
            try:
                old.commit(offsets=offsets, timeout_ms=WATCHDOG_CLOSE_MS)
                self._metrics.commits.labels("ok").inc()
            except (KafkaError, MembershipStuck) as exc:
                self._metrics.commits.labels("failed").inc()
                log.warning("commit before replacing the consumer failed (%s); those records will be re-delivered", exc)
        self._consumer_id += 1  # from here on, callbacks of the old consumer are ignored
        self._forget(owned)
        with self._reposition_lock:
            self._to_reposition.clear()
        if owned and drained:
            self.hooks.revoked(owned)
        # This member already handled the revocation: close must not call back into a listener
        # (the stuck part may be there), and a close that hangs is abandoned, not waited for.
        old._subscription.rebalance_listener = None  # noqa: SLF001
        closer = threading.Thread(target=self._close_quietly, args=(old,), name="mm-close-stuck-consumer", daemon=True)
        closer.start()
        closer.join(WATCHDOG_CLOSE_MS / 1000 * 2)
        if closer.is_alive():
            log.warning("the stuck consumer did not close within %.0f s; abandoned", WATCHDOG_CLOSE_MS / 1000 * 2)
        self._consumer = self._new_consumer()
        self._replace_requested = False

    @staticmethod
    def _close_quietly(consumer: KafkaConsumer) -> None:
        try:
            consumer.close(autocommit=False, timeout_ms=WATCHDOG_CLOSE_MS)
        except Exception as exc:  # noqa: BLE001 - the old consumer is abandoned either way
            log.warning("closing the stuck consumer failed: %r", exc)

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
            self._consumer.commit(offsets=offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except CommitFailedError as exc:
            self._metrics.commits.labels("failed").inc()
            log.warning("offset commit rejected, the group moved on (%s); the next owner re-reads those records", exc)
            return False
        except (KafkaError, MembershipStuck) as exc:
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
        self._closing.set()
        self._watchdog.join(timeout=WATCHDOG_TICK_S * 2)
        self._consumer.close(autocommit=False, timeout_ms=COMMIT_TIMEOUT_MS)
