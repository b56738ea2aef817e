"""The gateway's parsing of raw exchanges (SSE, encodings, upstream errors), without a network."""

from __future__ import annotations

import gzip
import json
import os
import stat
import time
from pathlib import Path
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
    assert (log.completion, log.request_id, log.deployment, log.latency_ms) == ("Hello", "gw-1", "d", 12.346)
    assert log.metadata["upstream_id"] == "chatcmpl-1"


def test_responses_api_event_stream_with_event_lines():
    final = {"id": "resp_1", "object": "response", "created_at": 1, "status": "completed", "model": "m",
             "output": [{"type": "message", "content": [{"type": "output_text", "text": "ok"}]}]}  # fmt: skip
    body = (b"event: response.created\ndata: " + json.dumps({"type": "response.created", "response": final}).encode()
            + b"\n\nevent: response.completed\ndata: " + json.dumps({"type": "response.completed", "response": final}).encode()
            + b"\n\n")  # fmt: skip
    request = json.dumps({"model": "m", "input": "hello"}).encode()
    log = exchange_to_logs(_exchange([body], streamed=True, route="responses", request_body=request), None)[0]
    assert (log.completion, log.request_id, log.metadata["endpoint"]) == ("ok", "gw-1", "responses")
    assert log.metadata["upstream_id"] == "resp_1"


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

    def forget_failed(self) -> None:
        pass

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


def _tee(tmp_path, producer, **over):
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway.tee import GatewayMetrics, LogTee
    from pipeline.settings import KafkaSettings

    settings = GatewaySettings(spill_path=tmp_path / "spill.jsonl", rejected_path=tmp_path / "rejected.jsonl", **over)
    metrics = GatewayMetrics()
    return LogTee(settings, KafkaSettings(), metrics, producer_factory=lambda: producer), metrics


def _sample(metrics, name: str, **labels) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return value or 0.0


# Exchanges that once killed the logging worker thread (a hostile check, 2026-12-02): after any
# of them nothing more was logged for any client, the poison's batch-mates were lost without a
# count, and /healthz still said ok. Request-side shapes and upstream-side shapes.
_POISON = {
    "tool_call_name_number": ({"model": "m", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": 7, "arguments": 1}}]},
    ]}, [b'{"choices": []}']),
    "tool_calls_string": ({"model": "m", "messages": [{"role": "assistant", "tool_calls": "x"}]}, [b'{"choices": []}']),
    "n_list": ({"model": "m", "prompt": ["a", "b"], "n": [2]}, [b'{"choices": []}']),
    "nested_100k": (None, [b'{"choices": []}']),
    "sse_data_null": ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, [b"data: null\n\n"]),
    "choice_index_null": ({"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                          [b'{"choices": [{"index": null, "message": {"content": "x"}}]}']),
    "corrupt_gzip": ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, [b"\x1f\x8b\x08\x00garbage"]),
}


