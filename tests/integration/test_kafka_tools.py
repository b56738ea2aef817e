"""The standard Kafka command-line tools work against the local broker, as docs/integrations.md shows."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from pipeline.localinfra.kafka import TOOL_SCRIPTS, install_tools
from pipeline.producer import TrackedProducer
from pipeline.settings import KafkaSettings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tools() -> Path:
    return install_tools()


def _run(tools: Path, script: str, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([str(tools / script), *args], input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_every_script_is_executable_and_names_its_main_class(tools):
    for script, main_class in TOOL_SCRIPTS.items():
        path = tools / script
        assert path.stat().st_mode & 0o111 and main_class in path.read_text()
    assert (tools / "kafka-run-class.sh").stat().st_mode & 0o111


def test_topics_list_console_tools_and_consumer_group_lag(tools, kafka_bootstrap, kafka_topic_factory):
    topic = kafka_topic_factory(partitions=2)
    assert topic in _run(tools, "kafka-topics.sh", "--bootstrap-server", kafka_bootstrap, "--list").split()

    # Records with headers, as the dead-letter topic carries them.
    producer = TrackedProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    for i in range(5):
        producer.send(topic, f'{{"n":{i}}}'.encode(), key=f"k{i}".encode(), headers={"mm.reason": b"invalid_json"})
    producer.flush()
    producer.close()
    _run(tools, "kafka-console-producer.sh", "--bootstrap-server", kafka_bootstrap, "--topic", topic,
         stdin='{"n":5}\n{"n":6}\n')  # fmt: skip

    out = _run(tools, "kafka-console-consumer.sh", "--bootstrap-server", kafka_bootstrap, "--topic", topic,
               "--from-beginning", "--max-messages", "7", "--timeout-ms", "20000",
               "--property", "print.headers=true", "--property", "print.key=true")  # fmt: skip
    lines = out.strip().splitlines()
    assert len(lines) == 7
    assert sum("mm.reason:invalid_json" in line for line in lines) == 5
    assert any(line.endswith('{"n":6}') for line in lines)

    # A group that read 3 of the 7 records: the standard tool shows its lag.
    group = f"g-{topic}"
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group, auto_offset_reset="earliest",
                             enable_auto_commit=False, max_poll_records=3)  # fmt: skip
    read = 0
    while read < 3:
        read += sum(len(batch) for batch in consumer.poll(timeout_ms=1000, max_records=3 - read).values())
    consumer.commit()
    consumer.close()
    described = _run(tools, "kafka-consumer-groups.sh", "--bootstrap-server", kafka_bootstrap, "--describe",
                     "--group", group)  # fmt: skip
    rows = [line.split() for line in described.splitlines() if line.startswith(group)]
    header = next(line.split() for line in described.splitlines() if "LAG" in line)
    lag = header.index("LAG")
    assert {row[header.index("TOPIC")] for row in rows} == {topic}
    assert sum(int(row[lag]) for row in rows if row[lag] != "-") == 4


def test_tools_path_command_prints_the_folder_of_the_scripts(tools, kafka_bootstrap, kafka_topic_factory, tmp_path):
    """`python -m pipeline.localinfra.kafka tools-path`, as docs/integrations.md has users run it."""
    topic = kafka_topic_factory(partitions=1)
    done = subprocess.run([sys.executable, "-m", "pipeline.localinfra.kafka", "tools-path"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    printed = done.stdout.splitlines()
    assert len(printed) == 1, done.stdout  # only the path: `PATH="$(... tools-path):$PATH"` works
    folder = Path(printed[0])
    assert folder.is_absolute() and folder == tools
    for script in [*TOOL_SCRIPTS, "kafka-run-class.sh"]:
        assert (folder / script).stat().st_mode & 0o111, script
    assert topic in _run(folder, "kafka-topics.sh", "--bootstrap-server", kafka_bootstrap, "--list").split()
