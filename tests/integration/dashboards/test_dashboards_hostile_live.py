"""`misuse-monitor lag-exporter` against a real broker, configured the ways an operator gets wrong:
several groups, a topic named twice, a topic that does not exist, the broker address only in
the settings. Each /metrics page must be one Prometheus accepts (promtool's parser)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.localinfra.base import LOOPBACK, free_port
from tests.fixtures.processes import stop

pytestmark = pytest.mark.slow

MM = Path(sys.executable).with_name("misuse-monitor")


def _run_exporter(args: list[str], env: dict[str, str] | None = None) -> tuple[str, str]:
    """Start the exporter, scrape /metrics until every group's scrape reached the broker (a new
    broker answers CoordinatorNotAvailable for a few seconds), stop it with SIGTERM; (page, stderr)."""
    port = free_port()
    proc = subprocess.Popen([str(MM), "lag-exporter", *args, "--host", LOOPBACK, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})  # fmt: skip
    page = ""
    try:
        deadline = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                page = urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=30).read().decode()
            except OSError:
                page = ""
            if page and "mm_lag_exporter_up{" in page and "} 0.0" not in _up_lines(page):
                break
            time.sleep(0.5)
    finally:
        _, err = stop(proc)
    assert page, f"no /metrics (exit {proc.returncode}): {err[-2000:]}"
    assert proc.returncode == 0, err[-2000:]
    return page, err


def _up_lines(page: str) -> str:
    return "\n".join(line for line in page.splitlines() if line.startswith("mm_lag_exporter_up{"))


def _assert_scrapeable(page: str) -> None:
    """One HELP/TYPE per family and no repeated series: Prometheus refuses the page otherwise."""
    helps = Counter(line.split()[2] for line in page.splitlines() if line.startswith("# HELP "))
    assert [name for name, n in helps.items() if n > 1] == []
    samples = Counter(line.rsplit(" ", 1)[0] for line in page.splitlines() if line and not line.startswith("#"))
    assert [s for s, n in samples.items() if n > 1] == []
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True, timeout=60)
        assert "parsing error" not in checked.stdout + checked.stderr, checked.stdout + checked.stderr


def _samples(page: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_two_groups_and_a_repeated_topic_give_a_page_prometheus_accepts(kafka_bootstrap: str, kafka_topic_factory) -> None:  # noqa: ANN001
    """One collector per --group wrote every HELP line and every end-offset series once per group:
    promtool (Prometheus' parser) refused the whole page, so with two groups nothing was scraped."""
    topic = kafka_topic_factory(partitions=2)
    page, _ = _run_exporter(["--bootstrap", kafka_bootstrap, "--group", "g1", "--group", "g2", "--group", "g2",
                             "--topic", topic, "--topic", topic])
    _assert_scrapeable(page)
    samples = _samples(page)
    assert {dict(k)["group"] for k in samples["mm_lag_exporter_up"]} == {"g1", "g2"}
    assert len(samples["mm_kafka_topic_end_offset"]) == 2  # per partition, not per group
    assert len(samples["mm_kafka_consumergroup_lag"]) == 4  # per group and partition


def test_a_topic_the_broker_lacks_is_said_and_exported_as_zero_partitions(kafka_bootstrap: str, kafka_topic_factory) -> None:  # noqa: ANN001
    """A typo in --topic exported nothing at all with mm_lag_exporter_up at 1, and said nothing:
    no lag alert could ever fire. Now stderr warns and mm_kafka_topic_partitions is 0 for it."""
    topic = kafka_topic_factory(partitions=1)
    missing = f"{topic}-typo"
    page, err = _run_exporter(["--bootstrap", kafka_bootstrap, "--group", "g", "--topic", topic, "--topic", missing])
    _assert_scrapeable(page)
    partitions = {dict(k)["topic"]: v for k, v in _samples(page)["mm_kafka_topic_partitions"].items()}
    assert partitions == {topic: 1.0, missing: 0.0}
    assert missing in err and "not found" in err


def test_bootstrap_comes_from_the_settings_when_not_given(kafka_bootstrap: str, kafka_topic_factory) -> None:  # noqa: ANN001
    """Without --bootstrap the exporter dialled 127.0.0.1:9092 whatever MM_KAFKA__BOOTSTRAP_SERVERS
    (or a settings file with SASL/TLS) said, and failed after 30 s."""
    topic = kafka_topic_factory(partitions=1)
    page, _ = _run_exporter(["--group", "g", "--topic", topic], env={"MM_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap})
    samples = _samples(page)
    assert samples["mm_lag_exporter_up"] == {(("group", "g"),): 1.0}
    assert len(samples["mm_kafka_topic_end_offset"]) == 1


def test_a_broker_that_goes_away_is_up_0_with_one_traceback_not_one_per_scrape(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Each scrape during an outage logged a full traceback (about 30 lines, every scrape of every
    group); now the first failure carries it and later scrapes log one line each."""
    import logging

    from prometheus_client import CollectorRegistry, generate_latest

    from pipeline.lag_exporter import LagCollector, LagReader
    from pipeline.localinfra.kafka import create_topic, start_broker
    from pipeline.settings import KafkaSettings

    broker = start_broker(tmp_path / "kafka")  # its own: this test stops it
    try:
        create_topic(broker.bootstrap, "gone", 1, None)
        reader = LagReader(KafkaSettings(bootstrap_servers=broker.bootstrap, reconnect_backoff_max_ms=200), "g", ["gone"])
        registry = CollectorRegistry()
        registry.register(LagCollector(reader))
        deadline = time.monotonic() + 60  # a new broker's group coordinator takes a moment
        while 'mm_lag_exporter_up{group="g"} 1.0' not in generate_latest(registry).decode():
            assert time.monotonic() < deadline, "the exporter never read the fresh broker"
            time.sleep(0.5)
        broker.stop()
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipeline.lag_exporter"):
            pages = [generate_latest(registry).decode() for _ in range(3)]
        reader.close()
    finally:
        broker.stop()
    assert all('mm_lag_exporter_up{group="g"} 0.0' in page for page in pages)
    failures = [r for r in caplog.records if r.name == "pipeline.lag_exporter"]
    assert len(failures) == 3
    assert [r.exc_info is not None for r in failures] == [True, False, False]


def test_a_hung_broker_is_up_0_within_the_scrape_timeout_not_a_scrape_prometheus_gives_up_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker that hangs (SIGSTOP) instead of closing its sockets. Regression (hostile check,
    2026-12-04): each group's read waited 10-15 s and the groups were read one after another, so a
    scrape outlasted Prometheus' 10 s scrape timeout: the exporter itself looked down, and no
    ``mm_lag_exporter_up`` 0 was ever stored. Now every scrape answers within the timeout, a read
    still waiting on the broker is shared rather than started again, and the exporter reads
    again once the broker is back."""
    import logging
    import signal

    from prometheus_client import CollectorRegistry, generate_latest

    from pipeline.lag_exporter import LagCollector, LagReader
    from pipeline.localinfra.kafka import create_topic, start_broker
    from pipeline.settings import KafkaSettings

    broker = start_broker(tmp_path / "kafka")  # its own: this test hangs it
    readers: list[LagReader] = []
    try:
        create_topic(broker.bootstrap, "hung", 1, None)
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap, reconnect_backoff_max_ms=200)
        readers = [LagReader(kafka, group, ["hung"]) for group in ("g1", "g2", "g3")]
        registry = CollectorRegistry()
        registry.register(LagCollector(*readers, timeout_s=2.0))
        everyone_up = "\n".join(f'mm_lag_exporter_up{{group="{g}"}} 1.0' for g in ("g1", "g2", "g3"))
        deadline = time.monotonic() + 60  # a new broker's group coordinator takes a moment
        while _up_lines(generate_latest(registry).decode()) != everyone_up:
            assert time.monotonic() < deadline, "the exporter never read the fresh broker"
            time.sleep(0.5)
        os.kill(broker.service.pid, signal.SIGSTOP)
        try:
            took, pages = [], []
            with caplog.at_level(logging.WARNING, logger="pipeline.lag_exporter"):
                for _ in range(3):
                    started = time.monotonic()
                    pages.append(generate_latest(registry).decode())
                    took.append(time.monotonic() - started)
        finally:
            os.kill(broker.service.pid, signal.SIGCONT)
        deadline = time.monotonic() + 90
        while _up_lines(generate_latest(registry).decode()) != everyone_up:
            assert time.monotonic() < deadline, "the exporter did not read the broker again after it came back"
            time.sleep(1)
    finally:
        for reader in readers:
            reader.close()
        broker.stop()
    # 2 s plus slack for a loaded machine; on the old code one scrape of the three groups took 90 s.
    assert max(took) < 6, took
    assert all(_up_lines(page).count("} 0.0") == 3 for page in pages), pages
    waited = [r.getMessage() for r in caplog.records if "no answer from the broker within 2 s" in r.getMessage()]
    assert len(waited) == 9, [r.getMessage() for r in caplog.records]
