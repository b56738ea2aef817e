"""SparkSession for the batch jobs: local[*] by default, any master by flag.

Defaults are sized for a small shared machine (1 GiB driver, few shuffle partitions) and
pin what results depend on: the session time zone is UTC (lake dates are UTC dates), and
the Python workers run the driver's interpreter so detectors see the same packages.
"""

from __future__ import annotations

import os
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pyspark.sql import SparkSession

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCALA_BINARY_VERSION = "2.13"
# Maven Central has no spark-sql-kafka 4.3.0 (the newest there is 4.2.0, checked 2026-11-29);
# the 4.2.0 connector runs on the 4.3.0 runtime (tests/integration/spark/test_backfill.py
# reads a real topic through it). Move to the pyspark version once it is published.
KAFKA_CONNECTOR_VERSION = "4.2.0"
KAFKA_PACKAGE = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY_VERSION}:{KAFKA_CONNECTOR_VERSION}"
# Ivy's default under Spark 4 is ~/.ivy2.5.2; one stable cache lets `make setup` pre-resolve.
IVY_HOME = Path.home() / ".ivy2"
_SHIPPED_PACKAGES = ("pipeline", "detectors")


class SparkSetupError(RuntimeError):
    """The session could not be built (bad master, unresolvable packages, no JVM)."""


@dataclass(frozen=True)
class SparkOptions:
    """How to build the session; the CLI maps its shared flags onto this."""

    master: str = "local[*]"
    app_name: str = "misuse-monitor"
    driver_memory: str = "1g"
    executor_memory: str | None = None
    shuffle_partitions: int = 4
    # Resolve spark-sql-kafka from Maven Central (only the Kafka backfill needs it).
    kafka: bool = False
    ui: bool = False
    # Zip pipeline/ and detectors/ and ship them to executors; needed off the local machine.
    ship_code: bool | None = None
    conf: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_local(self) -> bool:
        return self.master.startswith("local")


def build_session(options: SparkOptions | None = None) -> SparkSession:
    """Create (or return the running) SparkSession configured for the jobs.

    Settings read at JVM launch (driver memory, packages) only apply when no session is
    running yet in this process; tests therefore build one session and share it.
    """
    opts = options or SparkOptions()
    builder = (
        SparkSession.builder.master(opts.master)
        .appName(opts.app_name)
        .config("spark.driver.memory", opts.driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        # Owner-only output, as the lake (0600): campaigns keep a representative prompt, and the
        # jobs' files were 0644 (a hostile review, 2026-12-06). Hadoop's local file system applies it.
        .config("spark.hadoop.fs.permissions.umask-mode", "077")
        .config("spark.sql.shuffle.partitions", str(opts.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Reused workers keep the per-process detector cache (backfill._SCORERS) warm.
        .config("spark.python.worker.reuse", "true")
        .config("spark.ui.enabled", str(opts.ui).lower())
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.jars.ivy", str(IVY_HOME))
    )
    if opts.executor_memory:
        builder = builder.config("spark.executor.memory", opts.executor_memory)
    if opts.kafka:
        builder = builder.config("spark.jars.packages", KAFKA_PACKAGE)
    if opts.is_local:
        # Same interpreter and import path on driver and workers: local workers are
        # children of this JVM and inherit PYTHONPATH from its environment.
        # PySpark's driver reads PYSPARK_PYTHON (not spark.pyspark.python) to launch them.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = builder.config("spark.pyspark.python", os.environ["PYSPARK_PYTHON"])
        _prepend_pythonpath(PROJECT_ROOT)
    for key, value in opts.conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # py4j/JVM launch errors have no common base class
        raise SparkSetupError(f"cannot start Spark with master {opts.master!r}: {exc}") from exc
    ship = opts.ship_code if opts.ship_code is not None else not opts.is_local
    if ship:
        spark.sparkContext.addPyFile(str(code_archive(Path(tempfile.mkdtemp(prefix="mm-spark-code-")))))
    return spark


def code_archive(directory: Path) -> Path:
    """Zip of the project's Python packages (and detector artifacts) for remote executors."""
    target = directory / "misuse_monitor_code.zip"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in _SHIPPED_PACKAGES:
            for path in sorted((PROJECT_ROOT / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    zf.write(path, path.relative_to(PROJECT_ROOT).as_posix())
    return target


def _prepend_pythonpath(path: Path) -> None:
    current = os.environ.get("PYTHONPATH", "")
    parts = [p for p in current.split(os.pathsep) if p]
    if str(path) not in parts:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(path), *parts])
