"""A real, single-node Apache Kafka (KRaft) on loopback for dev (``make kafka-up``) and tests.

Why Maven: Docker and the Apache download mirrors are not reachable everywhere we run, but a JDK,
Maven and Maven Central are, and Central serves every Kafka server jar. :func:`resolve_jars`
pulls Kafka and its runtime dependencies once into ``~/.cache/misuse-monitor/kafka-<version>/libs``;
:func:`start_broker` formats KRaft storage and runs ``kafka.Kafka`` as one broker+controller JVM.

Large records: the streaming job must carry ~10-12 MB inference logs, so the broker accepts
batches up to :data:`MAX_MESSAGE_BYTES` (16 MiB: ``message.max.bytes``, ``replica.fetch.max.bytes``,
``replica.fetch.response.max.bytes``). Clients must match (see :data:`LARGE_PRODUCER_CONFIG` and
:data:`LARGE_CONSUMER_CONFIG`): kafka-python's producer rejects any record above
``max_request_size`` (default 1 MiB) locally with MessageSizeTooLargeError, so it is raised to
16 MiB; ``buffer_memory`` (default 32 MiB) already holds two such records. Records above 16 MiB
are refused by the broker (MessageSizeTooLargeError from the produce response). On the consumer,
kafka-python 3.0.12 with default settings did receive 10/12/15 MiB records (the broker returns an
oversized first batch, KIP-74), but ``max_partition_fetch_bytes`` is still raised to 16 MiB so a
whole record fits one fetch by design rather than by that allowance; ``fetch_max_bytes`` (default
50 MiB) already exceeds it.

Standard tools: :func:`install_tools` resolves the ``kafka-tools`` jars into their own folder
(``<cache>/tools/libs``: the broker's classpath stays as it is) and writes the ``bin/`` scripts a
Kafka user knows (``kafka-topics.sh``, ``kafka-console-consumer.sh``, ``kafka-console-producer.sh``,
``kafka-consumer-groups.sh`` and the ``kafka-run-class.sh`` they share), running the same main
classes as the scripts of the Apache Kafka 4.1.1 distribution.

CLI::

    python -m pipeline.localinfra.kafka up [--port 9092]   # prints 127.0.0.1:9092
    python -m pipeline.localinfra.kafka status [--bootstrap]   # exit 1 when not running
    python -m pipeline.localinfra.kafka tools-path   # prints the bin/ folder of the Kafka tools
    python -m pipeline.localinfra.kafka down
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.localinfra.base import (
    LOOPBACK,
    LocalService,
    ServiceHandle,
    StateFileError,
    default_run_dir,
    exclusive_lock,
    free_port,
    log_tail,
    pids_with_argument,
    port_arg,
    port_is_open,
    record_while_starting,
    run_service_command,
    wait_for_port,
)

KAFKA_VERSION = "4.1.1"
SCALA_BINARY_VERSION = "2.13"
# Kafka 4.x logs through SLF4J 1.7 -> log4j2; the kafka_2.13 POM ships log4j-core but not the binding.
LOG4J2_VERSION = "2.24.3"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

MAX_MESSAGE_BYTES = 16 * 1024 * 1024
LARGE_PRODUCER_CONFIG: dict[str, Any] = {"max_request_size": MAX_MESSAGE_BYTES}
LARGE_CONSUMER_CONFIG: dict[str, Any] = {"max_partition_fetch_bytes": MAX_MESSAGE_BYTES}

DEFAULT_HEAP = "768m"
STARTUP_TIMEOUT_S = 60.0
SERVICE_NAME = "kafka"
_RESOLVED_MARKER = ".resolved"


class KafkaSetupError(RuntimeError):
    """Kafka could not be resolved or started locally (missing java/mvn, bad config, timeout)."""


# --------------------------------------------------------------------------- jar resolution


def default_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """``$XDG_CACHE_HOME/misuse-monitor/kafka-<version>`` (``~/.cache`` when unset)."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "misuse-monitor" / f"kafka-{version}"


