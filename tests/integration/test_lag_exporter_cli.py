"""`misuse-monitor lag-exporter` as a user runs it: a process serving /metrics, against the real
broker, stopped with SIGTERM. (tests/integration/dashboards/ drives LagCollector in-process.)"""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

from pipeline.localinfra.base import LOOPBACK, free_port
from pipeline.producer import TrackedProducer
from pipeline.settings import KafkaSettings
from tests.fixtures.processes import stop

pytestmark = pytest.mark.slow

MM = Path(sys.executable).with_name("misuse-monitor")


def _scrape(url: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """metric name -> label set -> value."""
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _per_group(samples: dict[tuple[tuple[str, str], ...], float], group: str) -> dict[int, float]:
    return {int(dict(k)["partition"]): v for k, v in samples.items() if dict(k).get("group") == group}


def _consume_and_commit(bootstrap: str, topic: str, group: str, count: int) -> None:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False)  # fmt: skip
    read = 0
    deadline = time.monotonic() + 60
    while read < count and time.monotonic() < deadline:
        read += sum(len(batch) for batch in consumer.poll(timeout_ms=1000, max_records=count - read).values())
    consumer.commit()
    consumer.close()
    assert read == count


def test_lag_exporter_serves_broker_lag_and_stops_cleanly_on_sigterm(kafka_bootstrap: str, kafka_topic_factory) -> None:  # noqa: ANN001
    topic = kafka_topic_factory(partitions=2)
    produced, consumed = 7, 3
    producer = TrackedProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    for i in range(produced):
        producer.send(topic, f'{{"n":{i}}}'.encode(), key=f"k{i}".encode())
    producer.flush()
    producer.close()
    group, idle = f"g-{topic}", f"idle-{topic}"  # idle never commits
    _consume_and_commit(kafka_bootstrap, topic, group, consumed)

    port = free_port()
    proc = subprocess.Popen(
        [str(MM), "lag-exporter", "--bootstrap", kafka_bootstrap, "--group", group, "--group", idle,
         "--topic", topic, "--host", LOOPBACK, "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    url = f"http://{LOOPBACK}:{port}/metrics"
    try:
        metrics: dict = {}
        deadline = time.monotonic() + 90
        while not metrics and proc.poll() is None and time.monotonic() < deadline:
            try:
                metrics = _scrape(url)
            except OSError:
                time.sleep(0.5)
        assert metrics, f"no /metrics on port {port} (exit {proc.poll()})"

        end = {int(dict(k)["partition"]): v for k, v in metrics["mm_kafka_topic_end_offset"].items()}
        assert set(end) == {0, 1} and sum(end.values()) == produced
        lag = _per_group(metrics["mm_kafka_consumergroup_lag"], group)
        committed = _per_group(metrics["mm_kafka_consumergroup_committed_offset"], group)
        assert sum(committed.values()) == consumed
        assert sum(lag.values()) == produced - consumed
        assert all(lag[p] == end[p] - committed.get(p, 0) for p in end)
        # A group that never committed: everything retained is waiting, and no committed offset.
        assert sum(_per_group(metrics["mm_kafka_consumergroup_lag"], idle).values()) == produced
        assert _per_group(metrics["mm_kafka_consumergroup_committed_offset"], idle) == {}
        assert {dict(k)["group"]: v for k, v in metrics["mm_lag_exporter_up"].items()} == {group: 1.0, idle: 1.0}

        # Measured on every scrape: the group catches up, the next scrape shows it.
        _consume_and_commit(kafka_bootstrap, topic, group, produced - consumed)
        again = _scrape(url)
        assert sum(_per_group(again["mm_kafka_consumergroup_lag"], group).values()) == 0
        assert sum(_per_group(again["mm_kafka_consumergroup_committed_offset"], group).values()) == produced
    finally:
        out, err = stop(proc)
    assert proc.returncode == 0, err[-3000:]
    assert "lag exporter stopped" in err and "Traceback" not in err, err[-3000:]


def test_the_reader_sees_a_partition_added_and_a_watched_topic_deleted_at_once(kafka_bootstrap: str, kafka_topic_factory) -> None:  # noqa: ANN001
    """A hostile review (2026-12-07): the reader took partitions from the consumer's metadata
    cache (refreshed every 5 minutes), so a partition added to a topic went unexported, and a
    deleted watched topic stayed in it: its offsets failed the whole group's read (up 0, the
    live topic's lag gone) for minutes."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewPartitions

    from pipeline.lag_exporter import LagReader
    from pipeline.localinfra.kafka import delete_topics

    from kafka.errors import KafkaError

    live, doomed = kafka_topic_factory(partitions=1), kafka_topic_factory(partitions=1)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    reader = LagReader(kafka, f"g-{live}", [live, doomed])

    def read_until(done) -> dict:  # noqa: ANN001 - a fresh broker's group coordinator comes up late
        deadline = time.monotonic() + 60
        while True:
            started = time.monotonic()
            try:
                rows = {(r.topic, r.partition): r.lag for r in reader.read()}
            except KafkaError:
                rows = None
            if rows is not None and done(rows):
                assert time.monotonic() - started < 8  # within a scrape's timeout
                return rows
            assert time.monotonic() < deadline, (reader.partitions, rows)
            time.sleep(0.5)

    try:
        read_until(lambda rows: reader.partitions == {live: 1, doomed: 1})
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        admin.create_partitions({live: NewPartitions(total_count=3)})
        admin.close()
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)  # to one partition: kafka-python's own
        for _ in range(4):
            producer.send(live, b'{"n": 1}', partition=2)
        producer.flush()
        producer.close()
        delete_topics(kafka_bootstrap, [doomed])
        rows = read_until(lambda rows: reader.partitions == {live: 3, doomed: 0} and rows.get((live, 2)) == 4)
        assert set(rows) == {(live, 0), (live, 1), (live, 2)}
    finally:
        reader.close()
