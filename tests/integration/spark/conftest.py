"""One local[2] SparkSession and one simulated history for every Spark test.

The session is built with the spark-sql-kafka package (resolved from Maven Central into
~/.ivy2 on first use) because packages can only be added when the JVM starts. The history
is simulated traffic (pipeline.simulate) with its ground truth, plus two invalid lines,
backfilled once into a lake that the job tests share.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("pyspark")

from pyspark.sql import SparkSession  # noqa: E402

from pipeline.settings import Settings  # noqa: E402
from pipeline.simulate import GroundTruth, simulate, write_jsonl  # noqa: E402
from pipeline.spark import backfill  # noqa: E402
from pipeline.spark.session import SparkOptions, build_session  # noqa: E402
from pipeline.verdicts import Pseudonymizer  # noqa: E402

SIM_RECORDS = 1500
SIM_SEED = 11
SIM_END = datetime(2026, 11, 20, tzinfo=UTC)
SIM_SPAN = timedelta(days=4)
INVALID_LINES = [b'{"schema": "inference-log/v1", "request_id": "broken"', b'{"schema": "other/v9"}']


# tryfirst: pytest-xdist reads the xdist_group mark in its own modifyitems hook, which runs before
# this one when this conftest is loaded at start-up (`pytest tests/integration/spark`).
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.spark)
            # One worker runs every Spark test (one SparkSession, one shared lake) under
            # --dist loadgroup. Needs pytest < 9.2: xdist 3.8.0 renames item._nodeid, which
            # pytest 9.2 no longer reads (docs/benchmarks.md, "Test suite").
            item.add_marker(pytest.mark.xdist_group("spark"))
            # pyspark 4.3 warns about pandas 3 on every Arrow UDF; the jobs use Arrow, not pandas UDFs.
            item.add_marker(pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas"))


@dataclass(frozen=True)
class SimulatedHistory:
    jsonl: Path
    truths: dict[str, GroundTruth]  # request_id -> truth
    lines: list[bytes]  # the file's lines, line n at index n-1
    settings: Settings

    @property
    def truth_file(self) -> Path:
        return self.jsonl.parent / "truth.jsonl"

    def pseudonym(self, user_id: str | None) -> str | None:
        return Pseudonymizer(self.settings.pseudonym_key.get_secret_value().encode())(user_id)


@pytest.fixture(scope="session")
def spark() -> Iterator[SparkSession]:
    session = build_session(
        SparkOptions(master="local[2]", app_name="misuse-monitor-tests", kafka=True, shuffle_partitions=2)
    )
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="session")
def history(tmp_path_factory: pytest.TempPathFactory) -> SimulatedHistory:
    directory = tmp_path_factory.mktemp("history")
    path = directory / "logs.jsonl"
    records = list(simulate(SIM_RECORDS, seed=SIM_SEED, end=SIM_END, span=SIM_SPAN))
    write_jsonl(records, path, directory / "truth.jsonl")
    with path.open("ab") as fh:  # invalid inputs must come out as dead letters, not vanish
        for line in INVALID_LINES:
            fh.write(line + b"\n")
    truths = {r.log.request_id: r.truth for r in records}
    # raw_text "all": the job tests re-score the whole history from the lake; only kept logs can
    # be re-scored (the default "flagged" keeps flagged ones: test_backfill covers that case).
    settings = Settings(detectors={"enabled": ["rules"]}, lake={"raw_text": "all"})
    return SimulatedHistory(path, truths, path.read_bytes().splitlines(), settings)


@pytest.fixture(scope="session")
def history_lake(spark: SparkSession, history: SimulatedHistory, tmp_path_factory: pytest.TempPathFactory) -> Path:
    lake = tmp_path_factory.mktemp("lake")
    spec = backfill.ScoringSpec.from_settings(history.settings)
    backfill.backfill_to_lake(spark, backfill.read_jsonl(spark, [history.jsonl]), spec, lake)
    return lake


def truth_labels(history: SimulatedHistory) -> list[dict]:
    """The simulator's truth file (`simulate --truth`), read back as JSON lines."""
    return [json.loads(line) for line in history.truth_file.read_text().splitlines()]


def write_labels(history: SimulatedHistory, path: Path) -> Path:
    """Labels for a job: the truth file exactly as ``simulate --truth`` wrote it (the round trip)."""
    path.write_bytes(history.truth_file.read_bytes())
    return path