@pytest.mark.parametrize("name", sorted(_POISON))
def test_a_poison_exchange_is_kept_with_its_reason_and_the_worker_goes_on(tmp_path, name):
    import base64
    import time

    request, response = _POISON[name]
    body = b"[" * 100_000 + b"]" * 100_000 if request is None else json.dumps(request).encode()
    streamed = response[0].startswith(b"data:")
    encoding = "gzip" if response[0].startswith(b"\x1f\x8b") else None
    producer = _FlakyProducer()
    producer.down = False
    tee, metrics = _tee(tmp_path, producer, batch_max=10)
    tee.submit(_exchange([b'{"id": "good-1", "choices": [{"message": {"content": "a"}}]}'], gateway_id="good-1"))
    tee.submit(_exchange(response, request_body=body, gateway_id="poison", streamed=streamed, content_encoding=encoding))
    tee.submit(_exchange([b'{"id": "good-2", "choices": [{"message": {"content": "b"}}]}'], gateway_id="good-2"))
    tee.start()  # all three in the worker's first batch
    deadline = time.monotonic() + 10
    while len(producer.delivered) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tee.status()["worker_alive"]
    tee.submit(_exchange([b'{"id": "good-3", "choices": [{"message": {"content": "c"}}]}'], gateway_id="good-3"))
    tee.stop(timeout_s=10)
    assert producer.delivered == ["good-1", "good-2", "good-3"]
    (kept,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert kept["gateway_id"] == "poison" and kept["reason"] and kept["detail"]
    assert base64.b64decode(kept["request_body_b64"]) == body  # kept as it arrived
    assert base64.b64decode(kept["response_body_b64"]) == b"".join(response)
    assert _sample(metrics, "mm_gateway_logs_rejected_total", reason=kept["reason"]) == 1
    assert _sample(metrics, "mm_gateway_logs_dropped_total", reason="adapter_error") == 0


def test_the_warning_for_a_rejected_exchange_never_quotes_its_text(tmp_path, caplog):
    """int() of a request value put that value (here a name and an address) into the log line."""
    producer = _FlakyProducer()
    producer.down = False
    tee, _ = _tee(tmp_path, producer)
    secret = "Jane Roe, 12 Elm Street"
    request = json.dumps({"model": "m", "prompt": ["a", "b"], "n": secret}).encode()
    with caplog.at_level("WARNING"):
        assert tee._adapt(_exchange([b'{"choices": []}'], request_body=request)) == []
    assert "not logged" in caplog.text and "Jane" not in caplog.text and "Elm" not in caplog.text


def test_the_rejected_file_is_bounded_and_what_does_not_fit_is_counted(tmp_path):
    producer = _FlakyProducer()
    tee, metrics = _tee(tmp_path, producer, rejected_max_bytes=1500)
    bad = _exchange([b'{"choices": []}'], request_body=b"not json" * 50)
    for _ in range(5):
        tee._adapt(bad)
    kept = (tmp_path / "rejected.jsonl").read_text().splitlines()
    assert 1 <= len(kept) < 5 and (tmp_path / "rejected.jsonl").stat().st_size <= 1500
    assert _sample(metrics, "mm_gateway_logs_dropped_total", reason="rejected_full") == 5 - len(kept)


@pytest.mark.parametrize("encoding", [None, "gzip", "deflate"])
def test_a_stream_cut_inside_an_event_keeps_what_came_before(encoding):
    """The upstream (or the client) went away mid-event: before, the exchange was dropped, prompt
    included, and a cut gzip or deflate body killed the worker."""
    import zlib

    body = _chunk("Step 1: ") + b"\n\n" + _chunk("Step 2: mix")[:40]
    if encoding == "gzip":
        body = gzip.compress(body)[:-12]
    elif encoding == "deflate":
        body = zlib.compress(body)[:-6]
    (log,) = exchange_to_logs(_exchange([body], streamed=True, complete=False, content_encoding=encoding), None)
    assert log.prompt_text == "hi" and log.completion.startswith("Step 1: ")
    assert log.metadata["client_disconnected"] is True
    if encoding is None:
        assert log.metadata["stream_cut"] is True


def test_healthz_answers_503_once_the_logging_worker_is_gone(tmp_path):
    """Requests would still be proxied with nothing logged: the health check must say so."""
    import asyncio

    from pipeline.gateway.app import Gateway
    from pipeline.settings import Settings

    producer = _FlakyProducer()
    tee, _ = _tee(tmp_path, producer)
    gateway = Gateway(Settings(gateway={"spill_path": str(tmp_path / "s.jsonl")}), None, tee)
    assert asyncio.run(gateway.healthz(None)).status_code == 200  # not started yet: nothing to report
    tee.start()
    assert asyncio.run(gateway.healthz(None)).status_code == 200
    tee.stop(timeout_s=5)  # the thread has ended
    response = asyncio.run(gateway.healthz(None))
    assert response.status_code == 503 and json.loads(response.body)["status"] == "logging_stopped"


def test_a_spill_path_the_replay_would_damage_is_refused_before_serving(tmp_path):
    """A careless newcomer (2026-12-02): `--spill-path notes.txt` got the notes deleted (their lines
    were dropped as corrupt spill lines), and a directory as spill path was renamed whole."""
    from pipeline.exits import ConfigError
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway.tee import check_paths
    from tests.fixtures.logs import make_log

    notes = tmp_path / "notes.txt"
    notes.write_text("buy milk\ncall the bank\n")
    with pytest.raises(ConfigError, match="not a gateway spill file"):
        check_paths(GatewaySettings(spill_path=notes, rejected_path=tmp_path / "r.jsonl"))
    assert notes.read_text() == "buy milk\ncall the bank\n"
    with pytest.raises(ConfigError, match="is a directory"):
        check_paths(GatewaySettings(spill_path=tmp_path, rejected_path=tmp_path / "r.jsonl"))
    with pytest.raises(ConfigError, match="rejected_path"):
        check_paths(GatewaySettings(spill_path=tmp_path / "s.jsonl", rejected_path=tmp_path))
    # A spill file left by an earlier run (or none) is what the replay is for: accepted.
    spill = tmp_path / "spill.jsonl"
    check_paths(GatewaySettings(spill_path=spill, rejected_path=tmp_path / "r.jsonl"))
    spill.write_text(make_log(request_id="left-over").model_dump_json(by_alias=True) + "\n")
    check_paths(GatewaySettings(spill_path=spill, rejected_path=tmp_path / "r.jsonl"))


def test_a_record_the_broker_refuses_for_its_size_is_kept_not_spilled_forever(tmp_path):
    """A hostile check (2026-12-02): an oversized record was handled as a broker outage: spilled,
    replayed and re-spilled every interval, with mm_gateway_kafka_up held at 0 meanwhile."""
    from kafka.errors import MessageSizeTooLargeError

    from pipeline.producer import DeliveryError
    from tests.fixtures.logs import make_log

    class _Refusing(_FlakyProducer):
        def flush(self, timeout_s: float = 30.0) -> int:
            pending, self._pending = self._pending, []
            big = [log for log in pending if log.request_id == "big"]
            self.delivered.extend(log.request_id for log in pending if log.request_id != "big")
            if big:
                raise DeliveryError([("big", MessageSizeTooLargeError("too large"))])
            return len(pending)

    producer = _Refusing()
    tee, metrics = _tee(tmp_path, producer)
    tee._deliver([make_log(request_id="a"), make_log(request_id="big", metadata={"gateway_id": "gw-9"}), make_log(request_id="b")])
    assert producer.delivered == ["a", "b"] and tee.status()["kafka_up"] is True
    assert not (tmp_path / "spill.jsonl").exists()
    (kept,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert kept["reason"] == "refused_by_kafka" and kept["detail"] == "MessageSizeTooLargeError"
    assert kept["gateway_id"] == "gw-9" and kept["log"]["request_id"] == "big"
    assert _sample(metrics, "mm_gateway_logs_rejected_total", reason="refused_by_kafka") == 1


def _answer(rid: str) -> list[bytes]:
    return [json.dumps({"id": rid, "choices": [{"message": {"content": "ok"}}]}).encode()]


def _spilled_ids(tmp_path) -> list[str]:
    return [json.loads(line)["request_id"] for line in (tmp_path / "spill.jsonl").read_text().splitlines()]


def test_a_full_queue_never_makes_the_request_path_wait_for_the_spill_file(tmp_path):
    """The proxy calls submit() on its event loop. With the queue full, submit() used to adapt the
    exchange and append it to the spill file itself, so it waited for the file (held here, as a
    replay or a large spill holds it) and every request behind it waited too (a hostile check,
    2026-12-02: 1.7 s of a stalled event loop)."""
    import threading

    producer = _FlakyProducer()  # down: every delivery attempt spills
    tee, metrics = _tee(tmp_path, producer, queue_max=10, batch_max=1)
    ids = [f"r{i}" for i in range(15)]
    done = threading.Event()

    def burst() -> None:
        for rid in ids:
            tee.submit(_exchange(_answer(rid), gateway_id=rid))
        done.set()

    tee.start()
    with tee._spill_lock:  # the spill file is busy
        threading.Thread(target=burst, daemon=True).start()
        assert done.wait(5), "submit() waited for the spill file"
        assert tee.status()["spill_queue_depth"] > 0
    tee.stop(timeout_s=10)
    assert sorted(_spilled_ids(tmp_path)) == sorted(ids)  # nothing lost
    assert _sample(metrics, "mm_gateway_logs_spilled_inline_total") == 0


def test_when_both_queues_are_full_the_exchange_is_spilled_inline_and_counted(tmp_path):
    producer = _FlakyProducer()
    tee, metrics = _tee(tmp_path, producer, queue_max=1)  # not started: nothing drains the queues
    for rid in ("a", "b", "c"):
        tee.submit(_exchange(_answer(rid), gateway_id=rid))
    assert _spilled_ids(tmp_path) == ["c"]  # the third found both queues full
    assert _sample(metrics, "mm_gateway_logs_spilled_inline_total") == 1
    tee.stop(timeout_s=1)
    assert sorted(_spilled_ids(tmp_path)) == ["a", "b", "c"]



def test_the_queues_are_bounded_in_bytes_too(tmp_path):
    """Each logging queue held up to queue_max (10,000) exchanges of up to max_tee_bytes (8 MB)
    each: 80 GB while Kafka hung (a hostile review, 2026-12-05). queue_max_bytes bounds them in
    bytes as well; past it an exchange overflows as if the queue were full, and nothing is lost."""
    producer = _FlakyProducer()
    tee, metrics = _tee(tmp_path, producer, queue_max_bytes=64 * 1024)  # not started: nothing drains
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": "x" * 20_000}]}).encode()
    ids = [f"r{i}" for i in range(10)]
    for rid in ids:
        tee.submit(_exchange(_answer(rid), gateway_id=rid, request_body=big))
    status = tee.status()
    assert status["queue_depth"] == 3 and status["spill_queue_depth"] == 3  # 3 x ~20 KB fit in 64 KB
    assert status["queue_bytes"] <= 64 * 1024
    assert _sample(metrics, "mm_gateway_logs_spilled_inline_total") == 4
    tee.stop(timeout_s=5)
    assert sorted(_spilled_ids(tmp_path)) == sorted(ids)  # nothing lost


@pytest.fixture
def usual_umask():
    """The umask most hosts run with (0022: new files 0644, readable by every local account)."""
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_the_spill_and_rejected_files_are_readable_by_their_owner_only(tmp_path, usual_umask):
    """Both hold prompts as they arrived. They were created with the umask's mode (0644 here):
    every account on the host could read every spilled prompt (a privacy review, 2026-12-06)."""
    from tests.fixtures.logs import make_log

    tee, _ = _tee(tmp_path, _FlakyProducer())
    tee._spill([make_log(request_id="r1", prompt="my card is 4111 1111 1111 1111")])
    tee._adapt(_exchange([b'{"choices": []}'], request_body=b"not json"))
    tee._replay()  # the broker is down: the spill file goes to .replaying and back
    for name in ("spill.jsonl", "rejected.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    assert (tmp_path / "spill.jsonl.replaying").exists()
    assert stat.S_IMODE((tmp_path / "spill.jsonl.replaying").stat().st_mode) == 0o600


def test_an_existing_spill_file_keeps_the_mode_its_operator_gave_it(tmp_path, usual_umask):
    from tests.fixtures.logs import make_log

    (tmp_path / "spill.jsonl").write_text("")
    (tmp_path / "spill.jsonl").chmod(0o640)  # a log shipper's group may read it
    tee, _ = _tee(tmp_path, _FlakyProducer())
    tee._spill([make_log(request_id="r1")])
    assert stat.S_IMODE((tmp_path / "spill.jsonl").stat().st_mode) == 0o640


def test_the_spill_file_stops_at_spill_max_bytes_and_counts_what_it_drops(tmp_path):
    """An outage long enough filled the disk the gateway shares with others; with
    gateway.spill_max_bytes the spill file (with what is left of one being replayed) stops at
    the cap, and what does not fit is counted as dropped, never half-written."""
    from tests.fixtures.logs import make_log

    tee, metrics = _tee(tmp_path, _FlakyProducer(), spill_max_bytes=4096)
    tee._spill([make_log(request_id=f"r{i}", prompt="x" * 500) for i in range(20)])
    kept = _spilled_ids(tmp_path)
    assert 1 <= len(kept) < 20 and kept == [f"r{i}" for i in range(len(kept))]
    assert (tmp_path / "spill.jsonl").stat().st_size <= 4096
    assert _sample(metrics, "mm_gateway_logs_dropped_total", reason="spill_full") == 20 - len(kept)
    assert _sample(metrics, "mm_gateway_logs_spilled_total") == len(kept)
    tee._replay()  # the broker is still down: the failed batch goes back; the cap counts both files
    tee._spill([make_log(request_id="late", prompt="x" * 500)])
    assert tee.status()["spill_bytes"] <= 4096
    assert _sample(metrics, "mm_gateway_logs_dropped_total", reason="spill_full") == 21 - len(kept)  # "late" too
    replaying = (tmp_path / "spill.jsonl.replaying").read_bytes()[tee._replay_offset :].decode().splitlines()
    assert sorted(_spilled_ids(tmp_path) + [json.loads(line)["request_id"] for line in replaying]) == sorted(kept)


@pytest.mark.parametrize("streamed", [False, True], ids=["json", "event-stream"])
def test_a_compressed_response_is_inflated_within_max_tee_bytes(streamed):
    """A hostile review (2026-12-07): max_tee_bytes bounded the compressed bytes only; a 306 KB
    gzip body became one record with a 314,572,800-character completion (hundreds of MB held),
    too large for Kafka and for the rejected file, so the prompt was lost. Past the cap the
    response is handled as any response over it: an event stream keeps the events that fit."""
    import tracemalloc

    filler = "A" * (50 * 1024 * 1024)
    if streamed:
        raw = _chunk("Step 1: ") + b"\n\n" + _chunk(filler) + b"\n\ndata: [DONE]\n\n"
    else:
        raw = json.dumps({"id": "c", "model": "m", "choices": [{"message": {"content": filler}}]}).encode()
    bomb = gzip.compress(raw)
    assert len(bomb) < 200_000
    tracemalloc.start()
    (log,) = exchange_to_logs(_exchange([bomb], streamed=streamed, content_encoding="gzip"), None, max_bytes=1 << 20)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert log.prompt_text == "hi" and log.metadata["response_truncated"] is True
    assert log.completion == ("Step 1: " if streamed else None)
    assert peak < 8 << 20, peak  # about the cap, not the 50 MB the body inflates to
    small = gzip.compress(raw[: 1 << 19]) if streamed else gzip.compress(json.dumps(
        {"id": "c", "model": "m", "choices": [{"message": {"content": "fits"}}]}).encode())  # fmt: skip
    (fits,) = exchange_to_logs(_exchange([small], streamed=streamed, content_encoding="gzip", complete=not streamed),
                               None, max_bytes=1 << 20)  # fmt: skip
    assert "response_truncated" not in fits.metadata


@pytest.mark.parametrize("where", ["under-a-file", "in-proc"])
def test_a_spill_or_rejected_path_that_cannot_be_written_is_refused_before_serving(tmp_path, where):
    """A hostile review (2026-12-07): `--spill-path /proc/1/spill.jsonl` started; in a Kafka
    outage every log was then lost (spill_failed) behind a healthy /healthz. (The probe creates
    a file: the tests run as root, for whom permission bits say nothing.)"""
    from pipeline.exits import ConfigError
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway.tee import check_paths

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    bad = blocker / "spill.jsonl" if where == "under-a-file" else Path("/proc/1/mm-spill.jsonl")
    with pytest.raises(ConfigError, match="gateway.spill_path .* is not writable"):
        check_paths(GatewaySettings(spill_path=bad, rejected_path=tmp_path / "r.jsonl"))
    with pytest.raises(ConfigError, match="gateway.rejected_path .* is not writable"):
        check_paths(GatewaySettings(spill_path=tmp_path / "s.jsonl", rejected_path=bad))
    fine = GatewaySettings(spill_path=tmp_path / "new" / "s.jsonl", rejected_path=tmp_path / "r.jsonl")
    check_paths(fine)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "new"]  # the probe left nothing


@pytest.mark.parametrize("overflow", ["spill", "drop"])
def test_healthz_says_logs_are_lost_when_kafka_is_away_and_they_cannot_be_kept(tmp_path, overflow, monkeypatch):
    """With `spill`, when the spill file cannot be written; with `drop` (a hostile review,
    2026-12-07: it said "ok" with every log dropped), from the first failed delivery."""
    import httpx

    from pipeline.gateway.app import create_app
    from pipeline.gateway.server import serve_in_thread
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway import tee as tee_module
    from pipeline.gateway.tee import GatewayMetrics, LogTee
    from pipeline.settings import KafkaSettings, Settings

    class _Down:  # the broker refuses every batch, as GatewayProducer does in an outage
        def send(self, log):  # noqa: ANN001, ANN202
            pass

        def flush(self, timeout_s: float = 30.0) -> int:
            from kafka.errors import KafkaTimeoutError

            from pipeline.producer import DeliveryError

            raise DeliveryError([("gw-1", KafkaTimeoutError("broker unavailable"))])

        def forget_failed(self) -> None:
            pass

        def close(self) -> None:
            pass

    spool = tmp_path / "spool"
    settings = Settings(gateway=GatewaySettings(spill_path=spool / "spill.jsonl", rejected_path=tmp_path / "r.jsonl",
                                                overflow=overflow))  # fmt: skip
    metrics = GatewayMetrics()
    tee = LogTee(settings.gateway, KafkaSettings(), metrics, producer_factory=_Down)
    app = create_app(settings, metrics=metrics, tee=tee)
    with serve_in_thread(app) as url:
        assert httpx.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"  # nothing lost yet
        # A disk gone read-only, a full mount...: a folder where the spill file should be (the
        # spool folder itself now holds the spill file's lock, taken at start).
        (spool / "spill.jsonl").mkdir(parents=True)
        tee.submit(_exchange([b'{"id": "c", "choices": [{"message": {"content": "ok"}}]}']))
        reason = "spill_failed" if overflow == "spill" else "delivery_failed"
        deadline = time.monotonic() + 30
        while not metrics.registry.get_sample_value("mm_gateway_logs_dropped_total", {"reason": reason}):
            assert time.monotonic() < deadline, "no log was dropped"
            time.sleep(0.05)
        health = httpx.get(f"{url}/healthz", timeout=10)
        if overflow == "drop":  # idle since: after DROP_HEALTH_S it says ok again (nothing is being lost)
            monkeypatch.setattr(tee_module, "DROP_HEALTH_S", 0.0)
            later = httpx.get(f"{url}/healthz", timeout=10)
            assert later.status_code == 200 and later.json()["status"] == "ok", later.text
    assert health.status_code == 503 and health.json()["status"] == "logs_lost"


def test_a_deep_body_with_a_string_that_never_closes_is_refused_in_one_pass():
    """A review of the pruning (2026-12-07): the string pattern was tried again from each escaped
    quote of a string that never closed, each try to the end: 33 KB took 4 s on the logging
    thread, and the time grew with the square of the size (400 KB: hours). The bound below is
    thousands of times the linear cost, not a speed target."""
    from pipeline.gateway.tee import parse_request

    body = b"[" * 1100 + b'"' + b'\\"' * 200_000
    started = time.perf_counter()
    with pytest.raises(ValueError, match="nested deeper than 200"):
        parse_request(body)
    assert time.perf_counter() - started < 10


def test_a_drop_mode_gateway_does_not_need_a_writable_spill_path(tmp_path):
    """With overflow "drop" the spill file is never written; requiring it refused to start a
    gateway whose default data/gateway was read-only (a review of this change, 2026-12-07)."""
    from pipeline.exits import ConfigError
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway.tee import check_paths

    unwritable = Path("/proc/1/mm-spill.jsonl")
    check_paths(GatewaySettings(overflow="drop", spill_path=unwritable, rejected_path=tmp_path / "r.jsonl"))
    with pytest.raises(ConfigError, match="spill_path"):
        check_paths(GatewaySettings(overflow="spill", spill_path=unwritable, rejected_path=tmp_path / "r.jsonl"))


def test_a_drop_mode_gateway_refuses_a_left_over_spill_file_it_cannot_replay(tmp_path):
    """The other half of the test above: a drop-mode gateway still replays (and then deletes) a
    spill file left over from a spill-mode run, so that file must be writable. Made unwritable
    for root with the immutable attribute (permission bits say nothing to root)."""
    import shutil
    import subprocess

    from pipeline.exits import ConfigError
    from pipeline.gateway.settings import GatewaySettings
    from pipeline.gateway.tee import SPILL_LINE_START, check_paths

    left_over = tmp_path / "s.jsonl"
    left_over.write_bytes(SPILL_LINE_START + b',"torn by a crash"\n')
    settings = GatewaySettings(overflow="drop", spill_path=left_over, rejected_path=tmp_path / "r.jsonl")
    check_paths(settings)  # writable: starts, and replays it
    chattr = shutil.which("chattr")
    if not chattr or subprocess.run([chattr, "+i", str(left_over)], capture_output=True, check=False).returncode:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        with pytest.raises(ConfigError, match="gateway.spill_path .*s.jsonl is not writable"):
            check_paths(settings)
    finally:
        subprocess.run([chattr, "-i", str(left_over)], check=True)


def test_a_request_over_the_cap_is_not_parsed_on_the_request_path_when_both_queues_are_full(tmp_path):
    """Over `max_tee_bytes` a request is logged by the worker, which parses it (a hostile review,
    2026-12-07); with both queues full it would be parsed inline, holding the request path for up
    to seconds, so it is counted and kept in the rejected file by its size and id instead."""
    tee, metrics = _tee(tmp_path, _FlakyProducer(), queue_max=1, max_tee_bytes=1024)  # not started
    secret = "my card is 4111 1111 1111 1111 " * 60
    for rid in ("a", "b"):
        tee.submit(_exchange(_answer(rid), gateway_id=rid))
    big = json.dumps({"model": "m", "messages": [{"role": "user", "content": secret}]}).encode()
    tee.submit(_exchange(_answer("c"), gateway_id="c", request_body=big))
    (entry,) = [json.loads(line) for line in (tmp_path / "rejected.jsonl").read_text().splitlines()]
    assert entry["reason"] == "too_large" and "c on " in entry["detail"] and "both logging queues are full" in entry["detail"]
    assert "4111 1111" not in json.dumps(entry) and not (tmp_path / "spill.jsonl").exists()
    assert _sample(metrics, "mm_gateway_logs_dropped_total", reason="too_large") == 1
    assert _sample(metrics, "mm_gateway_logs_spilled_inline_total") == 0


def test_a_spill_path_another_process_holds_is_refused_naming_what_to_set(tmp_path, monkeypatch, capsys):
    """A hostile review: two gateways (or LiteLLM workers) on one spill path, the default relative
    one, replayed each other's files: a byte offset counted in one file was applied to the other,
    logs were lost and others sent twice, silently. A spill file is one process's now."""
    from pipeline.cli import main
    from pipeline.exits import ConfigError
    from pipeline.localinfra.base import free_port

    producer = _FlakyProducer()
    first, _ = _tee(tmp_path, producer)
    first.start()  # holds <spill>.lock; a second open file's flock conflicts with it as another process's would
    try:
        second, _ = _tee(tmp_path, producer)
        with pytest.raises(ConfigError, match="MM_GATEWAY__SPILL_PATH"):
            second.start()
        assert not second.started
        # `misuse-monitor gateway` says so before it binds (this host cannot be bound: a
        # regression fails on the bind, never serves).
        monkeypatch.setenv("MM_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
        monkeypatch.setenv("MM_GATEWAY__SPILL_PATH", str(tmp_path / "spill.jsonl"))
        monkeypatch.setenv("MM_GATEWAY__REJECTED_PATH", str(tmp_path / "other-rejected.jsonl"))
        monkeypatch.setenv("MM_GATEWAY__HOST", "192.0.2.1")
        assert main(["gateway"]) == 3
        err = capsys.readouterr().err
        assert "in use by another process" in err and "--spill-path" in err
    finally:
        first.stop(timeout_s=5)
    second.claim()  # released by stop()
    second.stop(timeout_s=5)


def test_a_gateway_that_never_spills_runs_beside_the_holder_and_leaves_it_the_replay(tmp_path):
    """A review (2026-12-07): the spill file's lock refused a second gateway of `overflow: drop`
    too, though it never spills: replicas started in one folder (the default path is relative)
    no longer ran. It runs, and the file another process holds is not replayed by it."""
    from tests.fixtures.logs import make_log

    producer = _FlakyProducer()
    holder, _ = _tee(tmp_path, producer)
    holder.start()
    try:
        holder._spill([make_log(request_id="h0")])
        dropper, _ = _tee(tmp_path, producer, overflow="drop")
        dropper.start()  # not refused
        assert dropper.started
        dropper._replay()
        assert (tmp_path / "spill.jsonl").read_text().count("h0") == 1  # still the holder's to replay
        assert dropper.status()["spill_bytes"] == 0 < holder.status()["spill_bytes"]  # nor its backlog to report
        dropper.stop(timeout_s=5)
    finally:
        holder.stop(timeout_s=5)


def test_a_replay_file_that_is_not_the_one_its_offset_was_counted_in_is_read_from_its_start(tmp_path):
    """A hostile review: the replay resumed at a byte offset into whatever file was at
    spill.jsonl.replaying (another process's, after it had replayed and deleted the first), and
    the lines before that offset were never delivered."""
    from tests.fixtures.logs import make_log

    producer = _FlakyProducer()
    tee, _ = _tee(tmp_path, producer, batch_max=4)
    tee._spill(make_log(request_id=f"a{i}") for i in range(10))
    tee._replay()  # broker down: the first batch goes back to the spill file, the offset stays past it
    assert tee._replay_offset > 0
    replaying = tmp_path / "spill.jsonl.replaying"
    other = tmp_path / "other"  # made while the first exists: another inode, as a new file would have
    other.write_text("".join(make_log(request_id=f"b{i}").model_dump_json(by_alias=True) + "\n" for i in range(6)))
    os.replace(other, replaying)
    (tmp_path / "spill.jsonl").unlink()  # the a-records are not this test's concern
    producer.down = False
    tee._replay()
    assert sorted(producer.delivered) == [f"b{i}" for i in range(6)]
    assert not replaying.exists() and tee._replay_offset == 0


_DEAD_WORKER = """
import os, sys
from pipeline.gateway.settings import GatewaySettings
from pipeline.gateway.tee import GatewayMetrics, LogTee
from pipeline.settings import KafkaSettings
from tests.fixtures.logs import make_log

settings = GatewaySettings(spill_path=sys.argv[1], rejected_path=sys.argv[2])
tee = LogTee(settings, KafkaSettings(), GatewayMetrics(), per_process_spill=True)
tee.claim()
tee._spill(make_log(request_id=f"dead-{i}") for i in range(7))
print(tee.spill_path, flush=True)
os._exit(0)  # killed: no stop(), its lock goes with the process
"""


def test_per_process_spill_files_are_one_per_process_and_a_dead_ones_is_replayed(tmp_path):
    """The LiteLLM proxy with --num_workers N builds one tee per worker, all on one spill_path:
    each takes a file of its own (slot), and a live one replays what a dead one left."""
    import subprocess
    import sys

    from pipeline.gateway.tee import _try_lock
    from tests.fixtures.logs import make_log

    producer = _FlakyProducer()
    tee, _ = _tee(tmp_path, producer)
    tee._per_process = True  # as the LiteLLM callback builds it (per_process_spill=True)
    tee.claim()
    try:
        assert tee.spill_path == tmp_path / "spill.jsonl"
        worker = subprocess.run([sys.executable, "-c", _DEAD_WORKER, str(tmp_path / "spill.jsonl"),
                                 str(tmp_path / "rejected.jsonl")],  # fmt: skip
                                capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[2])
        assert worker.returncode == 0, worker.stderr
        assert worker.stdout.strip() == str(tmp_path / "spill.1.jsonl")  # slot 0 is held: the next one
        tee._spill([make_log(request_id="own-0")])
        producer.down = False
        tee._replay()
        assert sorted(producer.delivered) == sorted(["own-0", *(f"dead-{i}" for i in range(7))])
        assert not [p.name for p in tmp_path.iterdir() if p.name.endswith((".jsonl", ".replaying"))]
        assert tee.status()["spill_bytes"] == 0
        lock = _try_lock(tmp_path / "spill.1.jsonl")  # given back once delivered: a new worker may take it
        assert lock is not None
        lock.close()
    finally:
        tee.stop(timeout_s=5)
