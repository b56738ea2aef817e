"""Record batches decompressed within a bound (pipeline/kafka_batches.py), with kafka-python's own
record classes: every codec a producer may use, a compression bomb, bytes that do not decompress."""

from __future__ import annotations

import inspect
import time

import pytest
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

from pipeline import kafka_batches

CODECS = {"gzip": DefaultRecordBatch.CODEC_GZIP, "snappy": DefaultRecordBatch.CODEC_SNAPPY,
          "lz4": DefaultRecordBatch.CODEC_LZ4, "zstd": DefaultRecordBatch.CODEC_ZSTD}


def _batch(codec: int, values: list[bytes], base_offset: int = 100) -> bytes:
    builder = DefaultRecordBatchBuilder(magic=2, compression_type=codec, is_transactional=False, producer_id=-1,
                                        producer_epoch=-1, base_sequence=-1, batch_size=2**31 - 1)
    for i, value in enumerate(values):
        builder.append(i, timestamp=1_700_000_000_000, key=None, value=value, headers=[])
    raw = builder.build()
    raw[0:8] = base_offset.to_bytes(8, "big")  # the broker sets the base offset (no CRC covers it)
    return bytes(raw)


def _values(raw: bytes) -> list[bytes]:
    batch = MemoryRecords(raw).next_batch()
    return [record.value for record in batch]


@pytest.fixture(autouse=True)
def _bound() -> None:
    kafka_batches.install(1024 * 1024)
    yield
    kafka_batches.install()


def test_the_method_replaced_is_the_one_this_module_was_written_for() -> None:
    """kafka-python is pinned; if its batch decompression changes, the bounded copy must be read again."""
    source = inspect.getsource(kafka_batches._ORIGINAL)
    for line in ("uncompressed = gzip_decode(data)", "uncompressed = snappy_decode(data.tobytes())",
                 "uncompressed = lz4_decode(data.tobytes())", "uncompressed = zstd_decode(data.tobytes())",
                 "self._buffer = bytearray(uncompressed)", "self._pos = 0", "self._decompressed = True"):
        assert line in source
    assert DefaultRecordBatch._maybe_uncompress is kafka_batches._bounded_maybe_uncompress


@pytest.mark.parametrize("codec", CODECS, ids=list(CODECS))
def test_every_codec_is_read(codec: str) -> None:
    """Without zstandard, lz4 and python-snappy installed, a batch in those codecs raised
    UnsupportedCodecError from poll() on every start (a hostile review, 2026-12-07)."""
    values = [f"record {i} ".encode() * 50 for i in range(20)]
    assert _values(_batch(CODECS[codec], values)) == values


@pytest.mark.parametrize("codec", CODECS, ids=list(CODECS))
def test_a_batch_that_decompresses_past_the_bound_is_unreadable_with_its_offsets(codec: str) -> None:
    """A compression bomb: gzip of 261 KB became 256 MiB in memory (768 MiB at peak). Now at most
    the bound (1 MiB here) plus a chunk is decompressed, and the batch names its offsets."""
    raw = _batch(CODECS[codec], [b"\x00" * (256 * 1024)] * 16)  # 4 MiB of records
    assert len(raw) < 4 * 1024 * 1024 // 10
    started = time.perf_counter()
    with pytest.raises(kafka_batches.UnreadableBatch) as err:
        _values(raw)
    assert time.perf_counter() - started < 5
    assert (err.value.first_offset, err.value.last_offset) == (100, 115)
    assert "over kafka.max_batch_decompressed_bytes (1048576 bytes" in str(err.value)
    # Within a bound large enough, the same batch reads.
    kafka_batches.install(8 * 1024 * 1024)
    assert len(_values(raw)) == 16


@pytest.mark.parametrize("codec", CODECS, ids=list(CODECS))
def test_bytes_that_do_not_decompress_are_an_unreadable_batch_not_a_crash(codec: str) -> None:
    """gzip that does not decompress raised OSError from poll(): not a CorruptRecordError, so the
    stream ended at the same offset on every start."""
    raw = bytearray(_batch(CODECS[codec], [b"hello " * 100] * 3))
    raw[61:] = b"\x17" * (len(raw) - 61)  # the records part, after the 61-byte batch header
    batch = MemoryRecords(bytes(raw)).next_batch()
    with pytest.raises(kafka_batches.UnreadableBatch, match="does not decompress") as err:
        list(batch)
    assert (err.value.first_offset, err.value.last_offset) == (100, 102)


def _cut_records(raw: bytes, records: bytes) -> bytes:
    """``raw`` with its records part (after the 61-byte batch header) replaced, and the batch
    length (bytes 8-11: the size after them) set to fit."""
    return raw[:8] + (49 + len(records)).to_bytes(4, "big") + raw[12:61] + records


@pytest.mark.timeout(30)
def test_a_snappy_block_of_negative_size_is_unreadable_not_a_loop() -> None:
    """A review of this module (2026-12-07): a xerial block stating -4 bytes moved the reader back
    to where it was, forever, with its memory growing."""
    from kafka.codec import snappy_encode

    xerial = bytearray(snappy_encode(b"hello " * 100, xerial_compatible=True))
    xerial[16:20] = (-4).to_bytes(4, "big", signed=True)
    batch = MemoryRecords(_cut_records(_batch(CODECS["snappy"], [b"hello " * 100]), bytes(xerial))).next_batch()
    started = time.perf_counter()
    with pytest.raises(kafka_batches.UnreadableBatch, match="does not decompress"):
        list(batch)
    assert time.perf_counter() - started < 1


def test_an_lz4_frame_cut_short_is_unreadable() -> None:
    """kafka-python's own decoder raises on a frame cut short; the bounded one returned what it had."""
    raw = _batch(CODECS["lz4"], [b"hello " * 1000] * 3)
    batch = MemoryRecords(_cut_records(raw, raw[61:-3])).next_batch()
    with pytest.raises(kafka_batches.UnreadableBatch, match="cut short"):
        list(batch)
