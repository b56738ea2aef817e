"""Aggregates, offenders, campaigns, shadow and the report over simulated history."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from pyspark.sql import SparkSession
from typer import Typer
from typer.testing import CliRunner

from pipeline.lake import LakeWriter
from pipeline.cli import main
from pipeline.exits import ExitCode
from pipeline.report import report_command, screenshot
from pipeline.spark import aggregates, backfill, campaigns, offenders, shadow
from pipeline.spark.session import PROJECT_ROOT

from .conftest import SimulatedHistory, truth_labels, write_labels


@pytest.fixture(scope="module")
def lake_rows(history_lake: Path) -> list[dict]:
    return LakeWriter(history_lake).read().drop_columns(["log_json", "findings"]).to_pylist()


@pytest.fixture(scope="module")
def job_out(spark: SparkSession, history_lake: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """aggregates + offenders + campaigns written like `misuse-monitor spark all` does."""
    out = tmp_path_factory.mktemp("jobs")
    verdicts = backfill.read_lake_verdicts(spark, history_lake).cache()
    aggregates.write(aggregates.run(spark, verdicts), out)
    offenders.write(offenders.run(spark, verdicts, top=50), out)
    # The rules baseline does not flag the simulated campaign's phishing/misinformation
    # template, so campaigns are searched over every record here.
    campaigns.write(campaigns.run(spark, verdicts, flagged_only=False), out)
    return out


def test_aggregates_add_up_to_raw_counts(job_out: Path, lake_rows: list[dict], history: SimulatedHistory) -> None:
    agg = pq.read_table(job_out / "aggregates").to_pylist()
    totals = [r for r in agg if r["category"] == "all"]
    assert sum(r["records"] for r in totals) == len(lake_rows) == len(history.truths)
    assert sum(r["flagged"] for r in totals) == sum(r["flagged"] for r in lake_rows)

    raw: Counter = Counter()
    for row in lake_rows:
        group = (row["date"], row["tenant_id"], row["deployment"], row["model"])
        raw[(*group, "all")] += 1
        for category in row["categories"]:
            raw[(*group, category)] += 1
    assert {(r["date"], r["tenant_id"], r["deployment"], r["model"], r["category"]): r["records"] for r in agg} == dict(raw)

    for r in agg:
        assert sum(r[f"severity_{s}"] for s in ("none", "low", "medium", "high", "critical")) == r["records"]
        assert r["complied"] <= r["with_completion"] <= r["flagged"] <= r["records"]
        if r["category"] != "all":
            assert r["flagged"] == r["records"]  # a category row only holds flagged records
    severity = Counter(row["severity"] for row in lake_rows)
    assert {s: sum(r[f"severity_{s}"] for r in totals) for s in severity} == dict(severity)


def test_repeat_offenders_rank_above_one_off_and_benign_users(job_out: Path, lake_rows: list[dict], history: SimulatedHistory) -> None:
    ranked = {r["user_id"]: r for r in pq.read_table(job_out / "offenders").to_pylist()}
    flagged = Counter(row["user_id"] for row in lake_rows if row["flagged"])
    role_of = {history.pseudonym(t.user_id): t.role for t in history.truths.values()}
    repeaters = {u for u, n in flagged.items() if role_of.get(u) == "repeat_offender" and n >= 3}
    assert repeaters, "the simulation must hold repeat offenders that the detectors flag repeatedly"
    others = [r["rank"] for u, r in ranked.items() if role_of.get(u) in ("benign", "abuser") and flagged[u] <= 1]
    for user in repeaters:
        assert user in ranked and ranked[user]["rank"] < min(others)
        mine = [row for row in lake_rows if row["user_id"] == user and row["flagged"]]
        assert ranked[user]["flagged"] == len(mine)
        assert ranked[user]["categories"] == sorted({c for row in mine for c in row["categories"]})
        assert ranked[user]["models"] == sorted({row["model"] for row in mine})
    assert [r["rank"] for r in sorted(ranked.values(), key=lambda r: -r["risk"])] == list(range(1, len(ranked) + 1))


def test_simulated_campaign_is_found(job_out: Path, history: SimulatedHistory) -> None:
    found = pq.read_table(job_out / "campaigns").to_pylist()
    truth = defaultdict(set)
    for rid, t in history.truths.items():
        if t.campaign_id:
            truth[t.campaign_id].add(rid)
    assert len(truth) == 1
    (members,) = truth.values()
    top = found[0]  # campaigns come ordered by distinct users
    overlap = members & set(top["request_ids"])
    assert len(overlap) >= 0.9 * len(members) and len(overlap) >= 0.9 * len(top["request_ids"])
    sim_users = {history.pseudonym(history.truths[r].user_id) for r in members}
    assert top["users"] >= 8 and set(top["user_ids"]) <= sim_users
    assert top["representative_prompt"] and top["records"] == len(top["request_ids"])
    assert len(top["models"]) >= 2


def test_shadow_threshold_set_diff_and_precision_recall(
    spark: SparkSession, history: SimulatedHistory, history_lake: Path, tmp_path: Path
) -> None:
    raw = backfill.read_lake_logs(spark, history_lake).cache()
    spec_a = backfill.ScoringSpec.from_settings(history.settings)
    spec_b = backfill.ScoringSpec.from_settings(history.settings, min_scores={"cyber_abuse": 0.75, "other_harm": 0.75})
    a = backfill.verdict_rows(backfill.run(spark, raw, spec_a)).cache()
    b = backfill.verdict_rows(backfill.run(spark, raw, spec_b)).cache()
    labels = spark.read.json(str(write_labels(history, tmp_path / "labels.jsonl")))
    diff = shadow.run(spark, a, b, labels).collect()
    assert diff and {r["change"] for r in diff} <= {"removed", "severity", "categories"}
    assert all(r["label_misuse"] is not None for r in diff)

    m = {(r["scope"], r["variant"]): r for r in shadow.metrics(a, b, labels).collect()}
    labelled = len(truth_labels(history))
    misuse = sum(row["misuse"] for row in truth_labels(history))
    for variant in ("a", "b"):
        row = m[("any", variant)]
        assert row["tp"] + row["fp"] + row["fn"] + row["tn"] == labelled
        assert row["tp"] + row["fn"] == misuse
    assert m[("any", "b")]["recall"] <= m[("any", "a")]["recall"]
    assert m[("any", "a")]["precision"] > 0.5  # rules flag few benign records
    assert ("cyber_abuse", "a") in m


def test_shadow_job_json_summary(history_lake: Path, history: SimulatedHistory, tmp_path: Path, capsys) -> None:
    """The job file's --json (what `misuse-monitor spark shadow --json` passes on): outputs and metrics."""
    labels = write_labels(history, tmp_path / "labels.jsonl")
    argv = ["--master", "local[1]", "--a-lake", str(history_lake), "--b-lake", str(history_lake),
            "--labels", str(labels), "--out", str(tmp_path / "out"), "--json"]
    assert shadow.main(argv) == 0
    doc = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert doc["outputs"] == {"shadow": str(tmp_path / "out" / "shadow")}
    any_a = next(r for r in doc["metrics"] if r["scope"] == "any" and r["variant"] == "a")
    assert any_a["tp"] + any_a["fp"] + any_a["fn"] + any_a["tn"] == len(truth_labels(history))


