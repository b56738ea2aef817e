"""Consumer lag measured from the broker: committed offsets of a group against end offsets.

The stream's own ``mm_consumer_lag_records`` gauge disappears with the process and is empty for a
partition until its new owner commits after a rebalance, exactly when on-call needs it. This
exporter asks the broker instead (kafka-python's admin client for the group's committed offsets,
a group-less consumer for the end offsets), on every Prometheus scrape, so lag keeps growing on
the dashboard while every stream replica is down.

    misuse-monitor lag-exporter --group misuse-monitor --topic inference-logs --port 9309

Metrics (no user data: group, topic and partition only):
``mm_kafka_consumergroup_lag`` (records), ``mm_kafka_consumergroup_committed_offset``,
``mm_kafka_topic_end_offset``, ``mm_kafka_topic_partitions`` (0 for a watched topic the broker
does not have: a typo in ``--topic`` used to export nothing at all, with ``up`` at 1),
``mm_lag_exporter_up`` (1 when the last scrape reached the broker) and
``mm_lag_exporter_scrape_seconds``.

A scrape answers within ``--scrape-timeout`` (8 s, under Prometheus' default scrape timeout of
10 s) whatever the broker does: the groups are read in parallel, and a group whose read has not
returned by then is ``up`` 0 for that scrape. On a hung broker a scrape took 10-15 s per group, so
Prometheus gave up on the exporter (``up{job=...}`` 0, every series gone) instead of reading
``mm_lag_exporter_up`` 0 from it. A read still waiting on the broker is not started again: later
scrapes (and concurrent ones, from a second Prometheus) wait on the same read.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass
from typing import Annotated

import typer
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import UnknownTopicOrPartitionError
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from pipeline.exits import bind_error
from pipeline.settings import KafkaSettings

log = logging.getLogger(__name__)

SCRAPE_TIMEOUT_S = 8.0  # under Prometheus' default scrape_timeout (10 s)


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
        self.topics = list(dict.fromkeys(topics))  # `--topic t --topic t` would repeat every series
        self._admin = KafkaAdminClient(**kafka.client_options())
        self._kafka = kafka
        self._consumer = self._new_consumer()
        self.partitions: dict[str, int] = {}  # topic -> partitions the broker had at the last read

    def _new_consumer(self) -> KafkaConsumer:
        return KafkaConsumer(enable_auto_commit=False, **self._kafka.client_options())

    def current_partitions(self) -> dict[str, list[int]]:
        """Each watched topic's partitions as the broker has them now ([] for a topic it lacks):
        asked on every read. The consumer's metadata cache (refreshed every 5 minutes) kept a
        deleted topic, whose offsets then failed the whole group's read for minutes, and hid a
        partition added to a topic (a hostile review, 2026-12-07)."""
        found: dict[str, list[int]] = {t: [] for t in self.topics}
        for meta in self._admin.describe_topics(self.topics):
            name = meta.get("name")
            if name in found and not meta.get("error_code"):
                found[name] = sorted(p["partition_index"] for p in meta.get("partitions") or ())
        return found

    def read(self) -> list[PartitionLag]:
        by_topic = self.current_partitions()
        self.partitions = {t: len(ps) for t, ps in by_topic.items()}
        partitions = [TopicPartition(t, p) for t, ps in by_topic.items() for p in ps]
        if not partitions:
            return []
        committed = self._admin.list_group_offsets({self.group: partitions}).get(self.group, {})
        end: dict[TopicPartition, int] = {}
        begin: dict[TopicPartition, int] = {}
        for name, numbers in by_topic.items():  # one topic at a time: one deleted meanwhile fails alone
            if not numbers:
                continue
            # kafka-python asks offsets only of partitions its consumer's metadata holds (a
            # KeyError for one added since), and a consumer that never polls never refreshes it:
            # a new consumer reads it afresh, once per change.
            known = self._consumer.partitions_for_topic(name) or set()
            if not set(numbers) <= known:
                # The new one first: if it cannot be made (a broker blip), the old one stays usable.
                fresh = self._new_consumer()
                stale, self._consumer = self._consumer, fresh
                stale.close()
                known = self._consumer.partitions_for_topic(name) or set()
            tps = [TopicPartition(name, n) for n in numbers if n in known]
            if not tps:
                continue
            try:
                end.update(self._consumer.end_offsets(tps))
                begin.update(self._consumer.beginning_offsets(tps))
            except UnknownTopicOrPartitionError:  # deleted since the metadata was read
                log.warning("lag exporter: topic %s is gone (deleted?); 0 partitions this scrape", name)
                self.partitions[name] = 0
        out = []
        for tp in partitions:
            if tp not in end or tp not in begin:
                continue
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
    """Measures on every scrape, so the numbers are as fresh as Prometheus asks for.

    One collector for every watched group: each family is written once, and a topic's end offsets
    once whatever the number of groups. One collector per group wrote every HELP/TYPE line and
    every ``mm_kafka_topic_end_offset`` series once per group, and Prometheus' parser refuses such a
    page ("second HELP line for metric name"): with two ``--group`` options nothing was scraped."""

    def __init__(self, *readers: LagReader, timeout_s: float = SCRAPE_TIMEOUT_S) -> None:
        self._readers = readers
        self._timeout_s = timeout_s
        self._failing: set[str] = set()  # groups whose last read failed
        self._lock = threading.Lock()
        self._reads: dict[str, Future] = {}  # group -> its latest read (at most one in flight)

    def _read(self, reader: LagReader) -> Future:
        """The group's read in flight, or a new one on a daemon thread (a read stuck on a hung
        broker must not hold the process at exit, as an executor's worker would)."""
        with self._lock:
            future = self._reads.get(reader.group)
            if future is not None and not future.done():
                return future
            future = self._reads[reader.group] = Future()

        def run() -> None:
            try:
                future.set_result((reader.read(), dict(reader.partitions)))
            except BaseException as exc:  # noqa: BLE001 - handed to the scrape that waits for it
                future.set_exception(exc)

        threading.Thread(target=run, name=f"lag-read-{reader.group}", daemon=True).start()
        return future

    def _failed(self, group: str, exc: BaseException | None) -> None:
        """Log a failed read (``exc`` None: no answer within the scrape timeout). The traceback
        once per outage, then one line per scrape: a 30-line traceback on every scrape (4 a
        minute per group) buried everything else in the log."""
        if exc is not None and group not in self._failing:
            log.error("reading consumer group offsets for %s failed", group, exc_info=exc)
        else:
            what = f"{type(exc).__name__}: {exc}" if exc is not None else f"no answer from the broker within {self._timeout_s:g} s"
            log.warning("reading consumer group offsets for %s %s: %s",
                        group, "still fails" if group in self._failing else "failed", what)
        self._failing.add(group)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["group", "topic", "partition"]
        lag = GaugeMetricFamily("mm_kafka_consumergroup_lag", "Records after the group's committed offset", labels=labels)
        committed = GaugeMetricFamily(
            "mm_kafka_consumergroup_committed_offset", "The group's committed offset (absent: never committed)", labels=labels
        )
        end = GaugeMetricFamily("mm_kafka_topic_end_offset", "The partition's end offset", labels=["topic", "partition"])
        counts = GaugeMetricFamily(
            "mm_kafka_topic_partitions", "Partitions of a watched topic (0: the broker has no such topic)", labels=["topic"]
        )
        up = GaugeMetricFamily("mm_lag_exporter_up", "1 when the last scrape read offsets from the broker", labels=["group"])
        took = GaugeMetricFamily("mm_lag_exporter_scrape_seconds", "Seconds this scrape waited for the group's offsets", labels=["group"])
        ends: dict[tuple[str, int], int] = {}
        partitions: dict[str, int] = {}
        started = time.perf_counter()
        deadline = time.monotonic() + self._timeout_s
        reads = [(reader, self._read(reader)) for reader in self._readers]  # every group at once
        for reader, future in reads:
            read_partitions: dict[str, int] = {}
            rows, ok = [], 0.0
            if not wait([future], timeout=max(0.0, deadline - time.monotonic())).done:
                self._failed(reader.group, None)
            elif (exc := future.exception()) is not None:  # a broker outage is a metric value, not a crashed exporter
                self._failed(reader.group, exc)
            else:
                rows, read_partitions = future.result()
                ok = 1.0
                if reader.group in self._failing:
                    log.warning("reading consumer group offsets for %s works again", reader.group)
                self._failing.discard(reader.group)
            g = reader.group
            for r in rows:
                values = [g, r.topic, str(r.partition)]
                lag.add_metric(values, r.lag)
                if r.committed is not None:
                    committed.add_metric(values, r.committed)
                ends.setdefault((r.topic, r.partition), r.end)
            for name, n in read_partitions.items():
                partitions.setdefault(name, n)
            up.add_metric([g], ok)
            took.add_metric([g], time.perf_counter() - started)
        for (name, partition), offset in sorted(ends.items()):
            end.add_metric([name, str(partition)], offset)
        for name, n in sorted(partitions.items()):
            counts.add_metric([name], n)
        yield from (lag, committed, end, counts, up, took)


