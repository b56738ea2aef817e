"""Kafka source: a consumer-group member that hands out micro-batches.

Offsets are committed explicitly (auto-commit off) and only by :meth:`KafkaSource.commit`,
which the runner calls after every sink flushed. When a rebalance revokes partitions
while a batch is being gathered, their buffered records are dropped: the new owner
re-reads them from the last commit, so nothing is lost and this member does not commit
offsets it no longer owns.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from pipeline.metrics import PipelineMetrics
from pipeline.settings import BatchSettings, KafkaSettings
from pipeline.sinks.base import SourcePosition

log = logging.getLogger(__name__)

JOIN_POLL_MS = 3000


@dataclass(frozen=True, slots=True)
class RawRecord:
    position: SourcePosition
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]
    timestamp_ms: int


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        self._source._on_revoked(set(revoked))

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._source._on_assigned(set(assigned))


class KafkaSource:
    def __init__(self, kafka: KafkaSettings, batch: BatchSettings, metrics: PipelineMetrics) -> None:
        self._kafka = kafka
        self._batch = batch
        self._metrics = metrics
        self._pending: list[RawRecord] = []
        self._assigned: set[TopicPartition] = set()
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
        self._consumer.subscribe([kafka.input_topic], listener=_Rebalance(self))

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        self._metrics.rebalances.labels("revoked").inc()
        self._assigned -= revoked
        before = len(self._pending)
        self._pending = [
            r for r in self._pending if TopicPartition(r.position.topic, r.position.partition) not in revoked
        ]
        if before != len(self._pending):
            log.info("rebalance: dropped %d uncommitted buffered records of revoked partitions", before - len(self._pending))
        for tp in revoked:
            try:  # another member reports this partition's lag from now on
                self._metrics.consumer_lag.remove(tp.topic, str(tp.partition))
            except KeyError:
                pass

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self._metrics.rebalances.labels("assigned").inc()
        self._assigned |= assigned
        log.info("rebalance: assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))

    def next_batch(self) -> list[RawRecord]:
        """Up to ``max_records`` records, waiting at most ``max_wait_ms`` for them."""
        deadline = time.monotonic() + self._batch.max_wait_ms / 1000
        while len(self._pending) < self._batch.max_records:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            if not self._assigned:
                # Joining the group is not waiting for records: give the join round trips
                # time to finish inside one poll (see the note in __init__).
                remaining_ms = max(remaining_ms, JOIN_POLL_MS)
            polled = self._consumer.poll(
                timeout_ms=remaining_ms, max_records=self._batch.max_records - len(self._pending)
            )
            for tp, records in polled.items():
                self._metrics.records_consumed.labels(tp.topic).inc(len(records))
                self._pending.extend(
                    RawRecord(
                        position=SourcePosition(tp.topic, tp.partition, rec.offset),
                        key=rec.key,
                        value=rec.value,
                        headers=tuple((k, v) for k, v in (rec.headers or [])),
                        timestamp_ms=rec.timestamp,
                    )
                    for rec in records
                )
        batch, self._pending = self._pending, []
        return batch

    def commit(self, records: Sequence[RawRecord]) -> bool:
        """Commit the next offset after each partition's last record; False if the group
        moved on (the records are then re-read by the new owner)."""
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for rec in records:
            tp = TopicPartition(rec.position.topic, rec.position.partition)
            if tp in self._assigned:
                nxt = rec.position.offset + 1
                if tp not in offsets or offsets[tp].offset < nxt:
                    offsets[tp] = OffsetAndMetadata(nxt, "", -1)
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=offsets)
        except (CommitFailedError, KafkaError) as exc:
            self._metrics.commits.labels("failed").inc()
            log.warning("offset commit failed (%s); records will be re-delivered", exc)
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

    def close(self) -> None:
        self._consumer.close(autocommit=False)
