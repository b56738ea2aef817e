"""Bad `misuse-monitor spark` options are usage errors (exit 2) or one-line input errors, before Spark starts.

Each used to end as "internal error" (a ValueError), a Py4J error after the job ran, or a
second source silently ignored. The commands below fail before a SparkSession is built, so
these tests need pyspark importable but no JVM.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pyspark")

from typer.testing import CliRunner  # noqa: E402

from pipeline.exits import ExitCode, InputError  # noqa: E402
from pipeline.spark import backfill  # noqa: E402
from pipeline.spark.cli import app  # noqa: E402


def _backfill(tmp_path: Path, *extra: str) -> list[str]:
    jsonl = tmp_path / "logs.jsonl"
    jsonl.write_text("")
    return ["backfill", "--jsonl", str(jsonl), "--out", str(tmp_path / "out"), "--detectors", "rules", *extra]


@pytest.mark.parametrize(
    ("extra", "flag"),
    [
        (["--option", "novalue"], "--option"),
        (["--min-scores", "cyber_abuse=abc"], "--min-scores"),
        (["--min-scores", "bogus=0.5"], "--min-scores"),
        (["--min-scores", "cyber_abuse=5"], "--min-scores"),
        (["--min-scores", "cyber_abuse=-0.1"], "--min-scores"),
        (["--min-scores", "cyber_abuse=nan"], "--min-scores"),
        (["--conf", "nokeyvalue"], "--conf"),
    ],
)
def test_bad_backfill_option_is_a_usage_error_naming_it(tmp_path: Path, extra: list[str], flag: str) -> None:
    result = CliRunner().invoke(app, _backfill(tmp_path, *extra))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert flag in result.output
    assert not (tmp_path / "out").exists()


def test_bad_conf_of_aggregates_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["aggregates", "--lake", str(tmp_path), "--out", str(tmp_path / "out"), "--conf", "nokeyvalue"])
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "--conf" in result.output


def test_min_scores_are_scores_from_0_to_1() -> None:
    assert backfill.parse_min_scores("cyber_abuse=0,jailbreak=1") == {"cyber_abuse": 0.0, "jailbreak": 1.0}
    with pytest.raises(ValueError, match="from 0 to 1"):
        backfill.parse_min_scores("cyber_abuse=5")


@pytest.mark.parametrize("second", [["--lake", "somelake"], ["--kafka-topic", "logs"]])
def test_two_backfill_sources_are_refused(tmp_path: Path, second: list[str]) -> None:
    """--lake next to --jsonl was ignored; --kafka-topic next to it failed only after Spark started."""
    result = CliRunner().invoke(app, _backfill(tmp_path, *second))
    assert result.exit_code == ExitCode.USAGE, result.output
    assert "choose one source" in result.output and second[0] in result.output
    assert not (tmp_path / "out").exists()


def test_spark_submit_backfill_refuses_two_sources(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        backfill.main(["--jsonl", "a.jsonl", "--lake", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exited.value.code == ExitCode.USAGE and "choose one source" in capsys.readouterr().err


@pytest.mark.parametrize("job", ["aggregates", "all", "backfill"])
@pytest.mark.parametrize("overwrite", [[], ["--overwrite"]])
def test_out_that_is_a_file_is_refused_before_the_job(tmp_path: Path, job: str, overwrite: list[str]) -> None:
    """`spark aggregates --out good.jsonl` ran the job, then failed in Spark writing under a file."""
    a_file = tmp_path / "good.jsonl"
    a_file.write_text('{"keep": "me"}\n')
    args = _backfill(tmp_path)[:-4] if job == "backfill" else [job, "--lake", str(tmp_path)]
    result = CliRunner().invoke(app, [*args, "--out", str(a_file), *overwrite, "--master", "not-a-master"])
    assert isinstance(result.exception, InputError), result.output
    assert result.exception.code == ExitCode.INPUT and "is a file" in str(result.exception)
    assert a_file.read_text() == '{"keep": "me"}\n'


@pytest.mark.parametrize(("argv", "flag"), [(["--b-min-scores", "cyber_abuse=abc"], "--b-min-scores"),
                                            (["--a-option", "novalue"], "--a-option")])
def test_spark_submit_shadow_bad_values_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          argv: list[str], flag: str) -> None:
    from pipeline.spark import shadow

    with pytest.raises(SystemExit) as exit_info:
        shadow.main(["--jsonl", str(tmp_path / "logs.jsonl"), "--out", str(tmp_path / "out"), *argv])
    assert exit_info.value.code == ExitCode.USAGE and flag in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("job", ["aggregates", "offenders", "campaigns", "all"])
def test_a_lake_without_verdicts_is_refused_before_spark_starts(tmp_path: Path, job: str) -> None:
    """`spark aggregates --lake typo` started the JVM (seconds of Spark's log lines) before it said
    that the lake holds no verdicts. --master not-a-master would fail if a session were built."""
    (tmp_path / "verdicts" / "date=2026-12-01").mkdir(parents=True)  # a lake's folders, no files
    result = CliRunner().invoke(app, [job, "--lake", str(tmp_path), "--out", str(tmp_path / "out"), "--master", "not-a-master"])
    assert isinstance(result.exception, backfill.BackfillError), result.output
    assert str(result.exception) == f"no verdict files under {tmp_path / 'verdicts'}"
    assert not (tmp_path / "out").exists()