def resolve_jars(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> list[Path]:
    """Return the broker classpath, downloading it from Maven Central the first time.

    ``cache_dir`` (default :func:`default_cache_dir`) gets a tiny ``pom.xml`` and a ``libs/``
    folder filled by ``mvn dependency:copy-dependencies`` (runtime scope). A marker file listing
    the jars makes later calls instant and offline; a file lock keeps concurrent first calls
    (``make kafka-up`` racing a test run) from clobbering each other.
    """
    cache_dir = cache_dir or default_cache_dir(version)
    deps = [
        ("org.apache.kafka", f"kafka_{SCALA_BINARY_VERSION}", version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J2_VERSION),
    ]
    return _resolve(cache_dir, deps, f"kafka_{SCALA_BINARY_VERSION}-{version}.jar", version)


def _resolve(cache_dir: Path, deps: list[tuple[str, str, str]], required_jar: str, version: str) -> list[Path]:
    """Download ``deps`` and their runtime dependencies into ``cache_dir/libs`` once (see resolve_jars)."""
    libs = cache_dir / "libs"
    marker = cache_dir / _RESOLVED_MARKER
    cache_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache_dir / ".lock"):
        cached = _read_marker(marker, libs)
        if cached:
            return cached
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaSetupError("mvn not found on PATH: install Maven 3.8+ (apt-get install maven)")
        if libs.exists():
            shutil.rmtree(libs)  # a half-finished earlier attempt
        pom = cache_dir / "pom.xml"
        pom.write_text(_pom_xml(deps, version))
        _run_maven(mvn, pom, libs)
        jars = sorted(libs.glob("*.jar"))
        if not any(j.name == required_jar for j in jars):
            raise KafkaSetupError(f"mvn finished but {required_jar} is not in {libs}")
        marker.write_text("".join(f"{j.name}\n" for j in jars))
        return jars


def _read_marker(marker: Path, libs: Path) -> list[Path] | None:
    if not marker.exists():
        return None
    jars = [libs / name for name in marker.read_text().split()]
    return jars if jars and all(j.exists() for j in jars) else None


def _pom_xml(deps: list[tuple[str, str, str]], version: str) -> str:
    dep_xml = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by pipeline.localinfra.kafka.resolve_jars; only used to download jars. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.misuse-monitor</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{dep_xml}
  </dependencies>
</project>
"""


def _run_maven(mvn: str, pom: Path, libs: Path) -> None:
    cmd = [
        mvn, "-B", "-q", "-f", str(pom),
        f"{DEPENDENCY_PLUGIN}:copy-dependencies",
        f"-DoutputDirectory={libs}",
        "-DincludeScope=runtime",
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)  # mvn colours even with -B
        tail = "\n".join(output.splitlines()[-25:])
        raise KafkaSetupError(f"mvn failed (exit {result.returncode}) resolving Kafka jars:\n{tail}")


# --------------------------------------------------------------------------- standard tools

# Script name -> main class, as in bin/ of the Apache Kafka 4.1.1 distribution.
TOOL_SCRIPTS: dict[str, str] = {
    "kafka-topics.sh": "org.apache.kafka.tools.TopicCommand",
    "kafka-console-consumer.sh": "org.apache.kafka.tools.consumer.ConsoleConsumer",
    "kafka-console-producer.sh": "org.apache.kafka.tools.ConsoleProducer",
    "kafka-consumer-groups.sh": "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
}


def install_tools(version: str = KAFKA_VERSION, cache_dir: Path | None = None) -> Path:
    """Resolve ``kafka-tools`` (once) and (re)write its ``bin/`` scripts; returns the ``bin/`` folder.

    The tools get their own ``libs/`` (``<cache>/tools``): ``kafka-tools`` pulls in Kafka Connect's
    runtime (Jetty, Jersey), which the broker does not need on its classpath.
    """
    tools_dir = (cache_dir or default_cache_dir(version)) / "tools"
    deps = [
        ("org.apache.kafka", "kafka-tools", version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J2_VERSION),
    ]
    _resolve(tools_dir, deps, f"kafka-tools-{version}.jar", version)
    bin_dir = tools_dir / "bin"
    bin_dir.mkdir(exist_ok=True)
    config = tools_dir / "config"
    config.mkdir(exist_ok=True)
    # As the distribution's tools-log4j2.yaml: warnings and errors to stderr, output stays clean.
    (config / "tools-log4j2.properties").write_text(
        "status = error\nappender.err.type = Console\nappender.err.name = STDERR\nappender.err.target = SYSTEM_ERR\n"
        "appender.err.layout.type = PatternLayout\nappender.err.layout.pattern = [%d] %p %m (%c)%n\n"
        "rootLogger.level = WARN\nrootLogger.appenderRef.err.ref = STDERR\n"
    )
    java = find_java()
    _write_script(
        bin_dir / "kafka-run-class.sh",
        f"""#!/usr/bin/env bash
