"""How a dead letter the broker refused as too large is cut down (pipeline/deadletter.py), on
the pending items the producer hands back; the whole path against a real broker is in
tests/integration/test_decode_hostile_stream.py."""

from __future__ import annotations

import hashlib

from kafka.errors import MessageSizeTooLargeError
from prometheus_client import CollectorRegistry

from pipeline.deadletter import DeadLetters
from pipeline.metrics import PipelineMetrics
from pipeline.producer import _Pending


def _refused(key: bytes | None, headers: list[tuple[str, bytes]]) -> _Pending:
    return _Pending(label="t-0@1", future=None, topic="dlq", value=b"{" * 1000, key=key, headers=headers,
                    error=MessageSizeTooLargeError("too large"))


def test_the_second_cut_keeps_only_our_own_headers_and_drops_the_key() -> None:
    """A source header named mm.* too, of 1 MB, survived both cuts (they kept every "mm." name),
    so the dead letter stayed over the limit and its partition stopped at every restart (a review,
    2026-12-07). A key over 1 KiB is cut at the first cut and dropped at the second."""
    letters = DeadLetters(producer=None, topic="dlq", metrics=PipelineMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    key = b"k" * 5000
    item = _refused(key, [("mm.note", b"x" * 1_048_560), ("trace", b"t"), ("mm.error.reason", b"invalid_json")])
    letters._cut_down(item)
    headers = dict(item.headers)
    assert item.key == key[:1024] and headers["mm.error.key_truncated_from"] == b"5000"
    assert headers["mm.error.key_sha256"] == hashlib.sha256(key).hexdigest().encode()
    assert "mm.note" in headers and "trace" in headers  # the first cut keeps the source's headers
    letters._cut_down(item)
    assert item.key is None and item.value == b""
    assert set(dict(item.headers)) == {"mm.error.reason", "mm.error.truncated_from", "mm.error.value_sha256",
                                       "mm.error.key_truncated_from", "mm.error.key_sha256"}
