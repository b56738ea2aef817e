"""`produce`, `stream` and `gateway` refuse a topic that does not exist (a typo used to auto-create it) unless --create-topic;
`stream` and `lag-exporter` refuse a port another process listens on, in one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid

from pipeline.topics import existing_topics
from pipeline.settings import KafkaSettings


def _cli(*args: str, bootstrap: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env["MM_KAFKA__BOOTSTRAP_SERVERS"] = bootstrap
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], env=env, capture_output=True, text=True, timeout=180)


def test_mistyped_topic_is_refused_with_a_suggestion_and_created_only_when_asked(kafka_bootstrap, kafka_topic_factory, tmp_path):
    real = kafka_topic_factory(partitions=1, prefix="orders")
    typo = real[:-1] + ("x" if real[-1] != "x" else "y")
    data = tmp_path / "logs.jsonl"
    data.write_text(json.dumps({"schema": "inference-log/v1", "request_id": "r1", "timestamp": "2026-11-28T10:00:00Z",
                                "model": "m", "prompt": "hi"}) + "\n")  # fmt: skip

    refused = _cli("produce", str(data), "--topic", typo, bootstrap=kafka_bootstrap)
    assert refused.returncode == 2, refused.stderr
    assert "does not exist" in refused.stderr and real in refused.stderr  # did you mean the real one?
    stream = _cli("stream", "--topic", typo, "--dev", "--detectors", "rules", "--max-idle", "1", bootstrap=kafka_bootstrap)
    assert stream.returncode == 2 and "does not exist" in stream.stderr, stream.stderr
    gateway = _cli("gateway", "--topic", typo, "--upstream", "http://127.0.0.1:9", bootstrap=kafka_bootstrap)
    assert gateway.returncode == 2 and "does not exist" in gateway.stderr, gateway.stderr
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    assert typo not in existing_topics(kafka)  # no command created it

    fresh = f"created-{uuid.uuid4().hex[:8]}"
    try:
        made = _cli("produce", str(data), "--topic", fresh, "--create-topic", bootstrap=kafka_bootstrap)
        assert made.returncode == 0, made.stderr
        assert fresh in existing_topics(kafka)
        again = _cli("produce", str(data), "--topic", fresh, bootstrap=kafka_bootstrap)
        assert again.returncode == 0, again.stderr
    finally:
        from pipeline.localinfra.kafka import delete_topics

        delete_topics(kafka_bootstrap, [fresh])


def test_produce_skips_a_line_too_large_for_the_producer_and_sends_the_rest(kafka_bootstrap, kafka_topic_factory, tmp_path):
    """A hostile newcomer (2026-12-02): kafka-python reports an oversized record through its future,
    so the old `except` around send() never fired; the flush raised, produce stopped at the 5,000th
    line and exited 1 with the rest of the file unsent. A line over kafka.max_request_size is now
    refused as it is read, never held whole (a hostile review, 2026-12-05: a 1 GB line took 2 GB);
    one under it whose record is not (the batch's own bytes) is still refused by the producer."""
    from tests.fixtures.kafka_read import read_topic

    topic = kafka_topic_factory(partitions=1, prefix="produce-big")
    line = {"schema": "inference-log/v1", "timestamp": "2026-11-28T10:00:00Z", "model": "m", "prompt": "hi"}
    rows = [json.dumps({**line, "request_id": f"r{i}"}) for i in range(5)]
    rows[1] = json.dumps({**line, "request_id": "big", "prompt": "x" * 300_000})
    edge = json.dumps({**line, "request_id": "edge", "prompt": ""})
    rows[3] = json.dumps({**line, "request_id": "edge", "prompt": "x" * (199_990 - len(edge))})
    assert len(rows[3]) == 199_990
    data = tmp_path / "logs.jsonl"
    data.write_text("\n".join(rows) + "\n")
    env_limit = {"MM_KAFKA__MAX_REQUEST_SIZE": "200000"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(env_limit, MM_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap)
    done = subprocess.run([sys.executable, "-m", "pipeline.cli", "produce", str(data), "--topic", topic, "--json"],
                          env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 4, done.stderr
    summary = json.loads(done.stdout)
    assert summary["delivered"] == 3, summary
    assert summary["refused"] == [f"line 2: {len(rows[1])} bytes, over kafka.max_request_size (200000)",
                                  "line 4: MessageSizeTooLargeError"], summary
    assert "line 2" in done.stderr and "line 4" in done.stderr
    delivered = [json.loads(m.value)["request_id"] for m in read_topic(kafka_bootstrap, topic, expect=3)]
    assert delivered == ["r0", "r2", "r4"]


def test_produce_replays_a_gzip_archive_decompressed_and_warns_about_pretty_printed_json(
    kafka_bootstrap, kafka_topic_factory, tmp_path
):
    """A careless newcomer (2026-12-03): `produce logs.jsonl.gz` sent the compressed bytes, cut at
    newline bytes, as records (every one a not_utf8 dead letter); a pretty-printed JSON file went
    out line by line with no word that it is not JSONL."""
    import gzip

    from tests.fixtures.kafka_read import read_topic

    topic = kafka_topic_factory(partitions=1, prefix="produce-gz")
    line = {"schema": "inference-log/v1", "timestamp": "2026-11-28T10:00:00Z", "model": "m", "prompt": "hi"}
    rows = [json.dumps({**line, "request_id": f"r{i}"}) for i in range(3)]
    data = tmp_path / "logs.jsonl.gz"
    data.write_bytes(gzip.compress(("\n".join(rows) + "\n").encode()))
    done = _cli("produce", str(data), "--topic", topic, "--json", bootstrap=kafka_bootstrap)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["delivered"] == 3
    assert [json.loads(m.value)["request_id"] for m in read_topic(kafka_bootstrap, topic, expect=3)] == ["r0", "r1", "r2"]

    pretty = tmp_path / "one.json"
    pretty.write_text(json.dumps({**line, "request_id": "p"}, indent=2) + "\n")
    other = kafka_topic_factory(partitions=1, prefix="produce-pretty")
    sent = _cli("produce", str(pretty), "--topic", other, "--json", bootstrap=kafka_bootstrap)
    assert sent.returncode == 0, sent.stderr  # every non-empty line is still sent (the stream dead-letters them)
    assert json.loads(sent.stdout)["delivered"] == 7
    assert "not JSONL" in sent.stderr and "jq -c . FILE" in " ".join(sent.stderr.split())


def test_a_port_in_use_is_one_clear_line_naming_the_address_and_the_option(kafka_bootstrap, kafka_topic_factory):
    """Regression (hostile newcomer, 2026-12-03): a second stream member started on the same host
    with the default metrics port ended with "internal error: OSError: [Errno 98] Address already
    in use" (exit 1), naming neither the port nor the setting to change."""
    topic = kafka_topic_factory(partitions=1)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stream = _cli("stream", "--topic", topic, "--dev", "--detectors", "noop", "--max-idle", "1",
                      "--metrics-port", str(port), bootstrap=kafka_bootstrap)
        lag = _cli("lag-exporter", "--bootstrap", kafka_bootstrap, "--group", "g", "--topic", topic, "--port", str(port),
                   bootstrap=kafka_bootstrap)
    for result, option in ((stream, "--metrics-port"), (lag, "--port")):
        assert result.returncode == 3, result.stderr  # ExitCode.CONFIG
        line = result.stderr.strip().splitlines()[-1]
        assert f"127.0.0.1:{port}" in line and "in use" in line and option in line, result.stderr
        assert "internal error" not in result.stderr