# Generated by pipeline.localinfra.kafka.install_tools: runs a class of Kafka {version} with the
# jars resolved from Maven Central. Usage: kafka-run-class.sh CLASS [ARGS...]
base_dir=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$JAVA_HOME" ]; then JAVA="$JAVA_HOME/bin/java"; else JAVA="{java}"; fi
exec "$JAVA" ${{KAFKA_HEAP_OPTS:--Xmx256m}} -XX:+UseSerialGC -Djava.awt.headless=true \\
  -Dlog4j2.configurationFile="$base_dir/config/tools-log4j2.properties" \\
  -cp "$base_dir/libs/*" "$@"
""",
    )
    for script, main_class in TOOL_SCRIPTS.items():
        _write_script(
            bin_dir / script,
            f'#!/usr/bin/env bash\n# Generated by pipeline.localinfra.kafka.install_tools (Kafka {version}).\n'
            f'exec "$(dirname "$0")/kafka-run-class.sh" {main_class} "$@"\n',
        )
    return bin_dir


def _write_script(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.chmod(0o755)
        tmp.replace(path)  # atomic: a concurrent caller never runs half a script


# --------------------------------------------------------------------------- broker


@dataclass
class KafkaBroker(ServiceHandle):
    """A running local broker: ``bootstrap`` is what clients connect to."""

    controller_port: int
    data_dir: Path

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def log_path(self) -> Path:
        """The broker's own log (log4j2); JVM-level output goes to ``stdout.log`` beside it."""
        return self.data_dir / "server.log"

    def stop(self, timeout_s: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM), SIGKILL if it takes longer than ``timeout_s``."""
        self.service.stop(timeout_s)


def find_java() -> str:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH; Kafka 4.x needs Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaSetupError("java not found: install a JDK 17+ (openjdk-17-jre-headless) or set JAVA_HOME")
    return java


def start_broker(
    data_dir: Path,
    port: int | None = None,
    *,
    extra_config: Mapping[str, str] | None = None,
    num_partitions: int = 3,
    heap: str = DEFAULT_HEAP,
    detach: bool = False,
    state_file: Path | None = None,
    startup_timeout_s: float = STARTUP_TIMEOUT_S,
    jars: list[Path] | None = None,
) -> KafkaBroker:
    """Start a single-node KRaft broker+controller with all state under ``data_dir``.

    ``port=None`` picks a free port. An already formatted ``data_dir`` is reused, so topics and
    offsets survive a stop/start. Returns only once the broker answers a metadata request;
    raises :class:`KafkaSetupError` with the log tail if it dies or does not answer in time.
    ``detach=True`` lets the broker outlive this Python process; ``state_file`` is written as
    soon as the JVM exists, so ``down`` can stop even a broker whose startup hangs (the CLI).
    """
    java = find_java()
    classpath = os.pathsep.join(str(j) for j in (jars or resolve_jars()))
    data_dir = data_dir.resolve()
    log_dirs = data_dir / "logs"
    log_dirs.mkdir(parents=True, exist_ok=True)
    # Two concurrent starts on one data_dir: held until the broker answers, since the JVM takes
    # Kafka's own lock on log_dirs only after it has opened (and may truncate) the metadata log.
    with exclusive_lock(data_dir / ".start.lock"):
        _ensure_data_dir_unused(log_dirs)
        port = port or free_port()
        if port_is_open(LOOPBACK, port):
            raise KafkaSetupError(f"port {LOOPBACK}:{port} is already in use (another broker? try another port)")
        controller_port = free_port()
        broker = _launch(java, classpath, data_dir, port, controller_port, num_partitions, extra_config, heap, detach)
        with record_while_starting(broker.service, state_file):
            _wait_until_ready(broker, startup_timeout_s)
    return broker


def _ensure_data_dir_unused(log_dirs: Path) -> None:
    """Refuse a data dir that a live broker holds.

    Kafka takes its ``.lock`` only after the controller has opened the metadata log, so a
    second broker on the same dir would first truncate the running one's log (seen in testing:
    the first broker died with CorruptRecordException). Java's FileLock is a POSIX record lock,
    which ``fcntl.lockf`` can probe.
    """
    lock = log_dirs / ".lock"
    if not lock.exists():
        return
    with lock.open("a") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise KafkaSetupError(f"{log_dirs} is in use by another running Kafka process") from exc
        fcntl.lockf(fh, fcntl.LOCK_UN)


def _launch(
    java: str,
    classpath: str,
    data_dir: Path,
    port: int,
    controller_port: int,
    num_partitions: int,
    extra_config: Mapping[str, str] | None,
    heap: str,
    detach: bool,
) -> KafkaBroker:
    """Write the config files, format storage on first use, and start the JVM (no waiting)."""
    log_dirs = data_dir / "logs"
    server_log = data_dir / "server.log"
    config_path = data_dir / "server.properties"
    log4j_path = data_dir / "log4j2.properties"
    properties = broker_properties(port, controller_port, log_dirs, num_partitions)
    properties.update(extra_config or {})
    config_path.write_text("".join(f"{k}={java_properties_value(str(v))}\n" for k, v in properties.items()), encoding="ascii")
    log4j_path.write_text(_log4j2_properties(server_log))

    if not (log_dirs / "meta.properties").exists():
        format_jvm = _jvm_command(java, "256m", log4j_path, classpath)  # the formatter needs little heap
        _format_storage(format_jvm, config_path, data_dir / "format.log")

    service = LocalService.start(
        SERVICE_NAME,
        [*_jvm_command(java, heap, log4j_path, classpath), "kafka.Kafka", str(config_path)],
        data_dir / "stdout.log",  # JVM crashes and early errors; the broker itself logs to server.log
        ports={"broker": port, "controller": controller_port},
        dirs={"data": str(data_dir)},
        info={"bootstrap": f"{LOOPBACK}:{port}", "server_log": str(server_log)},
        marker=str(config_path),
        detach=detach,
    )
    try:  # start_broker's guard begins after this returns
        return KafkaBroker(service=service, port=port, controller_port=controller_port, data_dir=data_dir)
    except BaseException:
        service.kill()
        raise


def broker_properties(port: int, controller_port: int, log_dirs: Path, num_partitions: int) -> dict[str, str]:
    """server.properties for one combined broker+controller, loopback only, sized for 2 cores."""
    max_bytes = str(MAX_MESSAGE_BYTES)
    return {
        "process.roles": "broker,controller",
        "node.id": "1",
        # Static quorum: the voter endpoint is not stored in the log, so a restart on new ports works.
        "controller.quorum.voters": f"1@{LOOPBACK}:{controller_port}",
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dirs),
        "num.partitions": str(num_partitions),
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "3",  # default 50: slow first group join on 2 cores
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "3",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "delete.topic.enable": "true",
        "message.max.bytes": max_bytes,
        "replica.fetch.max.bytes": max_bytes,
        "replica.fetch.response.max.bytes": max_bytes,
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "24",
    }


def java_properties_value(value: str) -> str:
    """``value`` as a ``.properties`` file must hold it: Kafka and log4j2 read those files as
    ISO-8859-1 with backslash escapes, so a checkout under "/home/josé" put the broker's data in
    "/home/josÃ©", outside the run dir, and every later start formatted it again (a newcomer
    review, 2026-12-07). Backslashes are doubled, anything past ASCII is a ``\\uXXXX`` escape
    (UTF-16 code units), and a leading blank is escaped so it is kept."""
    out = []
    for ch in value:
        if ch == "\\":
            out.append("\\\\")
        elif " " <= ch <= "~":
            out.append(ch)
        else:
            units = ch.encode("utf-16-be", "surrogatepass")
            out.extend(f"\\u{int.from_bytes(units[i:i + 2], 'big'):04x}" for i in range(0, len(units), 2))
    text = "".join(out)
    return "\\" + text if text.startswith(" ") else text


def _log4j2_properties(log_path: Path) -> str:
    return f"""status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {java_properties_value(str(log_path))}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
