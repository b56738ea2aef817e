"""The gateway's tee under a broker outage and crashes (a hostile review, 2026-12-06), against a
real broker of its own that the test stops, and a real spill file."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.gateway.settings import GatewaySettings
from pipeline.gateway.tee import Exchange, GatewayMetrics, LogTee, check_paths
from pipeline.localinfra.base import free_port
from pipeline.localinfra.kafka import create_topic, start_broker
from pipeline.settings import KafkaSettings

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _exchange(i: int) -> Exchange:
    request = json.dumps({"model": "m", "messages": [{"role": "user", "content": f"question {i}"}]}).encode()
    reply = json.dumps({"id": f"up-{i}", "object": "chat.completion", "created": 1760000000, "model": "m",
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}]})  # fmt: skip
    return Exchange(route="chat.completions", request_body=request, response_body=[reply.encode()], status=200,
                    streamed=False, started_at=datetime.now(UTC), latency_ms=1.0, gateway_id=f"gw-{i}")  # fmt: skip


def _wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _spilled(path: Path) -> list[str]:
    return [json.loads(line)["metadata"]["gateway_id"] for line in path.read_text().splitlines() if line.strip()] \
        if path.exists() else []  # fmt: skip


def test_once_the_broker_is_known_down_answered_exchanges_are_spilled_at_once_and_the_outage_is_logged(
    tmp_path, caplog
):
    """Before: every batch sat in the producer for its delivery timeout (10 s) while answered
    exchanges queued in memory behind it; a kill -9 8 s into an outage lost 99 of 100. Nor did a
    later outage write any log line."""
    broker = start_broker(tmp_path / "kafka")
    settings = GatewaySettings(spill_path=tmp_path / "spill.jsonl", rejected_path=tmp_path / "rejected.jsonl",
                               replay_interval_s=60)  # fmt: skip
    tee = LogTee(settings, KafkaSettings(bootstrap_servers=broker.bootstrap, input_topic="logs"), GatewayMetrics())
    try:
        create_topic(broker.bootstrap, "logs", 1)
        tee.start()
        tee.submit(_exchange(0))
        _wait(lambda: tee.status()["kafka_up"], 60, "the first delivery")
        broker.stop()
        with caplog.at_level(logging.WARNING, logger="pipeline.gateway.tee"):
            tee.submit(_exchange(1))  # finds the broker gone: held for the delivery timeout, then spilled
            _wait(lambda: not tee.status()["kafka_up"], 60, "the failed delivery")
            started = time.monotonic()
            for i in range(2, 52):
                tee.submit(_exchange(i))
            _wait(lambda: len(_spilled(settings.spill_path)) == 51, 30, "51 spilled exchanges")
            # At once: well under the producer's 10-s delivery timeout the old code waited per batch.
            assert time.monotonic() - started < 5.0
        assert [r.getMessage() for r in caplog.records if "Kafka unavailable" in r.getMessage()]
        assert sorted(_spilled(settings.spill_path)) == sorted(f"gw-{i}" for i in range(1, 52))
    finally:
        tee.stop(timeout_s=10)
        broker.stop()


def test_a_line_torn_by_a_crash_costs_no_other_record_and_does_not_stop_the_next_start(tmp_path):
    """Before: the next record was appended to the torn line and lost with it; and a spill file
    holding only a torn line made `misuse-monitor gateway` refuse to start."""
    spill = tmp_path / "spill.jsonl"
    settings = GatewaySettings(spill_path=spill, rejected_path=tmp_path / "rejected.jsonl", replay_interval_s=0.2)
    down = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", input_topic="logs")
    tee = LogTee(settings, down, GatewayMetrics())
    tee.start()
    for i in range(2):
        tee.submit(_exchange(i))
    _wait(lambda: len(_spilled(spill)) == 2, 30, "2 spilled")
    tee.stop(timeout_s=10)
    whole = spill.read_bytes()
    spill.write_bytes(whole + whole.splitlines(keepends=True)[0][:40])  # a crash mid-write of a third
    check_paths(settings)  # a torn tail is no reason to refuse the file
    (tmp_path / "only-torn.jsonl").write_bytes(whole[:40])
    check_paths(GatewaySettings(spill_path=tmp_path / "only-torn.jsonl", rejected_path=tmp_path / "r2.jsonl"))
    (tmp_path / "notes.txt").write_text("my notes\n")
    with pytest.raises(Exception, match="not a gateway spill file"):
        check_paths(GatewaySettings(spill_path=tmp_path / "notes.txt", rejected_path=tmp_path / "r3.jsonl"))

    broker = start_broker(tmp_path / "kafka")
    try:
        create_topic(broker.bootstrap, "logs", 1)
        metrics = GatewayMetrics()
        tee = LogTee(settings, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}", input_topic="logs"), metrics)
        tee.start()
        tee.submit(_exchange(3))  # spilled after the torn line, Kafka still unreachable for this tee
        _wait(lambda: len(spill.read_text().splitlines()) == 4, 30, "the fourth line")
        tee.stop(timeout_s=10)
        metrics = GatewayMetrics()
        tee = LogTee(settings, KafkaSettings(bootstrap_servers=broker.bootstrap, input_topic="logs"), metrics)
        tee.start()
        _wait(lambda: not spill.exists() and not (tmp_path / "spill.jsonl.replaying").exists(), 60, "the replay")
        tee.stop(timeout_s=10)
        from tests.fixtures.kafka_read import read_topic

        delivered = sorted(json.loads(m.value)["metadata"]["gateway_id"] for m in read_topic(broker.bootstrap, "logs", 3))
        assert delivered == ["gw-0", "gw-1", "gw-3"]  # gw-3 was glued to the torn line and lost before
        assert metrics.dropped.labels("spill_corrupt")._value.get() == 1
    finally:
        broker.stop()


def test_a_full_rejected_file_is_said_so_not_kept_in(tmp_path, caplog):
    """Before: the warning said "kept in rejected.jsonl" for an exchange the full file dropped."""
    settings = GatewaySettings(spill_path=tmp_path / "spill.jsonl", rejected_path=tmp_path / "rejected.jsonl",
                               rejected_max_bytes=1)  # fmt: skip
    metrics = GatewayMetrics()
    tee = LogTee(settings, KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}"), metrics)
    bad = Exchange(route="chat.completions", request_body=b"{not json", response_body=[], status=200, streamed=False,
                   started_at=datetime.now(UTC), latency_ms=1.0, gateway_id="gw-bad")  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="pipeline.gateway.tee"):
        assert tee.adapt(bad) == []
    messages = [r.getMessage() for r in caplog.records]
    assert not any("kept in" in m for m in messages), messages
    assert any("NOT kept" in m and "rejected_max_bytes" in m for m in messages), messages
    assert metrics.dropped.labels("rejected_full")._value.get() == 1
