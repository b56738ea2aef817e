"""Report pieces that need no Spark: partial days, daily ticks, dominant-category colours,
volumes per tenant/deployment/model, detector versions (the full page is rendered from real
job output, and screenshotted, in tests/integration/spark/test_jobs.py)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from pipeline import report  # noqa: E402
from pipeline.cli import main  # noqa: E402


def _lake(timestamps: list[str]) -> pd.DataFrame:
    n = len(timestamps)
    return pd.DataFrame({
        "timestamp": pd.to_datetime(timestamps, utc=True),
        "tenant_id": (["acme", "globex", None] * n)[:n],
        "deployment": ["chat"] * n,
        "model": (["qwen3-32b", "llama"] * n)[:n],
        "flagged": ([True, False, False] * n)[:n],
        "categories": ([["jailbreak"], [], []] * n)[:n],
        "findings": ([[{"detector": "transformer", "detector_version": "1.0.0"}], [], []] * n)[:n],
    })


def test_partial_first_and_last_day_are_named() -> None:
    lake = _lake(["2026-11-01T14:05:00Z", "2026-11-02T12:00:00Z", "2026-11-03T09:10:00Z"])
    assert report.partial_days(lake) == {"2026-11-01": "from 14:05 UTC", "2026-11-03": "until 09:10 UTC"}
    full = _lake(["2026-11-01T00:10:00Z", "2026-11-02T23:30:00Z"])
    assert report.partial_days(full) == {}


def test_daily_ticks_over_three_days() -> None:
    agg = pd.DataFrame({
        "date": ["2026-11-01", "2026-11-02", "2026-11-03"] * 2,
        "category": ["all"] * 3 + ["jailbreak"] * 3,
        "records": [40, 100, 90, 4, 6, 5],
        "flagged": [4, 6, 5, 4, 6, 5],
    })
    fig = report.trend_figure(agg, {"2026-11-01": "from 14:05 UTC"})
    left, _ = fig.axes
    fig.canvas.draw()
    labels = [t.get_text() for t in left.get_xticklabels() if t.get_text()]
    assert labels == ["Nov 01", "Nov 02", "Nov 03"]  # one tick per day, not every six hours
    assert "partial" in left.get_title()


def test_offender_colour_is_the_dominant_category() -> None:
    assert report.dominant_category({"dominant_category": "misinformation", "categories": ["cyber_abuse", "misinformation"]}) == "misinformation"
    # old job output without the column: only an unambiguous single category is used
    assert report.dominant_category({"categories": ["cyber_abuse"]}) == "cyber_abuse"
    assert report.dominant_category({"categories": ["cyber_abuse", "jailbreak"]}) is None


def test_volumes_and_versions_from_the_lake() -> None:
    lake = _lake(["2026-11-01T10:00:00Z"] * 6)
    volumes = report.volume_tables(pd.DataFrame(), lake)
    by_tenant = {v["name"]: v for v in volumes["tenant_id"]}
    assert by_tenant["acme"] == {"name": "acme", "records": 2, "flagged": 2, "rate": 1.0}
    assert by_tenant["(none)"]["records"] == 2 and by_tenant["globex"]["rate"] == 0.0
    assert {v["name"] for v in volumes["model"]} == {"qwen3-32b", "llama"}
    assert report.detector_versions(lake) == [{"detector": "transformer", "version": "1.0.0", "findings": 2}]


def test_versions_of_findings_without_a_detector_or_version_are_unknown_not_an_error() -> None:
    """A hostile review (2026-12-07): a lake whose findings lack `detector_version` (an older or
    another writer) was KeyError, and a null one beside a named one TypeError in the sort."""
    lake = pd.DataFrame({"findings": [
        [{"detector": "rules", "category": "cyber_abuse"}],
        [{"detector": None, "detector_version": None}, {"detector": "transformer", "detector_version": "2.0"}],
        None,
    ]})  # fmt: skip
    assert report.detector_versions(lake) == [
        {"detector": "(unknown)", "version": "(unknown)", "findings": 1},
        {"detector": "rules", "version": "(unknown)", "findings": 1},
        {"detector": "transformer", "version": "2.0", "findings": 1},
    ]


def _aggregates_output(out: Path) -> Path:
    """``<out>/aggregates`` with the columns of pipeline/spark/aggregates.py (two days, one group)."""
    rows = []
    for date, records, jailbreak in (("2026-11-01", 40, 4), ("2026-11-02", 100, 6)):
        group = {"date": date, "tenant_id": "acme", "deployment": "chat", "model": "qwen3-32b"}
        for category, n, flagged in (("all", records, jailbreak), ("jailbreak", jailbreak, jailbreak)):
            rows.append({**group, "category": category, "records": n, "flagged": flagged,
                         "flagged_share": flagged / records, "severity_none": n - flagged, "severity_low": 0,
                         "severity_medium": 0, "severity_high": flagged, "severity_critical": 0,
                         "with_completion": 0, "complied": 0, "complied_share": None})
    (out / "aggregates").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(out / "aggregates" / "part-00000.parquet", index=False)
    return out


def test_report_dash_writes_the_page_to_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`report -o -`: the same self-contained page as `-o file`, on stdout and nothing else there
    (plots are embedded, so no side file needs a place); no file named '-' appears."""
    jobs = _aggregates_output(tmp_path / "jobs")
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(jobs), "-o", str(tmp_path / "report.html")]) == 0
    out, _ = capsys.readouterr()
    assert out.strip() == f"report -> {tmp_path / 'report.html'}"
    assert main(["report", str(jobs), "-o", "-"]) == 0
    out, err = capsys.readouterr()
    assert out == (tmp_path / "report.html").read_text(encoding="utf-8")
    assert out.startswith("<!DOCTYPE html>") and out.rstrip().endswith("</html>")
    assert "data:image/png;base64," in out and "report ->" not in out + err
    assert not (tmp_path / "-").exists()