"""


def _jvm_command(java: str, heap: str, log4j_path: Path, classpath: str) -> list[str]:
    """JVM flags: small heap and serial GC, since this shares 2 cores with the pipeline and tests."""
    return [
        java, f"-Xmx{heap}", "-Xms64m", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true", "-Dlog4j2.shutdownHookEnabled=false",
        f"-Dlog4j2.configurationFile={log4j_path}", "-cp", classpath,
    ]  # fmt: skip


def _format_storage(jvm: list[str], config_path: Path, log_path: Path) -> None:
    """``kafka-storage format`` with a fresh cluster id (static quorum, so no ``--standalone``)."""
    cluster_id = "-"
    while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid(): a leading '-' reads as an option
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    cmd = [*jvm, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    log_path.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        output = log_path.read_text()[-3000:]
        raise KafkaSetupError(f"kafka storage format failed (exit {result.returncode}):\n{output}")


def _wait_until_ready(broker: KafkaBroker, timeout_s: float) -> None:
    """Wait for the port, then for a metadata answer that lists this broker (KRaft registration)."""
    from kafka.errors import KafkaError

    deadline = time.monotonic() + timeout_s
    try:
        wait_for_port(LOOPBACK, broker.port, timeout_s, process=broker.service.process)
    except (RuntimeError, TimeoutError) as exc:
        raise KafkaSetupError(f"kafka did not start: {exc}{_failure_details(broker)}") from exc
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if not broker.is_running():
            raise KafkaSetupError(f"kafka exited during startup{_failure_details(broker)}")
        try:
            with _admin(broker.bootstrap, timeout_ms=5_000) as admin:
                if admin.describe_cluster().get("brokers"):
                    return
        except KafkaError as exc:
            last_error = exc
        time.sleep(0.2)
    raise KafkaSetupError(
        f"kafka at {broker.bootstrap} did not answer within {timeout_s:.0f}s ({last_error}){_failure_details(broker)}"
    )


def _failure_details(broker: KafkaBroker) -> str:
    """ERROR lines of server.log (the tail is usually a stack trace) plus the JVM's own output."""
    details = ""
    if broker.log_path.exists():
        errors = [line for line in broker.log_path.read_text(errors="replace").splitlines() if "] ERROR " in line]
        if errors:
            details += f"\nerrors in {broker.log_path}:\n" + "\n".join(errors[-5:])
        else:
            details += f"\nlast lines of {broker.log_path}:\n{log_tail(broker.log_path, lines=15)}"
    jvm_output = log_tail(broker.service.log_path, lines=15)
    if jvm_output:
        details += f"\njvm output ({broker.service.log_path}):\n{jvm_output}"
    return details


