"""An unreadable record batch in KafkaSource's poll paths, with kafka-python's own Fetcher and
SubscriptionState under a thin consumer (what these paths use of it). The broker end is covered
by tests/integration/test_decode_hostile_stream.py; these are the interleavings a test against
the broker cannot time: an error kafka-python keeps for the next poll, and a rebalance in the poll."""

from __future__ import annotations

import threading
from unittest import mock

import pytest
from kafka import TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.consumer.subscription_state import SubscriptionState
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from pipeline import kafka_batches
from pipeline.metrics import PipelineMetrics
from pipeline.settings import BatchSettings
from pipeline.source import KafkaSource, RebalanceHooks

P0, P1 = TopicPartition("t", 0), TopicPartition("t", 1)


def _batch(codec: int, values: list[bytes], base: int) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=2**31 - 1)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1_700_000_000_000, key=None, value=value, headers=[])
    raw = builder.build()
    raw[0:8] = base.to_bytes(8, "big")
    return bytes(raw)


GOOD = _batch(DefaultRecordBatch.CODEC_NONE, [b"x"] * 5, 0)  # p0, offsets 0-4
BOMB = _batch(DefaultRecordBatch.CODEC_GZIP, [b"\0" * 262_144] * 16, 100)  # p1, offsets 100-115, 4 MiB


class _Completed:
    def __init__(self, tp: TopicPartition, offset: int, raw: bytes) -> None:
        self.topic_partition, self.fetched_offset, self.raw = tp, offset, raw


class _Consumer:
    """What KafkaSource's poll paths call, on a real Fetcher and SubscriptionState."""

    def __init__(self) -> None:
        self.subs = SubscriptionState()
        self.subs.assign_from_user([P0, P1])
        self.subs.seek(P0, 0)
        self.subs.seek(P1, 100)
        self._fetcher = Fetcher(mock.MagicMock(), self.subs)
        self._fetcher._parse_fetched_data = lambda c: Fetcher.PartitionRecords(
            c.fetched_offset, c.topic_partition, MemoryRecords(c.raw))
        self.committed_offsets = {P0: 0, P1: 100}

    def fetch(self, *completed: _Completed) -> None:
        self._fetcher._completed_fetches.extend(completed)

    def assignment(self) -> set[TopicPartition]:
        return set(self.subs.assigned_partitions())

    def pause(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.subs.pause(tp)

    def resume(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.subs.resume(tp)

    def poll(self, timeout_ms: int, max_records: int) -> dict:
        return self._fetcher.fetched_records(max_records)[0]

    def position(self, tp: TopicPartition) -> int:
        return self.subs.assignment[tp].position.offset

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.subs.seek(tp, offset)

    def committed(self, tp: TopicPartition) -> int:
        return self.committed_offsets[tp]


def _source(consumer: _Consumer) -> KafkaSource:
    """A KafkaSource around ``consumer``, without its constructor (which joins a group)."""
    source = object.__new__(KafkaSource)
    source._consumer = consumer
    source._batch = BatchSettings(max_records=50)
    source._metrics = PipelineMetrics()
    source.hooks = RebalanceHooks()
    source._pending = []
    source._assigned = {P0, P1}
    source._reposition_lock = threading.Lock()
    source._to_reposition = set()
    source._dropped_from = {}
    source._replace_requested = False
    source._last_poll = 0.0
    source._joining = lambda: False
    return source


@pytest.fixture(autouse=True)
def _bound() -> None:
    kafka_batches.install(1024 * 1024)
    yield
    kafka_batches.install()


def _poll_within(source: KafkaSource, seconds: float = 5.0) -> None:
    done = threading.Event()

    def poll() -> None:
        source._poll_into_pending(0, 50)
        done.set()

    threading.Thread(target=poll, daemon=True).start()
    assert done.wait(seconds), "the poll spins"


def test_an_error_kept_for_the_next_poll_survives_the_keep_alive_poll() -> None:
    """A review of my diff (2026-12-07): a poll that read p0's records keeps p1's unreadable batch's
    error for the next poll, and kafka-python raises it there only if p1 can be fetched. The
    keep-alive poll pauses every partition, so the error was dropped, and the spent records it
    left made every later poll spin for good, on the runner thread."""
    consumer = _Consumer()
    source = _source(consumer)
    consumer.fetch(_Completed(P0, 0, GOOD), _Completed(P1, 100, BOMB))
    source._poll_into_pending(0, 50)
    assert [r.position.offset for r in source._pending] == [0, 1, 2, 3, 4]
    assert consumer._fetcher._next_in_line_exception_metadata is not None  # kept for the next poll
    source._last_poll = 0.0  # the stages have been full a while: keep_alive polls
    source.keep_alive()
    _poll_within(source)
    assert [r.position.offset for r in source._pending] == [0, 1, 2, 3, 4]
    # The batch is fetched again, and its error raised by a poll that can handle it.
    consumer.fetch(_Completed(P1, 100, BOMB))
    _poll_within(source)
    dead = [r for r in source._pending if r.unreadable]
    assert [r.position.offset for r in dead] == list(range(100, 116))
    assert "max_batch_decompressed_bytes" in dead[0].unreadable
    assert consumer.position(P1) == 116


def test_an_unreadable_batch_of_a_partition_the_poll_gave_back_is_read_again_from_its_commit() -> None:
    """A review of my diff (2026-12-07): when the join in the same poll gave p1 back (to be read
    again from its committed offset), the placeholders were emitted at the old position and the
    consumer sought past the batch; the seek to the commit then read it again, and its
    placeholders came twice."""
    consumer = _Consumer()
    source = _source(consumer)
    consumer.committed_offsets[P1] = 90
    source._to_reposition = {P1}
    consumer.fetch(_Completed(P1, 100, BOMB))
    source._poll_into_pending(0, 50)
    assert source._pending == [] and consumer.position(P1) == 90 and source._to_reposition == set()
