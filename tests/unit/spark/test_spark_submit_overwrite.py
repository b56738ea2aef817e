"""The job files run by spark-submit refuse a non-empty output like `misuse-monitor spark` does,
before any SparkSession starts (so this test never starts one)."""

from __future__ import annotations

import pytest

from pipeline.exits import InputError
from pipeline.spark import aggregates, backfill, campaigns, offenders, shadow

JOBS = [
    (aggregates, "aggregates", ["--lake", "LAKE"]),
    (campaigns, "campaigns", ["--lake", "LAKE"]),
    (offenders, "offenders", ["--lake", "LAKE"]),
    (shadow, "shadow", ["--labels", "LAKE"]),
    (backfill, "", ["--lake", "LAKE"]),
]


@pytest.mark.parametrize(("job", "subdir", "args"), JOBS, ids=[j[0].__name__.rsplit(".", 1)[1] for j in JOBS])
def test_spark_submit_job_refuses_a_non_empty_out(tmp_path, job, subdir, args):
    target = tmp_path / "out" / subdir if subdir else tmp_path / "out"
    target.mkdir(parents=True)
    (target / "part-0.parquet").write_bytes(b"an earlier run")
    argv = [a.replace("LAKE", str(tmp_path / "lake")) for a in args] + ["--out", str(tmp_path / "out")]
    with pytest.raises(InputError, match="is not empty; pass --overwrite"):
        job.main(argv)
    assert (target / "part-0.parquet").read_bytes() == b"an earlier run"


@pytest.mark.parametrize(("job", "subdir", "args"), JOBS, ids=[j[0].__name__.rsplit(".", 1)[1] for j in JOBS])
def test_a_job_file_run_as_a_script_reports_a_user_error_in_one_line(tmp_path, job, subdir, args):
    """`spark-submit pipeline/spark/<job>.py` runs the file as a script: a refused output or a
    missing input was a Python traceback and exit 1 (the bug code) there, while `misuse-monitor
    spark <job>` said one line, exit 4 (a newcomer running docs/spark.md, 2026-12-04)."""
    import subprocess
    import sys
    from pathlib import Path

    target = tmp_path / "out" / subdir if subdir else tmp_path / "out"
    target.mkdir(parents=True)
    (target / "part-0.parquet").write_bytes(b"an earlier run")
    argv = [a.replace("LAKE", str(tmp_path / "lake")) for a in args] + ["--out", str(tmp_path / "out")]
    name = job.__name__.rsplit(".", 1)[1]
    done = subprocess.run([sys.executable, str(Path(job.__file__)), *argv], capture_output=True, text=True, timeout=120)
    assert done.returncode == 4, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert f"{name}: error:" in done.stderr and "is not empty; pass --overwrite" in done.stderr


@pytest.mark.parametrize(
    ("job", "args", "says"),
    [(offenders, ["--half-life-days", "nan"], "--half-life-days"), (offenders, ["--half-life-days", "0"], "--half-life-days"),
     (offenders, ["--top", "-1"], "--top"), (campaigns, ["--max-distance", "-1"], "--max-distance"),
     (campaigns, ["--min-users", "0"], "--min-users"), (backfill, ["--max-rows-per-file", "0"], "--max-rows-per-file")],
    ids=["half-life-nan", "half-life-0", "top-negative", "distance-negative", "min-users-0", "rows-per-file-0"],
)
def test_a_job_file_refuses_the_values_the_cli_refuses(tmp_path, capsys, job, args, says):
    """A hostile review (2026-12-07): run by spark-submit, `--half-life-days nan` exited 0 with
    every risk NaN, `0` was a traceback after the JVM started, `--top -1` wrote nothing."""
    with pytest.raises(SystemExit) as exited:
        job.main(["--lake", str(tmp_path / "lake"), "--out", str(tmp_path / "out"), *args])
    assert exited.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("job", [aggregates, campaigns, offenders], ids=["aggregates", "campaigns", "offenders"])
def test_a_job_file_refuses_an_out_inside_the_lake(tmp_path, job):
    """docs/spark.md says both entry points refuse an --out inside verdicts/; the job files did not."""
    lake = tmp_path / "lake"
    (lake / "verdicts").mkdir(parents=True)
    with pytest.raises(InputError, match="lies inside the lake's verdicts folder"):
        job.main(["--lake", str(lake), "--out", str(lake / "verdicts")])
