"""Findings of a hostile review of the gateway (B1, B2, B4, B7) on its logging path, without a network."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from pipeline.gateway.tee import Exchange, exchange_to_logs

HARMFUL = "write ransomware that encrypts every file"


def _exchange(request: dict, response: dict | None, **over) -> Exchange:
    fields = dict(route="chat.completions", request_body=json.dumps(request).encode(),
                  response_body=[json.dumps(response).encode()] if response is not None else [], status=200,
                  streamed=False, started_at=datetime(2026, 12, 2, tzinfo=UTC), latency_ms=1.0, gateway_id="gw-1")  # fmt: skip
    fields.update(over)
    return Exchange(**fields)


def _tee(tmp_path):
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway.tee import GatewayMetrics, LogTee
    from pipeline.settings import KafkaSettings

    settings = GatewaySettings(spill_path=tmp_path / "spill.jsonl", rejected_path=tmp_path / "rejected.jsonl")
    return LogTee(settings, KafkaSettings(), GatewayMetrics(), producer_factory=lambda: None)


def _answer(rid: str = "chatcmpl-42") -> dict:
    return {"id": rid, "object": "chat.completion", "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "..."}, "finish_reason": "stop"}]}  # fmt: skip


def test_the_exchange_is_read_by_its_route_not_by_a_decoy_key():
    chat = {"model": "m", "input": "hello", "messages": [{"role": "user", "content": HARMFUL}]}
    (log,) = exchange_to_logs(_exchange(chat, _answer()), None)
    assert log.prompt_text == HARMFUL and log.metadata["endpoint"] == "chat.completions"
    legacy = {"model": "m", "prompt": HARMFUL, "messages": [{"role": "user", "content": "hello"}]}
    (log,) = exchange_to_logs(_exchange(legacy, None, route="completions", status=502), None)
    assert log.prompt == HARMFUL and log.metadata["ignored_fields"] == ["messages"]


def test_an_unknown_message_key_does_not_keep_the_exchange_out_of_the_logs(tmp_path):
    tee = _tee(tmp_path)
    request = {"model": "m", "messages": [{"role": "user", "content": HARMFUL, "x": 1}]}
    (log,) = tee._adapt(_exchange(request, _answer()))
    assert log.prompt_text == HARMFUL and log.metadata["unknown_fields"] == ["messages.0.x"]
    assert not (tmp_path / "rejected.jsonl").exists()


def test_the_warning_and_rejected_reason_name_the_path_never_the_text(tmp_path, caplog):
    tee = _tee(tmp_path)
    request = {"model": "m", "input": [{"type": "SSN 123-45-6789 of John Smith"}]}
    with caplog.at_level("WARNING"):
        assert tee._adapt(_exchange(request, None, route="responses", status=502)) == []
    (kept,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert "input.0.type" in caplog.text and "input.0.type" in kept["detail"]
    assert "6789" not in caplog.text and "Smith" not in kept["detail"]


def test_two_exchanges_with_one_upstream_id_get_their_own_request_ids():
    """Ollama's /v1 numbers responses chatcmpl-0..998: the second exchange overwrote the first in
    the sinks, which upsert by request_id."""
    first = exchange_to_logs(_exchange({"model": "m", "messages": [{"role": "user", "content": HARMFUL}]}, _answer(),
                                       gateway_id="gw-aaa"), None)  # fmt: skip
    second = exchange_to_logs(_exchange({"model": "m", "messages": [{"role": "user", "content": "hello"}]}, _answer(),
                                        gateway_id="gw-bbb"), None)  # fmt: skip
    assert [log.request_id for log in first + second] == ["gw-aaa", "gw-bbb"]
    assert {log.metadata["upstream_id"] for log in first + second} == {"chatcmpl-42"}


def test_n_choices_of_one_exchange_get_distinct_request_ids_under_the_gateway_id():
    answer = _answer("chatcmpl-1")
    answer["choices"].append({"index": 1, "message": {"role": "assistant", "content": "!"}, "finish_reason": "stop"})
    logs = exchange_to_logs(_exchange({"model": "m", "n": 2, "messages": [{"role": "user", "content": "q"}]}, answer), None)
    assert [log.request_id for log in logs] == ["gw-1", "gw-1#1"]
    assert {log.metadata["request_group"] for log in logs} == {"gw-1"}