# --------------------------------------------------------------------------- topics


@contextmanager
def _admin(bootstrap: str, timeout_ms: int = 30_000) -> Iterator[Any]:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="misuse-monitor-localinfra",
        bootstrap_timeout_ms=timeout_ms,
        request_timeout_ms=timeout_ms,
    )
    try:
        yield admin
    finally:
        admin.close()


def create_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    config: Mapping[str, str] | None = None,
    *,
    replication_factor: int = 1,
    timeout_s: float = 30.0,
) -> None:
    """Create ``name`` unless it exists, and wait until every partition has a leader.

    Idempotent for the same partition count; an existing topic with a different count raises
    ValueError rather than silently giving a test or job fewer partitions than it asked for.
    """
    from kafka.errors import TopicAlreadyExistsError

    timeout_ms = int(timeout_s * 1000)
    with _admin(bootstrap, timeout_ms) as admin:
        spec = {"num_partitions": partitions, "replication_factor": replication_factor, "configs": dict(config or {})}
        with suppress(TopicAlreadyExistsError):
            admin.create_topics({name: spec}, timeout_ms=timeout_ms)
        admin.wait_for_topics([name], timeout_ms=timeout_ms)
        (described,) = admin.describe_topics([name])
        existing = len(described["partitions"])
        if existing != partitions:
            raise ValueError(f"topic {name!r} already exists with {existing} partitions, wanted {partitions}")