def test_an_alert_database_emptied_by_retention_is_not_reported_as_no_alerts_fired(tmp_path: Path) -> None:
    """A hostile review (2026-12-06): resolved alerts leave the alert database minutes after
    they end, and the page then said "No alerts fired." of a period in which alerts had fired.
    The page now says what the database holds and where every fired alert is counted."""
    from pipeline.alerts.state import create_db_engine

    url = f"sqlite:///{tmp_path / 'alerts.db'}"
    create_db_engine(url).dispose()  # the alert tables, every row gone
    jobs = _aggregates_output(tmp_path / "jobs")
    html = report.build_report(jobs, tmp_path / "r.html", alerts_db=url).read_text(encoding="utf-8")
    section = html.split("<h2>Alerts</h2>", 1)[1].split("<h2>", 1)[0]
    assert "No alerts fired" not in section
    assert "No alert is firing or recently resolved." in section and "mm_alerts_fired_total" in section


def _with(out: Path, column: str, values: list) -> Path:
    """``_aggregates_output`` with one column's values replaced (4 rows)."""
    jobs = _aggregates_output(out)
    frame = pd.read_parquet(jobs / "aggregates")
    frame[column] = values
    frame.to_parquet(jobs / "aggregates" / "part-00000.parquet", index=False)
    return jobs


