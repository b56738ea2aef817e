"""`make test` (two workers) keeps every Spark test on one pytest-xdist worker (one SparkSession,
one shared lake): xdist's loadgroup scheduler sends tests whose node id ends in ``@<group>`` to one
worker. Two ways it broke silently, both measured (each worker started its own Spark): the Spark
conftest marked its tests after xdist had read the marks (conftest loaded at start-up), and
pytest 9.2 no longer reads the ``item._nodeid`` that xdist 3.8.0 renames. ``--setup-plan`` lists
the ids the workers schedule without running a test or starting Spark."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("paths", [["tests/integration/spark"], ["tests/integration"]], ids=["spark-dir", "integration-dir"])
def test_every_spark_test_is_in_the_spark_group_under_two_workers(paths):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup",
         "--setup-plan", "-v", *paths, "-k", "spark or backfill or report or shadow"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240,
    )
    assert "LoadGroupScheduling" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    ids = [line.split()[0] for line in proc.stdout.splitlines() if line.startswith("tests/integration/spark/")]
    assert len(ids) >= 10, proc.stdout[-3000:]
    assert all(i.endswith("@spark") for i in ids), [i for i in ids if not i.endswith("@spark")]
