"""The gateway's parsing of raw exchanges (SSE, encodings, upstream errors), without a network."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime

import pytest

from pipeline.gateway.tee import Exchange, exchange_to_logs, parse_sse

REQUEST = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "user": "u-1"}).encode()


def _exchange(body: list[bytes], **over) -> Exchange:
    fields = dict(route="chat.completions", request_body=REQUEST, response_body=body, status=200, streamed=False,
                  started_at=datetime(2026, 11, 28, 10, 0, tzinfo=UTC), latency_ms=12.3456, gateway_id="gw-1")  # fmt: skip
    fields.update(over)
    return Exchange(**fields)


def _chunk(content: str) -> bytes:
    payload = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": None}]}  # fmt: skip
    return f"data: {json.dumps(payload)}".encode()


def test_sse_framing_crlf_comments_done_and_split_network_chunks():
    body = b": keep-alive\r\n\r\n" + _chunk("Hel") + b"\r\n\r\n" + _chunk("lo") + b"\n\ndata: [DONE]\n\n"
    events = parse_sse(body)
    assert [e["choices"][0]["delta"]["content"] for e in events] == ["Hel", "lo"]
    # The proxy stores network chunks as they came; a chunk boundary inside an event is fine.
    split = [body[:37], body[37:90], body[90:]]
    log = exchange_to_logs(_exchange(split, streamed=True), deployment="d")[0]
    assert (log.completion, log.request_id, log.deployment, log.latency_ms) == ("Hello", "chatcmpl-1", "d", 12.346)


def test_responses_api_event_stream_with_event_lines():
    final = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "m",
             "output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]}  # fmt: skip
    body = (b"event: response.created\ndata: " + json.dumps({"type": "response.created", "response": final}).encode()
            + b"\n\nevent: response.completed\ndata: " + json.dumps({"type": "response.completed", "response": final}).encode()
            + b"\n\n")  # fmt: skip
    request = json.dumps({"model": "m", "input": "hello"}).encode()
    log = exchange_to_logs(_exchange([body], streamed=True, route="responses", request_body=request), None)[0]
    assert (log.completion, log.request_id, log.metadata["endpoint"]) == ("ok", "resp_1", "responses")


def test_gzip_body_is_decoded_for_logging():
    response = {"id": "chatcmpl-9", "created": 1, "model": "m", "choices": [{"message": {"content": "zipped"}}]}
    log = exchange_to_logs(_exchange([gzip.compress(json.dumps(response).encode())], content_encoding="gzip"), None)[0]
    assert log.completion == "zipped"
    with pytest.raises(ValueError, match="br"):
        exchange_to_logs(_exchange([b"\x00"], content_encoding="br"), None)


def test_upstream_error_still_logs_the_prompt_with_the_status():
    (log,) = exchange_to_logs(_exchange([b'{"error": {"message": "model overloaded"}}'], status=503), None)
    assert log.request_id == "gw-1" and log.completion is None and log.prompt_text == "hi"
    assert log.metadata["upstream_status"] == 503 and log.user_id == "u-1"


def test_partial_stream_of_a_client_that_left_is_marked():
    (log,) = exchange_to_logs(_exchange([_chunk("Hal") + b"\n\n"], streamed=True, complete=False, ttft_ms=4.2), None)
    assert log.completion == "Hal" and log.metadata["client_disconnected"] is True and log.metadata["ttft_ms"] == 4.2


class _FlakyProducer:
    """Stands in for GatewayProducer in-process: delivery fails while ``down`` is set."""

    def __init__(self) -> None:
        self.down = True
        self.delivered: list[str] = []
        self._pending: list = []

    def send(self, log) -> None:
        self._pending.append(log)

    def flush(self, timeout_s: float = 30.0) -> int:
        from pipeline.producer import DeliveryError

        pending, self._pending = self._pending, []
        if self.down:
            raise DeliveryError([(log.request_id, ConnectionError("broker down")) for log in pending])
        self.delivered.extend(log.request_id for log in pending)
        return len(pending)

    def close(self) -> None:
        pass


def test_spill_replay_resumes_after_a_failed_batch_without_loss_or_copying(tmp_path):
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway.tee import GatewayMetrics, LogTee
    from pipeline.settings import KafkaSettings
    from tests.fixtures.logs import make_log

    producer = _FlakyProducer()
    settings = GatewaySettings(spill_path=tmp_path / "spill.jsonl", batch_max=4)
    tee = LogTee(settings, KafkaSettings(), GatewayMetrics(), producer_factory=lambda: producer)
    ids = [f"r{i}" for i in range(10)]
    tee._spill(make_log(request_id=rid) for rid in ids)
    tee._replay()  # broker down: the first batch fails and goes back to the spill file
    assert producer.delivered == [] and tee._replay_offset > 0
    spilled_again = [json.loads(line)["request_id"] for line in settings.spill_path.read_text().splitlines()]
    assert spilled_again == ids[:4]
    producer.down = False
    tee._replay()  # resumes in the replay file after the failed batch
    tee._replay()  # then the spill file (the batch that failed)
    assert sorted(producer.delivered) == sorted(ids) and len(producer.delivered) == len(ids)
    assert not settings.spill_path.exists() and tee.status()["spill_bytes"] == 0