def test_report_is_self_contained_html(job_out: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    app = Typer()
    app.command()(report_command)
    target = tmp_path / "report.html"
    result = CliRunner().invoke(app, [str(job_out), "-o", str(target)])
    assert result.exit_code == 0, result.output
    html = target.read_text()
    assert len(re.findall(r'<img alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]{200,}">', html)) == 4
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no external assets
    top_campaign = pq.read_table(job_out / "campaigns").to_pylist()[0]
    assert top_campaign["campaign_id"] in html
    top_user = pq.read_table(job_out / "offenders").to_pylist()[0]["user_id"]
    assert top_user in html
    assert "<script" not in html

    code = main(["report", str(tmp_path), "-o", str(tmp_path / "none.html")])
    assert code == ExitCode.INPUT and "no job output" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.timeout(1500)  # first user of the shared Spark fixtures pays for them; the report loads Presidio
def test_report_with_lake_labels_and_a_real_browser(
    job_out: Path, history_lake: Path, history: SimulatedHistory, lake_rows: list[dict], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Accuracy against the simulator's truth, volumes per tenant/deployment/model, detector
    versions, partial days, dominant-category offenders; then Chromium renders the page."""
    target = tmp_path / "report.html"
    code = main(["report", str(job_out), "--lake", str(history_lake), "--labels", str(history.truth_file), "-o", str(target)])
    assert code == 0, capsys.readouterr().err
    html = target.read_text()
    for heading in ("Volumes and flag rates", "Accuracy against labels", "Dead letters", "Alerts", "Detector and model versions"):
        assert f"<h2>{heading}</h2>" in html
    assert f"{len(history.truths)} labelled records have a verdict" in html
    tenants = {r["tenant_id"] for r in lake_rows if r["tenant_id"]}
    assert tenants and all(f"<td>{t}</td>" in html for t in tenants)
    assert re.search(r"<td>rules</td><td>[^<]+</td>", html)  # the detector that scored the history, with its version
    # SIM_END is midnight, so the first day (SIM_END - 4 days) starts at 00:00 and the last ends at 24:00:
    # no partial day; the backfill's two invalid lines are dead letters of reason invalid_json/unsupported.
    assert "Partial days" not in html
    assert re.search(r"<td>invalid_json</td><td class=\"num\">1</td>", html)
    top = pq.read_table(job_out / "offenders").to_pylist()[0]
    assert top["dominant_category"] in top["categories"]
    assert f"<b>{top['dominant_category']}</b>" in html

    if shutil.which("chromium") is None:
        pytest.skip("headless Chromium is not installed (Debian package chromium; `make system-deps` installs it)")
    png = screenshot(target, tmp_path / "report.png", height=2400)
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == (1200, 2400)
        colours = img.convert("RGB").resize((120, 240)).getcolors(maxcolors=120 * 240)
    assert colours is not None and len(colours) > 50  # charts and tables, not a blank or error page


@pytest.mark.slow
def test_spark_submit_runs_the_backfill(history: SimulatedHistory, tmp_path: Path) -> None:
    """`spark-submit pipeline/spark/backfill.py`: the job file re-imports itself through the
    package so the scoring function is shipped by reference (and reuses the worker cache)."""
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run(
        [str(spark_submit), "--master", "local[2]", "--driver-memory", "512m",
         str(PROJECT_ROOT / "pipeline/spark/backfill.py"), "--master", "local[2]",
         "--jsonl", str(history.jsonl), "--out", str(tmp_path), "--detectors", "rules"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{len(history.truths)} verdicts" in proc.stdout and "2 dead letters" in proc.stdout
    assert LakeWriter(tmp_path).read().num_rows == len(history.truths)


def test_cli_backfill_and_all(history: SimulatedHistory, tmp_path: Path) -> None:
    """`misuse-monitor spark backfill` then `spark all`: the commands a user types."""
    from pipeline.spark.cli import app

    lake = tmp_path / "lake"
    result = CliRunner().invoke(
        app, ["backfill", "--jsonl", str(history.jsonl), "--out", str(lake), "--detectors", "rules", "--master", "local[2]"]
    )
    assert result.exit_code == 0, result.output
    assert f"{len(history.truths)} verdicts" in result.output and "2 dead letters" in result.output
    first_run = LakeWriter(lake).read().sort_by("source_offset")
    # A second run into the same, now non-empty, --out is refused without --overwrite ...
    again = ["backfill", "--jsonl", str(history.jsonl), "--out", str(lake), "--detectors", "rules", "--max-rows-per-file", "400"]
    refused = CliRunner().invoke(app, again)
    assert refused.exit_code != 0 and "--overwrite" in str(refused.exception)
    assert LakeWriter(lake).read().sort_by("source_offset").equals(first_run)
    # ... and with it replaces its files: nothing duplicated, nothing lost.
    result = CliRunner().invoke(app, [*again, "--overwrite", "--json"])
    assert result.exit_code == 0, result.output
    assert LakeWriter(lake).read().sort_by("source_offset").equals(first_run)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["job"] == "backfill" and summary["verdicts"] == len(history.truths) and summary["dead_letters"] == 2
    assert pq.read_table(lake / "dead_letters").num_rows == 2
    result = CliRunner().invoke(app, ["all", "--lake", str(lake), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"aggregates", "offenders", "campaigns"}
    written = json.loads(result.stdout.strip().splitlines()[-1])["outputs"]
    assert written == {name: str(tmp_path / "out" / name) for name in ("aggregates", "offenders", "campaigns")}
    refused = CliRunner().invoke(app, ["aggregates", "--lake", str(lake), "--out", str(tmp_path / "out")])
    assert refused.exit_code != 0 and "aggregates is not empty" in str(refused.exception)
