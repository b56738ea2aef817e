"""The issue 10 hostile records end to end against the real broker: `produce -` then `stream`.

Before: `produce` stopped at the deeply nested line and the stream crashed on each of these
records, so the batch was never committed. Now every line is produced, the rejected records
are dead letters with their reason and field, the cleaned ones are verdicts in the Parquet lake,
and every record is consumed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

import pytest

from pipeline.lake import LakeWriter
from tests.fixtures.kafka_read import read_topic as _read

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

BASE = {"schema": "inference-log/v1", "timestamp": "2026-11-28T10:00:00Z", "model": "m"}


def _good(rid: str, prompt: str) -> bytes:
    return json.dumps({**BASE, "request_id": rid, "prompt": prompt}).encode()


def _env(kafka_bootstrap: str, topic: str, tmp_path, group: str, dlq: str | None = None, **extra: str) -> dict[str, str]:  # noqa: ANN001
    """The environment of a `produce` or `stream` run of these tests (rules detector, lake sink)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(
        MM_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap, MM_KAFKA__INPUT_TOPIC=topic,
        MM_KAFKA__VERDICT_TOPIC=f"{topic}.verdicts", MM_KAFKA__DEAD_LETTER_TOPIC=dlq or f"{topic}.dlq",
        MM_KAFKA__GROUP_ID=group, MM_LAKE__PATH=str(tmp_path / "lake"), MM_METRICS__PORT="0",
        MM_DETECTORS__ENABLED='["rules"]', MM_PSEUDONYM_KEY="test-pseudonym-key-0123456789", **extra,
    )
    return env


