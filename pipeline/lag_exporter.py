"""Consumer lag measured from the broker: committed offsets of a group against end offsets.

The stream's own ``mm_consumer_lag_records`` gauge disappears with the process and is empty for a
partition until its new owner commits after a rebalance, exactly when on-call needs it. This
exporter asks the broker instead (kafka-python's admin client for the group's committed offsets,
a group-less consumer for the end offsets), on every Prometheus scrape, so lag keeps growing on
the dashboard while every stream replica is down.

    misuse-monitor lag-exporter --group misuse-monitor --topic inference-logs --port 9309

Metrics (no user data: group, topic and partition only):
``mm_kafka_consumergroup_lag`` (records), ``mm_kafka_consumergroup_committed_offset``,
``mm_kafka_topic_end_offset``, ``mm_lag_exporter_up`` (1 when the last scrape reached the broker)
and ``mm_lag_exporter_scrape_seconds``.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated

import typer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pipeline.exits import bind_error
from pipeline.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed this partition
    end: int
    lag: int


class LagReader:
    """Reads committed and end offsets; keeps its broker connections between scrapes."""

    def __init__(self, kafka: KafkaSettings, group: str, topics: Sequence[str]) -> None:
        self.group = group
        self.topics = list(topics)
        self._admin = KafkaAdminClient(**kafka.client_options())
        self._consumer = KafkaConsumer(enable_auto_commit=False, **kafka.client_options())

    def read(self) -> list[PartitionLag]:
        partitions = [
            TopicPartition(t, p) for t in self.topics for p in sorted(self._consumer.partitions_for_topic(t) or ())
        ]
        if not partitions:
            return []
        committed = self._admin.list_group_offsets({self.group: partitions}).get(self.group, {})
        end = self._consumer.end_offsets(partitions)
        begin = self._consumer.beginning_offsets(partitions)
        out = []
        for tp in partitions:
            meta = committed.get(tp)
            offset = meta.offset if meta is not None and meta.offset >= 0 else None
            # Never committed: everything still retained is waiting (auto_offset_reset=earliest).
            start = offset if offset is not None else begin[tp]
            out.append(PartitionLag(tp.topic, tp.partition, offset, end[tp], max(0, end[tp] - start)))
        return out

    def close(self) -> None:
        self._consumer.close()
        self._admin.close()


class LagCollector(Collector):
    """Measures on every scrape, so the numbers are as fresh as Prometheus asks for."""

    def __init__(self, reader: LagReader) -> None:
        self._reader = reader

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily("mm_kafka_consumergroup_lag", "Records after the group's committed offset", labels=labels)
        committed = GaugeMetricFamily(
            "mm_kafka_consumergroup_committed_offset", "The group's committed offset (absent: never committed)", labels=labels
        )
        end = GaugeMetricFamily("mm_kafka_topic_end_offset", "The partition's end offset", labels=["topic", "partition"])
        up = GaugeMetricFamily("mm_lag_exporter_up", "1 when the last scrape read offsets from the broker", labels=["group"])
        took = GaugeMetricFamily("mm_lag_exporter_scrape_seconds", "Time to read offsets from the broker", labels=["group"])
        started = time.perf_counter()
        try:
            rows = self._reader.read()
            ok = 1.0
        except Exception:  # noqa: BLE001 - a broker outage is a metric value, not a crashed exporter
            log.exception("reading consumer group offsets failed")
            rows, ok = [], 0.0
        g = self._reader.group
        for r in rows:
            values = [g, r.topic, str(r.partition)]
            lag.add_metric(values, r.lag)
            if r.committed is not None:
                committed.add_metric(values, r.committed)
            end.add_metric([r.topic, str(r.partition)], r.end)
        up.add_metric([g], ok)
        took.add_metric([g], time.perf_counter() - started)
        yield from (lag, committed, end, up, took)


def lag_exporter(
    group: Annotated[list[str], typer.Option(help="Consumer group(s) to watch (repeatable)")],
    topic: Annotated[list[str], typer.Option(help="Topic(s) the groups consume (repeatable)")],
    bootstrap: Annotated[str, typer.Option(help="Kafka bootstrap servers")] = "127.0.0.1:9092",
    host: Annotated[str, typer.Option(help="Address to serve /metrics on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to serve /metrics on")] = 9309,
) -> None:
    """Serve consumer lag measured from the broker (committed vs end offsets) for Prometheus.
    SIGTERM or Ctrl-C ends it cleanly (exit 0)."""
    from prometheus_client import start_http_server
    from rich.console import Console

    # An orchestrator stops it with SIGTERM: a clean stop (exit 0), like Ctrl-C, also while it starts.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    registry = CollectorRegistry()
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    readers = [LagReader(kafka, g, topic) for g in group]
    for reader in readers:
        registry.register(LagCollector(reader))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        for reader in readers:
            reader.close()
        raise bind_error(exc, host, port, "set another with --port (0 picks a free one)") from exc
    console = Console(stderr=True)
    console.print(f"lag exporter on http://{host}:{server.server_port}/metrics for groups {group} on {topic}", soft_wrap=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        for reader in readers:
            reader.close()
    console.print("lag exporter stopped")