def delete_topics(bootstrap: str, names: list[str], timeout_s: float = 30.0) -> None:
    """Delete topics; names that do not exist are ignored (cleanup after tests)."""
    from kafka.errors import UnknownTopicOrPartitionError

    with _admin(bootstrap, int(timeout_s * 1000)) as admin:
        for name in names:
            with suppress(UnknownTopicOrPartitionError):
                admin.delete_topics([name], timeout_ms=int(timeout_s * 1000))


# --------------------------------------------------------------------------- CLI


def _run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir).resolve()


def _running_service(state_file: Path) -> LocalService | None:
    service = LocalService.load(state_file)
    if service is not None and not service.is_running():
        state_file.unlink(missing_ok=True)  # stale: the broker died or the machine rebooted
        return None
    if service is not None and "bootstrap" not in service.info:
        raise StateFileError(f"{state_file}: not a kafka state file (no bootstrap address)")
    return service


def _orphans(state_file: Path) -> list[int]:
    """Brokers of this run dir still running after their state file went (``rm -rf .run``):
    the JVM's command line names this run dir's ``server.properties`` as its config."""
    if state_file.exists():
        return []
    return pids_with_argument(str(state_file.parent / SERVICE_NAME / "server.properties"), "kafka.Kafka")


def _orphan_error(state_file: Path, pids: list[int]) -> KafkaSetupError:
    return KafkaSetupError(
        f"a broker of {state_file.parent} runs without its state file {state_file.name} (pid "
        f"{', '.join(map(str, pids))}; was the folder deleted?): `python -m pipeline.localinfra.kafka down` stops it"
    )


def _cmd_up(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args)
    state_file = run_dir / f"{SERVICE_NAME}.json"
    # Held from reading the state file to a ready broker: a concurrent `up` waits, then reports ours.
    with exclusive_lock(run_dir / f"{SERVICE_NAME}.json.lock"):
        service = _running_service(state_file)
        if service is None and (orphans := _orphans(state_file)):
            raise _orphan_error(state_file, orphans)
        if service is not None:
            bootstrap = service.info["bootstrap"]
            if args.port and service.ports.get("broker") != args.port:
                print(f"kafka: already running at {bootstrap} (not port {args.port}): using it", file=sys.stderr)
            print(bootstrap)
            return 0
        started = time.monotonic()
        broker = start_broker(
            run_dir / SERVICE_NAME, args.port or None, num_partitions=args.partitions, detach=True,
            state_file=state_file,
        )
    print(
        f"kafka up at {broker.bootstrap} in {time.monotonic() - started:.1f}s (log: {broker.log_path})", file=sys.stderr
    )
    print(broker.bootstrap)
    return 0


