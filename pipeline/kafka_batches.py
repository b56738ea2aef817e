"""Compressed record batches read within a bound, and a batch that cannot be read skipped whole.

kafka-python 3.0.12 decompresses a record batch whole, in memory, before it hands out the
batch's first record (``DefaultRecordBatch._maybe_uncompress``): ``fetch_max_bytes`` and
``max_partition_fetch_bytes`` count compressed bytes, and a producer that can write to the
input topic sent 261 KB of gzip that became 256 MiB (768 MiB at peak, three copies); a batch at
the local broker's 16 MiB limit would be about 16 GiB (a hostile review, 2026-12-07). The same
review found that a batch in a codec whose library was not installed (snappy, lz4, zstd: any
gateway set to ``compression.type=zstd``) raised ``UnsupportedCodecError`` from ``poll()`` at the
same offset on every start, and gzip that does not decompress raised ``OSError``: the stream
ended each time. The four codecs' libraries are dependencies now, and :func:`install` replaces
the method with one that decompresses at most ``max_bytes`` (``kafka.max_batch_decompressed_bytes``)
and raises :class:`UnreadableBatch` (a ``CorruptRecordError``, which the source already turns
into dead letters) naming the batch's offsets, for a batch over the bound or one that does not
decompress. The source then accounts for every offset of the batch at once: skipped one offset
at a time, each seek fetched and decompressed the whole batch again (942 ms per offset for a
batch of 65,536 records of 4 KiB; hours of stall).

Why a patch of a private method: kafka-python has no option for it, and its codec functions
take no size. The version is pinned (pyproject.toml), and a test reads the method it replaces
(tests/unit/test_kafka_batches.py).
"""

from __future__ import annotations

import gzip
import io
import struct
from typing import Any

from kafka.errors import CorruptRecordError
from kafka.record.default_records import DefaultRecordBatch

DEFAULT_MAX_BYTES = 64 * 1024 * 1024  # kafka.max_batch_decompressed_bytes
_CHUNK = 1024 * 1024
_ORIGINAL = DefaultRecordBatch._maybe_uncompress  # noqa: SLF001
_max_bytes = DEFAULT_MAX_BYTES


class UnreadableBatch(CorruptRecordError):
    """A record batch that cannot be read: every offset from ``first_offset`` to ``last_offset``."""

    def __init__(self, message: str, first_offset: int, last_offset: int) -> None:
        super().__init__(message)
        self.first_offset = first_offset
        self.last_offset = last_offset


class _TooLarge(Exception):
    pass


def install(max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Decompress every record batch (message format v2) of this process within ``max_bytes`` (the
    last call's bound: one process, one kafka-python). Batches of the formats before v2 (Kafka
    0.10 and older; a Kafka 4 broker accepts none) are read as kafka-python reads them."""
    global _max_bytes
    current = DefaultRecordBatch._maybe_uncompress  # noqa: SLF001
    if current is not _ORIGINAL and current is not _bounded_maybe_uncompress:
        raise RuntimeError("kafka-python's record batch is not the one pipeline/kafka_batches.py knows")
    _max_bytes = max_bytes
    DefaultRecordBatch._maybe_uncompress = _bounded_maybe_uncompress  # noqa: SLF001


def _bounded_maybe_uncompress(self: Any) -> None:
    if self._decompressed:
        return
    codec = self.compression_type
    if codec != self.CODEC_NONE:
        data = bytes(memoryview(self._buffer)[self._pos:])
        try:
            self._assert_has_codec(codec)
            uncompressed = _decompress(codec, data, _max_bytes)
        except _TooLarge:
            raise UnreadableBatch(
                f"record batch at offsets {self.base_offset}-{self.last_offset}: decompressed, it is over "
                f"kafka.max_batch_decompressed_bytes ({_max_bytes} bytes; {len(data)} bytes compressed)",
                self.base_offset, self.last_offset) from None
        except Exception as exc:  # noqa: BLE001 - whatever a codec raises on bytes it cannot read
            raise UnreadableBatch(
                f"record batch at offsets {self.base_offset}-{self.last_offset} does not decompress: {exc!r}"[:500],
                self.base_offset, self.last_offset) from exc
        self._buffer = uncompressed  # a bytearray already: no third copy (kafka-python makes one)
        self._pos = 0
    self._decompressed = True


def _decompress(codec: int, data: bytes, max_bytes: int) -> bytearray:
    if codec == DefaultRecordBatch.CODEC_GZIP:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as reader:
            return _read_within(reader, max_bytes)
    if codec == DefaultRecordBatch.CODEC_ZSTD:
        import zstandard

        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True) as reader:
            return _read_within(reader, max_bytes)
    if codec == DefaultRecordBatch.CODEC_LZ4:
        import lz4.frame

        decompressor = lz4.frame.LZ4FrameDecompressor()
        out = decompressor.decompress(data, max_length=max_bytes + 1)
        if len(out) > max_bytes:
            raise _TooLarge
        if not decompressor.eof:  # a frame cut short: kafka-python's own decoder raises too
            raise ValueError("lz4 frame cut short")
        return bytearray(out)
    if codec == DefaultRecordBatch.CODEC_SNAPPY:
        return _snappy(data, max_bytes)
    raise ValueError(f"unknown compression codec {codec}")


def _read_within(reader: Any, max_bytes: int) -> bytearray:
    out = bytearray()
    while chunk := reader.read(min(_CHUNK, max_bytes + 1 - len(out))):
        out += chunk
        if len(out) > max_bytes:
            raise _TooLarge
    return out


_XERIAL_MAGIC = b"\x82SNAPPY\x00"


def _snappy(data: bytes, max_bytes: int) -> bytearray:
    """Snappy as kafka-python reads it (xerial blocks, or one raw block), each block's stated
    length checked before it is decompressed."""
    import snappy

    blocks: list[bytes] = []
    if data[:8] == _XERIAL_MAGIC and len(data) >= 16:
        cursor = 16
        while cursor < len(data):
            (size,) = struct.unpack_from("!i", data, cursor)
            cursor += 4
            if size < 0 or cursor + size > len(data):  # a negative size looped forever (a review, 2026-12-07)
                raise ValueError(f"snappy block of {size} bytes at byte {cursor - 4} of {len(data)}")
            blocks.append(data[cursor:cursor + size])
            cursor += size
        if not blocks:
            raise ValueError("snappy stream without a block")
    else:
        blocks.append(data)
    out = bytearray()
    for block in blocks:
        if len(out) + _raw_snappy_length(block) > max_bytes:
            raise _TooLarge
        out += snappy.decompress(block)
    return out


def _raw_snappy_length(block: bytes) -> int:
    """The uncompressed length a raw snappy block states first (a varint)."""
    length = shift = 0
    for byte in block[:5]:
        length |= (byte & 0x7F) << shift
        if byte < 0x80:
            return length
        shift += 7
    raise ValueError("snappy block without a length")