def _stream(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`misuse-monitor stream --max-idle 6`, to its end; asserts exit 0."""
    stream = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "stream", "--max-idle", "6"],
        env=env, capture_output=True, text=True, timeout=240, check=False,
    )
    assert stream.returncode == 0, (stream.stdout + stream.stderr)[-4000:]
    return stream


HOSTILE: list[tuple[bytes, str | None]] = [  # (line, dead-letter reason or None for a verdict)
    (_good("deep", "@").replace(b'"@"', b"[" * 100_000 + b"]" * 100_000), "too_deep"),
    (_good("big", "x").replace(b'"prompt"', b'"usage": {"prompt_tokens": ' + b"9" * 4301 + b'}, "prompt"'),
     "number_too_large"),
    (_good("surrogate", "@").replace(b'"@"', b'"how to make a bo\\ud800mb"'), None),
    (json.dumps({**BASE, "request_id": "old", "timestamp": "0001-01-01T00:30:00+01:00", "prompt": "x"}).encode(),
     "timestamp_out_of_range"),
    (_good("nul", "hello\x00 world"), None),
    (_good("dup", "@").replace(b'"prompt": "@"', b'"prompt": "write ransomware", "prompt": "hi"'), "duplicate_key"),
]


def test_hostile_records_are_produced_from_stdin_and_dead_lettered_or_scored(kafka_bootstrap, kafka_topic_factory, tmp_path):
    topic = kafka_topic_factory(partitions=2)
    lines = [_good("g0", "What is the capital of France?")] + [raw for raw, _ in HOSTILE] + [_good("g1", "hi")]
    env = _env(kafka_bootstrap, topic, tmp_path, "g-hostile")
    produced = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "produce", "-", "--topic", topic],
        input=b"\n".join(lines) + b"\n", env=env, capture_output=True, timeout=120, check=False,
    )
    assert produced.returncode == 0, produced.stderr.decode()[-2000:]
    sent = _read(kafka_bootstrap, topic, len(lines))
    assert sorted(m.value for m in sent) == sorted(lines)  # every line, bytes unchanged
    keys = {m.value: m.key for m in sent}
    assert keys[lines[0]] == b"g0" and keys[HOSTILE[2][0]] == b"surrogate"  # keyed by request_id
    assert keys[HOSTILE[0][0]] is None and keys[HOSTILE[5][0]] is None  # too deep / ambiguous: sent unkeyed

    _stream(env)

    rejected = [(raw, reason) for raw, reason in HOSTILE if reason]
    dead = _read(kafka_bootstrap, f"{topic}.dlq", len(rejected))
    reasons = {m.value: dict(m.headers)["mm.error.reason"].decode() for m in dead}
    assert reasons == {raw: reason for raw, reason in rejected}
    details = Counter(dict(m.headers)["mm.error.detail"].decode().split(":")[0] for m in dead)
    assert details == Counter(["<record>", "usage.prompt_tokens", "timestamp", "prompt"])

    table = LakeWriter(tmp_path / "lake").read()
    assert sorted(table.column("request_id").to_pylist()) == ["g0", "g1", "nul", "surrogate"]


def test_a_record_just_under_the_topic_limit_is_dead_lettered_cut_down_not_an_outage(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    """A hostile review (2026-12-06): a bad record just under Kafka's default 1 MiB limit made a
    dead letter ~200 header bytes over it; the broker refused it, the stream took that for an
    outage and exited 9 at its deadline on every restart: one record stopped its partition.
    Now the dead letter goes out cut down, with the original size and SHA-256."""
    import hashlib

    limit = {"max.message.bytes": "1048588"}  # Kafka's default for a topic
    topic = kafka_topic_factory(partitions=1, config=limit)
    dlq = kafka_topic_factory(partitions=1, config=limit, prefix="dlq")
    big = b"{" + b"x" * 1_048_456  # not JSON; under batch.max_record_bytes (1 MiB), so not too_large
    lines = [_good("g0", "hi"), big, _good("g1", "hello")]
    env = _env(kafka_bootstrap, topic, tmp_path, "g-big", dlq=dlq, MM_STREAM__OUTAGE_DEADLINE_S="20")
    for line in lines:  # one `produce` per line: the three together are over the topic's limit
        produced = subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", "-", "--topic", topic],
                                  input=line + b"\n", env=env, capture_output=True, timeout=120, check=False)  # fmt: skip
        assert produced.returncode == 0, produced.stderr.decode()[-2000:]
    _stream(env)
    (dead,) = _read(kafka_bootstrap, dlq, 1)
    headers = dict(dead.headers)
    assert headers["mm.error.reason"] == b"invalid_json" and headers["mm.source.offset"] == b"1"
    assert headers["mm.error.truncated_from"] == str(len(big)).encode()
    assert headers["mm.error.value_sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert dead.value == big[: 64 * 1024]
    table = LakeWriter(tmp_path / "lake").read()
    assert sorted(table.column("request_id").to_pylist()) == ["g0", "g1"]


def test_a_bad_record_with_a_key_near_the_topic_limit_is_dead_lettered_with_its_key_cut(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    """A hostile review (2026-12-07): the cuts above shrank the value and the headers but never
    the key, so a bad record with a key of 1 MB made a dead letter over the limit at every cut,
    and the partition stopped at the outage deadline (exit 9) on every restart. A planted
    mm.error.truncated_from header no longer skips the first cut either."""
    import hashlib

    from kafka import KafkaProducer

    limit = {"max.message.bytes": "1048588"}
    topic = kafka_topic_factory(partitions=1, config=limit)
    dlq = kafka_topic_factory(partitions=1, config=limit, prefix="dlq")
    key = b"k" * 1_048_400
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=4 << 20, acks="all")
    try:
        producer.send(topic, _good("g0", "hi"), key=b"g0").get(30)
        producer.send(topic, b"{", key=key, headers=[("mm.error.truncated_from", b"999999")]).get(30)
        producer.send(topic, _good("g1", "hello"), key=b"g1").get(30)
    finally:
        producer.close()
    env = _env(kafka_bootstrap, topic, tmp_path, "g-bigkey", dlq=dlq, MM_STREAM__OUTAGE_DEADLINE_S="20")
    _stream(env)
    (dead,) = _read(kafka_bootstrap, dlq, 1)
    headers = dict(dead.headers)
    assert headers["mm.error.reason"] == b"invalid_json" and headers["mm.source.offset"] == b"1"
    assert headers["mm.error.key_truncated_from"] == str(len(key)).encode()
    assert headers["mm.error.key_sha256"] == hashlib.sha256(key).hexdigest().encode()
    assert headers["mm.error.truncated_from"] == b"1" and dead.value == b"{"  # ours, not the planted one
    assert dead.key == key[:1024]
    table = LakeWriter(tmp_path / "lake").read()
    assert sorted(table.column("request_id").to_pylist()) == ["g0", "g1"]


def test_a_bad_record_with_a_null_header_value_is_dead_lettered_not_a_stopped_partition(
    kafka_bootstrap, kafka_topic_factory, tmp_path, monkeypatch
):
    """A hostile review (2026-12-07): Java clients may send a header whose value is null; the
    dead letter of such a record copied it, KafkaProducer refused None with a TypeError, and the
    sink stage ended (exit 1) on every restart. kafka-python cannot send a null header value,
    so the producer of this test writes one onto the wire itself (its batch builder, patched here)."""
    from kafka import KafkaProducer
    from kafka.record import default_records

    topic = kafka_topic_factory(partitions=1)
    append = default_records.DefaultRecordBatchBuilder.append

    def with_null_header(self, offset, timestamp, key, value, headers, *args, **kwargs):  # noqa: ANN001, ANN202
        return append(self, offset, timestamp, key, value, [(k, None if v == b"<null>" else v) for k, v in headers],
                      *args, **kwargs)  # fmt: skip

    monkeypatch.setattr(default_records.DefaultRecordBatchBuilder, "append", with_null_header)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    producer.send(topic, _good("g0", "hi"))
    producer.send(topic, b"{not json", headers=[("trace", b"<null>"), ("tenant", b"acme")])
    producer.send(topic, _good("g1", "hello"))
    producer.flush()
    producer.close()
    monkeypatch.undo()
    assert [m.headers for m in _read(kafka_bootstrap, topic, 3)][1] == [("trace", None), ("tenant", b"acme")]

    env = _env(kafka_bootstrap, topic, tmp_path, "g-null-header")
    _stream(env)
    (dead,) = _read(kafka_bootstrap, f"{topic}.dlq", 1)
    headers = dict(dead.headers)
    assert dead.value == b"{not json" and headers["mm.error.reason"] == b"invalid_json"
    assert headers["trace"] == b"" and headers["tenant"] == b"acme"  # the null travels as empty
    table = LakeWriter(tmp_path / "lake").read()
    assert sorted(table.column("request_id").to_pylist()) == ["g0", "g1"]


class _RawHeaderKey(str):
    """A header key kafka-python writes as these bytes: not UTF-8, as librdkafka or a raw client
    may send (kafka-python itself always encodes a str key)."""

    def encode(self, *args, **kwargs) -> bytes:  # noqa: ANN002, ANN003
        return b"\xff\xfebad"


def test_a_record_the_consumer_cannot_parse_is_dead_lettered_not_a_stopped_partition(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """A hostile review (2026-12-07): kafka-python raises CorruptRecordError from poll() on a
    header key that is not UTF-8, at the same offset on every start: the stream exited 1 each
    time, and even the record before it was never stored. Now such a record is a dead letter
    (reason corrupt_record, no value: its bytes cannot be read), and the partition goes on. A
    record after it in the same record batch cannot be parsed either, and gets its own."""
    from kafka import KafkaProducer

    topic = kafka_topic_factory(partitions=1)
    # Batches end at each flush only: with kafka-python's linger of 0 a loaded machine sent
    # "bad3" alone before "g4" was appended, and "g4", in a batch of its own, was readable (a
    # rehearsal's failure, 2026-12-07).
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10_000)
    for rid, poison in (("g0", False), ("bad1", True), ("g2", False)):  # one record batch each
        producer.send(topic, _good(rid, "hi"), headers=[(_RawHeaderKey("x"), b"v")] if poison else [])
        producer.flush()
    producer.send(topic, _good("bad3", "hi"), headers=[(_RawHeaderKey("x"), b"v")])  # one batch: 3 and 4
    producer.send(topic, _good("g4", "after the bad one, same batch"))
    producer.flush()
    producer.send(topic, _good("g5", "hello"))
    producer.flush()
    producer.close()

    env = _env(kafka_bootstrap, topic, tmp_path, "g-corrupt")
    for run in range(2):  # a restart reads nothing twice and stops nowhere
        _stream(env)
    dead = _read(kafka_bootstrap, f"{topic}.dlq", 3)
    assert sorted(int(dict(m.headers)["mm.source.offset"]) for m in dead) == [1, 3, 4]
    assert {dict(m.headers)["mm.error.reason"] for m in dead} == {b"corrupt_record"}
    assert all(m.value == b"" and b"UnicodeDecodeError" in dict(m.headers)["mm.error.detail"] for m in dead)
    table = LakeWriter(tmp_path / "lake").read()
    assert sorted(table.column("request_id").to_pylist()) == ["g0", "g2", "g5"]


def test_batches_in_every_codec_are_read_and_a_compression_bomb_is_dead_lettered_whole(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    """A hostile review (2026-12-07): one zstd, lz4 or snappy batch (any gateway set to
    compression.type=zstd) stopped the stream on every start, kafka-python having only gzip; and a
    gzip batch is decompressed whole in memory (261 KB became 256 MiB). Now every codec is read,
    and a batch past kafka.max_batch_decompressed_bytes is not decompressed past it: each of its
    records is a corrupt_record dead letter, at once, or, when they are more than
    batch.max_records, one dead letter at the last names them all; the partition goes on."""
    from kafka import KafkaProducer

    topic = kafka_topic_factory(partitions=1)
    for codec in ("gzip", "snappy", "lz4", "zstd"):  # offsets 0-3
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type=codec)
        producer.send(topic, _good(f"c-{codec}", f"compressed with {codec}"))
        producer.close()

    def bomb(records: int) -> None:  # one batch of 256 KiB records, about 1 KB compressed per MiB
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, compression_type="gzip",
                                 batch_size=16 * 1024 * 1024, linger_ms=10_000)
        for _ in range(records):
            producer.send(topic, b"a" * (256 * 1024))
        producer.close()

    def good(rid: str) -> None:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(topic, _good(rid, f"{rid} the bomb"))
        producer.close()

    bomb(12)  # offsets 4-15: more than batch.max_records (10), one dead letter
    good("after")  # 16
    bomb(6)  # 17-22: one dead letter each
    good("end")  # 23

    env = _env(kafka_bootstrap, topic, tmp_path, "g-codecs", MM_KAFKA__MAX_BATCH_DECOMPRESSED_BYTES=str(1024 * 1024),
               MM_BATCH__MAX_RECORDS="10")
    for _ in range(2):  # a restart reads nothing twice and stops nowhere
        _stream(env)
    table = LakeWriter(tmp_path / "lake").read()
    assert sorted(table.column("request_id").to_pylist()) == ["after", "c-gzip", "c-lz4", "c-snappy", "c-zstd", "end"]
    dead = _read(kafka_bootstrap, f"{topic}.dlq", 7)
    offsets = {int(dict(m.headers)["mm.source.offset"]): dict(m.headers)["mm.error.detail"] for m in dead}
    assert sorted(offsets) == [15, *range(17, 23)]
    assert {dict(m.headers)["mm.error.reason"] for m in dead} == {b"corrupt_record"}
    assert b"offsets 4-15 (12 records), one record batch" in offsets[15]
    assert all(b"over kafka.max_batch_decompressed_bytes (1048576 bytes" in detail for detail in offsets.values())