def _cmd_down(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args)
    if not run_dir.is_dir() or not os.access(run_dir, os.W_OK):
        # `down` creates nothing, and needs no lock where no `up` of this user can run: a broker
        # whose run dir was deleted is still found, and a read-only one says "not running".
        return _down(run_dir / f"{SERVICE_NAME}.json")
    # Waits for an `up` in progress, as the other services' `down` does: the storage format step
    # runs for seconds before the broker's JVM exists, so `down` said "not running" and the broker
    # started after it (a newcomer review, 2026-12-07).
    with exclusive_lock(run_dir / f"{SERVICE_NAME}.json.lock"):
        return _down(run_dir / f"{SERVICE_NAME}.json")


def _down(state_file: Path) -> int:
    service = _running_service(state_file)
    if service is None:
        orphans = _orphans(state_file)
        for pid in orphans:
            # Its config path, a whole argument of kafka.Kafka, is this run dir's: ours for sure.
            orphan = LocalService(SERVICE_NAME, pid, state_file.parent / SERVICE_NAME / "stdout.log",
                                  marker=str(state_file.parent / SERVICE_NAME / "server.properties"))
            orphan.stop(timeout_s=30.0)
            print(f"kafka: stopped (pid {pid}, whose state file was gone)", file=sys.stderr)
        if not orphans:
            print("kafka: not running", file=sys.stderr)
        return 0
    service.stop(timeout_s=30.0)
    state_file.unlink(missing_ok=True)
    print(f"kafka: stopped (pid {service.pid}); data kept in {service.dirs.get('data')}", file=sys.stderr)
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    state_file = _run_dir(args) / f"{SERVICE_NAME}.json"
    service = _running_service(state_file)
    if service is None:
        if orphans := _orphans(state_file):
            print(f"kafka: {_orphan_error(state_file, orphans)}", file=sys.stderr)
        else:
            print("kafka: not running", file=sys.stderr if args.bootstrap else sys.stdout)
        return 1
    if args.bootstrap:  # for scripts: MM_KAFKA__BOOTSTRAP_SERVERS=$(... status --bootstrap)
        print(service.info["bootstrap"])
    else:
        print(
            f"kafka: running at {service.info['bootstrap']} (pid {service.pid}, log {service.info.get('server_log')})"
        )
        tools = default_cache_dir() / "tools" / "bin"
        if tools.is_dir():
            print(f"kafka tools: {tools} (kafka-topics.sh --bootstrap-server {service.info['bootstrap']} --list)")
    return 0


def _cmd_tools_path(args: argparse.Namespace) -> int:
    print(install_tools())
    return 0


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number} is not a positive number")
    return number


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``python -m pipeline.localinfra.kafka``."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.localinfra.kafka", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--run-dir", default=str(default_run_dir()), help="state and data folder (default: $MM_RUN_DIR, else ./.run)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser(
        "up", help="start the broker in the background (no-op if running); prints the bootstrap address"
    )
    up.add_argument(
        "--port", type=port_arg, default=9092, help="listener port on 127.0.0.1 (0: any free port; default 9092)"
    )
    up.add_argument("--partitions", type=_positive_int, default=3, help="partitions of auto-created topics")
    sub.add_parser("down", help="stop the broker started by 'up' (data is kept)")
    status = sub.add_parser("status", help="exit 0 and describe the broker if running, else exit 1")
    status.add_argument("--bootstrap", action="store_true", help="print only the bootstrap address")
    sub.add_parser(
        "tools-path", help="print the bin/ folder of kafka-topics.sh & co (resolved from Maven Central on first use)"
    )
    args = parser.parse_args(argv)
    handlers = {"up": _cmd_up, "down": _cmd_down, "status": _cmd_status, "tools-path": _cmd_tools_path}
    # KafkaSetupError: exit 2; a state file or run dir that cannot be used: exit 4.
    return run_service_command(SERVICE_NAME, lambda: handlers[args.command](args), (KafkaSetupError,))


if __name__ == "__main__":
    sys.exit(main())