def lag_exporter(
    group: Annotated[list[str], typer.Option(help="Consumer group(s) to watch (repeatable)")],
    topic: Annotated[list[str], typer.Option(help="Topic(s) the groups consume (repeatable)")],
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: kafka.bootstrap_servers of the settings)")
    ] = None,
    host: Annotated[str, typer.Option(help="Address to serve /metrics on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to serve /metrics on (0: a free one)")] = 9309,
    scrape_timeout: Annotated[
        float,
        typer.Option(min=0.1, max=3600, help="Seconds a scrape waits for the broker before it reports a group up 0; "
                     "keep it under Prometheus' scrape_timeout (default 10 s)"),
    ] = SCRAPE_TIMEOUT_S,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML settings file (else MM_CONFIG)")] = None,
) -> None:
    """Serve consumer lag measured from the broker (committed vs end offsets) for Prometheus.
    SIGTERM or Ctrl-C ends it cleanly (exit 0)."""
    from prometheus_client import start_http_server
    from rich.console import Console

    from pipeline.topics import topic_name_problem

    # A name that can never exist is a typo: it was only warned of as "not found yet", and an
    # empty --group was taken (a hostile review, 2026-12-07).
    for name in topic:
        if problem := topic_name_problem(name):
            raise typer.BadParameter(problem, param_hint="--topic")
    if any(not g.strip() for g in group):
        raise typer.BadParameter("a consumer group id cannot be empty", param_hint="--group")

    # An orchestrator stops it with SIGTERM: a clean stop (exit 0), like Ctrl-C, also while it starts.
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from pipeline.preflight import require_kafka
    from pipeline.settings import load_settings

    registry = CollectorRegistry()
    # The settings' Kafka section, so a secured cluster (SASL/TLS) and MM_KAFKA__BOOTSTRAP_SERVERS
    # work; a bare KafkaSettings(bootstrap) ignored both and always dialled 127.0.0.1:9092 in plaintext.
    kafka: KafkaSettings = load_settings(config).kafka
    if bootstrap is not None:
        kafka = kafka.with_bootstrap(bootstrap)
    require_kafka(kafka)  # exit 5 within kafka.connect_timeout_s, not kafka-python's 30 s bootstrap timeout
    readers = [LagReader(kafka, g, topic) for g in dict.fromkeys(group)]
    missing = sorted(t for t, numbers in readers[0].current_partitions().items() if not numbers)  # one metadata request
    if missing:
        # Not refused: the topic may be created after the exporter starts; said, because until then
        # nothing is exported for it and no lag alert can fire.
        typer.echo(f"warning: topic(s) {', '.join(missing)} not found on {kafka.bootstrap_servers}: no lag "
                   "is exported for them until they exist (mm_kafka_topic_partitions is 0)", err=True)
    registry.register(LagCollector(*readers, timeout_s=scrape_timeout))
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        for reader in readers:
            reader.close()
        raise bind_error(exc, host, port, "set another with --port (0 picks a free one)") from exc
    console = Console(stderr=True, soft_wrap=True)
    console.print(f"lag exporter on http://{host}:{server.server_port}/metrics for groups {group} on {topic}", soft_wrap=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        for reader in readers:
            reader.close()
    console.print("lag exporter stopped")
