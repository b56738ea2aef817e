"""Privacy review (2026-12-04), against a real broker: ``--log-level debug`` must not put the raw
records the stream reads, or the dead letters it writes, on stderr.

Before the fix, kafka-python's DEBUG lines were let through at ``--log-level debug``; they dump
the wire: ``Sending (key=b'user-...' value=b'{..."prompt": ...}' headers=[('authorization', ...)])``
for each dead letter, ``Recv: b'...'`` and FetchResponse reprs holding every fetched record.
"""

from __future__ import annotations

import os
import subprocess
import sys

from kafka import KafkaConsumer, KafkaProducer

EMAIL = "leak.canary@example.com"
USER = "user-CANARY-42"
SECRET = "sk-CANARYabcdefghijklmnopqrstuvwxyz0123456789"
IP = "203.0.113.77"
CANARIES = (EMAIL, USER, SECRET, IP)


def _leaks(text: str) -> list[str]:
    return [c for c in CANARIES if c in text]


def test_debug_log_of_the_stream_quotes_no_record_no_key_no_header(kafka_bootstrap: str, kafka_topic_factory, tmp_path) -> None:  # noqa: ANN001
    topic = kafka_topic_factory(partitions=1)
    dlq = f"{topic}.dlq"
    good = (
        '{"schema":"inference-log/v1","request_id":"r-1","timestamp":"2026-12-04T09:00:00Z","model":"m",'
        f'"user_id":"{USER}","prompt":"mail {EMAIL} key {SECRET} from {IP}"}}'
    )
    bad = f'{{"schema":"inference-log/v1","user_id":"{USER}","prompt":"{EMAIL} {SECRET}" '  # not JSON: a dead letter
    headers = [("x-forwarded-for", IP.encode()), ("authorization", f"Bearer {SECRET}".encode())]
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for value in (good, bad):
        producer.send(topic, value.encode(), key=USER.encode(), headers=headers)
    producer.flush()
    producer.close()

    env = {k: v for k, v in os.environ.items() if not k.startswith("MM_")}
    env.update(
        MM_KAFKA__BOOTSTRAP_SERVERS=kafka_bootstrap, MM_KAFKA__INPUT_TOPIC=topic,
        MM_KAFKA__VERDICT_TOPIC=f"{topic}.verdicts", MM_KAFKA__DEAD_LETTER_TOPIC=dlq,
        MM_KAFKA__GROUP_ID=f"{topic}-g", MM_LAKE__PATH=str(tmp_path / "lake"), MM_METRICS__PORT="0",
        MM_DETECTORS__ENABLED='["noop"]', MM_SINKS='["verdict_topic", "lake"]',
        MM_PSEUDONYM_KEY="privacy-hostile-test-key-0123456789",
    )
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--log-level", "debug", "stream", "--max-idle", "4", "--json"],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"dead_letters": 1' in done.stdout and '"verdicts": 1' in done.stdout, done.stdout
    # Debug logging is on (the project's own lines and the client's INFO lines show) ...
    assert "INFO pipeline.runner: dead-lettering" in done.stderr and " INFO kafka." in done.stderr, done.stderr[-3000:]
    # ... but nothing of what went over the wire: not the input, not the dead letter, not their keys or headers.
    assert _leaks(done.stderr) == [], [line[:300] for line in done.stderr.splitlines() if _leaks(line)][:5]

    # Control: the dead letter did carry the raw bytes, key and headers (by design, docs/privacy.md).
    consumer = KafkaConsumer(dlq, bootstrap_servers=kafka_bootstrap, group_id=None, auto_offset_reset="earliest", consumer_timeout_ms=5000)
    letters = list(consumer)
    consumer.close()
    assert len(letters) == 1
    assert letters[0].value == bad.encode() and letters[0].key == USER.encode()
    assert ("authorization", f"Bearer {SECRET}".encode()) in letters[0].headers