@pytest.mark.parametrize(
    ("column", "values", "why"),
    [
        ("records", [float("inf")] + [40.0] * 3, "not a finite number"),
        ("severity_high", [1e300] * 4, "over"),
        ("records", [-40] * 4, "negative"),
        ("records", [2**63 - 1] * 4, "over"),
        ("date", ["9999-12-31", "2026-11-02"] * 2, "outside"),
        ("date", ["0001-01-01", "2026-11-02"] * 2, "outside"),
    ],
    ids=["infinity", "1e300", "negative", "int64-max", "year-9999", "year-1"],
)
def test_counts_and_dates_the_page_cannot_show_are_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                  column: str, values: list, why: str) -> None:
    """A hostile review (2026-12-07): an infinity, 1e300 or a date in year 9999 ended in
    "internal error" (exit 1); a negative count or int64 counts whose sum wrapped gave a page
    with -80 records and a -400% flagged share (exit 0). Now exit 4 naming the column."""
    jobs = _with(tmp_path / "jobs", column, values)
    code = main(["report", str(jobs), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 4 and column in err and why in err, err
    assert not (tmp_path / "r.html").exists()


def test_the_page_never_replaces_an_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `-o` onto a job output file or the --labels file replaced
    it with the page (exit 0); the next run failed on it. Beside the job folders is fine."""
    jobs = _aggregates_output(tmp_path / "jobs")
    part = jobs / "aggregates" / "part-00000.parquet"
    before = part.read_bytes()
    assert main(["report", str(jobs), "-o", str(part)]) == 2
    assert part.read_bytes() == before and "input of this report" in capsys.readouterr().err
    assert main(["report", str(jobs), "-o", str(jobs / "report.html")]) == 0


def test_user_ids_that_are_not_pseudonyms_are_hidden(tmp_path: Path) -> None:
    """A hostile review (2026-12-07): an offenders output with raw user ids (a lake written
    without pseudonyms, or by another tool) showed e-mail addresses under "user (pseudonymised)"."""
    jobs = tmp_path / "jobs"
    (jobs / "offenders").mkdir(parents=True)
    pd.DataFrame({"rank": [1, 2], "user_id": ["john.doe@example.com", "u_0123456789abcdef0123"], "risk": [9.0, 3.0],
                  "flagged": [3, 1], "records": [4, 2]}).to_parquet(jobs / "offenders" / "part-0.parquet", index=False)
    html = report.build_report(jobs, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "john.doe" not in html and "u_0123456789abcdef0123" in html and "(not a pseudonym, hidden) #1" in html


def test_a_model_name_of_twenty_thousand_characters_gives_a_readable_plot(tmp_path: Path) -> None:
    """A hostile review (2026-12-07): the name was the tick label as it was, and the model-mix
    plot came out 240,959 pixels wide. Tick labels are cut to MAX_LABEL characters."""
    import base64
    import io
    import re

    from PIL import Image

    jobs = _with(tmp_path / "jobs", "model", ["m" * 20_000] * 2 + ["qwen3-32b"] * 2)
    html = report.build_report(jobs, tmp_path / "r.html").read_text(encoding="utf-8")
    widths = [Image.open(io.BytesIO(base64.b64decode(png))).size[0] for png in re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)]
    assert widths and max(widths) < 3000, widths


@pytest.mark.parametrize(
    ("column", "value", "why"),
    [("timestamp", "garbage", "not a timestamp"), ("findings", ["x"], "not a list of findings"), ("flagged", None, "true/false"),
     ("categories", 5, "not a list of text")],
    ids=["text-timestamp", "findings-of-strings", "null-flagged", "int-categories"],
)
def test_a_lake_of_other_types_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], column: str, value, why: str) -> None:  # noqa: ANN001
    """A hostile review (2026-12-07): lake files of another writer (text timestamps, findings as
    a list of strings, an empty flagged) ended in "internal error" deep in a plot (exit 1)."""
    jobs = _aggregates_output(tmp_path / "jobs")
    lake = _lake(["2026-11-01T10:00:00Z"] * 3).assign(request_id=["a", "b", "c"], date="2026-11-01")
    (tmp_path / "lake" / "verdicts" / "date=2026-11-01").mkdir(parents=True)
    lake.to_parquet(tmp_path / "lake" / "verdicts" / "date=2026-11-01" / "ok.parquet", index=False)
    assert main(["report", str(jobs), "--lake", str(tmp_path / "lake"), "-o", str(tmp_path / "ok.html")]) == 0
    bad = lake.astype({column: object})
    bad[column] = [value] * len(bad)
    bad.to_parquet(tmp_path / "lake" / "verdicts" / "date=2026-11-01" / "ok.parquet", index=False)
    capsys.readouterr()
    code = main(["report", str(jobs), "--lake", str(tmp_path / "lake"), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 4 and column in err and why in err, err


def test_dead_letter_reasons_are_listed_fifty_at_most() -> None:
    """A hostile review (2026-12-07): the reason is a header whoever may produce to the
    dead-letter topic sets; 100,000 distinct reasons made a 4.6 MB page."""
    dead = pd.DataFrame({"error_reason": ["common"] * 5 + [f"r{i:06d}" + "x" * 500 for i in range(100_000)]})
    counts = report.dead_letter_counts(dead)
    assert len(counts) == report.TOP_LISTED + 1
    assert counts[0] == ("common", 5) and counts[-1] == ("(99,951 other reasons)", 99_951)
    assert max(len(reason) for reason, _ in counts) <= 200


def test_offenders_whose_categories_are_not_lists_of_names_are_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A hostile review (2026-12-07): `categories` as numbers was a TypeError in the template (exit 1)."""
    jobs = tmp_path / "jobs"
    (jobs / "offenders").mkdir(parents=True)
    pd.DataFrame({"rank": [1], "user_id": ["u_" + "1" * 20], "risk": [3.0], "categories": [5]}).to_parquet(
        jobs / "offenders" / "part-0.parquet", index=False)
    code = main(["report", str(jobs), "-o", str(tmp_path / "r.html")])
    err = capsys.readouterr().err
    assert code == 4 and "categories" in err and "lists of text" in err, err


def test_job_outputs_with_no_rows_are_a_page_that_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Aggregates of an empty lake and a campaigns table with no campaign: the jobs ran and found
    nothing. The report said "no job output" (exit 4), as if they had not run; with an empty lake
    given, the page said "No lake given"."""
    jobs = _aggregates_output(tmp_path / "jobs")
    agg = pd.read_parquet(jobs / "aggregates")
    agg.iloc[:0].to_parquet(jobs / "aggregates" / "part-00000.parquet", index=False)
    (jobs / "campaigns").mkdir()
    pd.DataFrame({"campaign_id": pd.Series(dtype=str), "records": pd.Series(dtype="int64")}).to_parquet(
        jobs / "campaigns" / "part-00000.parquet", index=False)
    lake = _lake(["2026-11-01T10:00:00Z"]).assign(request_id=["a"], date="2026-11-01").iloc[:0]
    (tmp_path / "lake" / "verdicts" / "date=2026-11-01").mkdir(parents=True)
    lake.to_parquet(tmp_path / "lake" / "verdicts" / "date=2026-11-01" / "empty.parquet", index=False)
    page = tmp_path / "r.html"
    assert main(["report", str(jobs), "--lake", str(tmp_path / "lake"), "-o", str(page)]) == 0, capsys.readouterr().err
    html = page.read_text()
    assert "These job outputs hold no rows: aggregates/, campaigns/." in html
    assert "records<b>0</b>" in html and "The aggregates hold no rows." in html
    assert "No aggregates found" not in html and "No lake given" not in html

    # Folders without any Parquet file are still "no job output".
    for folder in ("aggregates", "campaigns"):
        for part in (jobs / folder).iterdir():
            part.unlink()
    assert main(["report", str(jobs), "-o", str(tmp_path / "none.html")]) == 4
    assert "no job output" in capsys.readouterr().err


def test_shadow_changes_are_listed_fifty_at_most(tmp_path: Path) -> None:
    """The `change` column is text whoever writes shadow/diff sets; every distinct value was a
    line of the page, however many."""
    changes = ["newly_flagged"] * 3 + [f"c{i:05d}" for i in range(10_000)]
    html = report.render(report.ReportInputs(shadow_diff=pd.DataFrame({"change": changes})))
    assert "newly_flagged 3" in html and "(9,951 other changes) 9951" in html
    assert html.count(" 1, ") < 60


def test_a_lake_given_as_the_job_output_folder_says_what_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A newcomer review (2026-12-07): `report LAKE` said only "no job output"."""
    (tmp_path / "lake" / "verdicts" / "date=2026-11-01").mkdir(parents=True)
    assert main(["report", str(tmp_path / "lake"), "-o", str(tmp_path / "r.html")]) == 4
    err = capsys.readouterr().err
    assert "no job output" in err and f"spark all --lake {tmp_path / 'lake'} --out JOBS" in err, err
