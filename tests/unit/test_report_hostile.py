"""Hostile review of `report`, the labels/verdicts readers of `evaluate`, and `simulate`: inputs
an attacker or a careless newcomer gives them, each with the exit code README's table promises
(1 is only for bugs)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("matplotlib")

from pipeline.cli import main  # noqa: E402
from pipeline.exits import ExitCode  # noqa: E402
from tests.fixtures.corpora import needs_corpora  # noqa: E402

SCRIPT = "<script>alert(1)</script>"


def _aggregates(out: Path, tenant: str = "acme", model: str = "qwen3-32b", category: str = "jailbreak") -> None:
    rows = []
    for cat, n, flagged in (("all", 10, 2), (category, 2, 2)):
        rows.append({"date": "2026-11-01", "tenant_id": tenant, "deployment": "chat", "model": model,
                     "category": cat, "records": n, "flagged": flagged, "flagged_share": flagged / n,
                     "severity_none": n - flagged, "severity_low": 0, "severity_medium": 0,
                     "severity_high": flagged, "severity_critical": 0})
    (out / "aggregates").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(out / "aggregates" / "part-00000.parquet", index=False)


def _parquet(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / "part-00000.parquet", index=False)


# ----------------------------------------------------------------------------------- report


U1, U2 = "u_" + "1" * 20, "u_" + "2" * 20  # pseudonyms: other ids are hidden on the page


def test_report_with_null_list_columns_is_a_page_not_an_internal_error(tmp_path: Path) -> None:
    """Offenders and campaigns whose list columns are null (outputs of other writers, or a user
    without flagged models) were a TypeError in the template: exit 1, no page."""
    jobs = tmp_path / "jobs"
    _aggregates(jobs)
    _parquet(jobs / "offenders", [
        {"rank": 1, "user_id": U1, "risk": 3.0, "records": 3, "flagged": 2, "max_severity": "high",
         "categories": None, "models": None, "last_flagged_at": None},
        {"rank": 2, "user_id": U2, "risk": 1.0, "records": 3, "flagged": 1, "max_severity": "low",
         "categories": ["jailbreak"], "models": ["m"], "last_flagged_at": None},
    ])
    _parquet(jobs / "campaigns", [
        {"campaign_id": "c1", "records": 3, "users": 2, "models": None, "categories": None,
         "first_seen": "2026-11-01", "last_seen": "2026-11-01", "representative_prompt": "hi"},
    ])
    page = tmp_path / "r.html"
    assert main(["report", str(jobs), "-o", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert U1 in html and U2 in html and "c1" in html
    assert ">None<" not in html  # a missing time is blank, not Python's None


def test_report_escapes_attacker_controlled_strings(tmp_path: Path) -> None:
    """Tenant, model, category, user, campaign and prompt text reach the page as text: no
    element, script or javascript: link comes from the data (the page has no script of its own)."""
    jobs = tmp_path / "jobs"
    _aggregates(jobs, tenant=SCRIPT, model='"><img src=x onerror=alert(1)>', category=SCRIPT)
    _parquet(jobs / "offenders", [
        {"rank": 1, "user_id": SCRIPT, "risk": 3.0, "records": 3, "flagged": 2, "max_severity": SCRIPT,
         "categories": [SCRIPT], "models": [SCRIPT], "last_flagged_at": SCRIPT, "dominant_category": SCRIPT},
    ])
    _parquet(jobs / "campaigns", [
        {"campaign_id": SCRIPT, "records": 3, "users": 2, "models": [SCRIPT], "categories": [SCRIPT],
         "first_seen": SCRIPT, "last_seen": SCRIPT, "representative_prompt": f"{SCRIPT} javascript:alert(1)"},
    ])
    page = tmp_path / "r.html"
    assert main(["report", str(jobs), "-o", str(page), "--title", SCRIPT]) == 0
    html = page.read_text(encoding="utf-8")
    assert "<script" not in html.lower() and "<img src=x" not in html.lower()
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert 'href="javascript:' not in html.lower()


# ----------------------------------------------------------------------------------- labels


def _verdicts(path: Path, flagged: object = True) -> Path:
    path.write_text(json.dumps({"schema": "misuse-verdict/v1", "request_id": "r0", "flagged": flagged,
                                "categories": ["jailbreak"] if flagged is True else []}) + "\n", encoding="utf-8")
    return path


def test_labels_with_a_byte_order_mark_and_crlf_are_read(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A labels file saved by a Windows editor (BOM, CRLF) was "not a label line" on line 1 (exit 4);
    classify ignores the BOM (RFC 8259), so the labels read the same way."""
    labels = tmp_path / "labels.jsonl"
    labels.write_bytes(b'\xef\xbb\xbf{"request_id":"r0","misuse":true,"categories":["jailbreak"]}\r\n'
                       b'{"request_id":"r1","misuse":false}\r\n')
    verdicts = tmp_path / "v.jsonl"
    verdicts.write_bytes(b"\xef\xbb\xbf" + _verdicts(tmp_path / "plain.jsonl").read_bytes())
    assert main(["evaluate", "--labels", str(labels), "--verdicts", str(verdicts), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    overall = next(s for s in result["scopes"] if s["scope"] == "any")
    assert result["matched"] == 1 and result["unmatched_labels"] == 1
    assert overall["tp"] == 1 and overall["recall"] == 1.0


@pytest.mark.parametrize("flagged", ["false", 0, "no"])
def test_verdict_flagged_that_is_not_a_boolean_is_refused(tmp_path: Path, flagged: object,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """bool("false") is True: a verdicts file with "flagged": "false" counted the record as flagged
    and gave precision 1.0 on a benign set; now it is an input error naming the value."""
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"request_id":"r0","misuse":false}\n', encoding="utf-8")
    code = main(["evaluate", "--labels", str(labels), "--verdicts", str(_verdicts(tmp_path / "v.jsonl", flagged)), "--json"])
    out, err = capsys.readouterr()
    assert code == ExitCode.INPUT, out
    assert "'flagged'" in err and repr(flagged) in err


# ----------------------------------------------------------------------------------- simulate


@pytest.mark.parametrize("days", ["0", "inf", "1e9", "25000"])
def test_simulate_days_out_of_range_is_a_usage_error(tmp_path: Path, days: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """--days 0 / inf / 1e9 were internal errors (ValueError, OverflowError: exit 1); --days 25000
    dated records before 1970, which inference-log/v1 refuses (exit 4 half-way through)."""
    out = tmp_path / "s.jsonl"
    assert main(["simulate", "-o", str(out), "--records", "3", "--days", days]) == ExitCode.USAGE
    assert "--days" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("option", ["-o", "--truth"])
def test_simulate_to_a_directory_is_a_usage_error_and_writes_nothing(tmp_path: Path, option: str,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """`-o DIR` / `--truth DIR` were exit 4 ("input"), and `--truth DIR` left an emptied --output file."""
    folder = tmp_path / "dir"
    folder.mkdir()
    out = tmp_path / "s.jsonl"
    args = ["-o", str(folder)] if option == "-o" else ["-o", str(out), "--truth", str(folder)]
    assert main(["simulate", *args, "--records", "3"]) == ExitCode.USAGE
    assert "is a directory" in capsys.readouterr().err
    assert not out.exists() and list(folder.iterdir()) == []


def test_report_output_that_is_a_directory_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`report jobs -o DIR` was "Is a directory" after every input was read: exit 4, the code of
    an unreadable input."""
    jobs = tmp_path / "jobs"
    _aggregates(jobs)
    folder = tmp_path / "site"
    folder.mkdir()
    assert main(["report", str(jobs), "-o", str(folder)]) == ExitCode.USAGE
    assert "--output" in capsys.readouterr().err and list(folder.iterdir()) == []


@pytest.mark.parametrize("kind", ["aggregates", "not-parquet"])
def test_verdicts_folder_that_is_not_a_lake_is_an_input_error(tmp_path: Path, kind: str,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`evaluate --verdicts jobs/aggregates` (another job's Parquet) or a damaged file was
    "internal error: ArrowInvalid" (exit 1); README: such input is exit 4."""
    folder = tmp_path / "verdicts"
    if kind == "aggregates":
        _aggregates(tmp_path)
        folder = tmp_path / "aggregates"
    else:
        folder.mkdir()
        (folder / "part-0.parquet").write_text("not parquet")
    labels = tmp_path / "labels.jsonl"
    labels.write_text('{"request_id":"r0","misuse":true}\n', encoding="utf-8")
    assert main(["evaluate", "--labels", str(labels), "--verdicts", str(folder)]) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "not a verdict lake" in err and "internal error" not in err


def test_shadow_metrics_without_its_columns_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A shadow/metrics folder holding other Parquet was "internal error: UndefinedError: 'dict
    object' has no attribute 'precision'" (exit 1); README: a job output lacking a column is 4."""
    jobs = tmp_path / "jobs"
    _parquet(jobs / "shadow" / "metrics", [{"scope": "any", "variant": "A", "tp": 1}])
    assert main(["report", str(jobs), "-o", str(tmp_path / "r.html")]) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert "shadow/metrics" in err and "precision" in err and "internal error" not in err


def test_shadow_metrics_with_nan_and_null_scores_render(tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    _parquet(jobs / "shadow" / "metrics", [{"scope": "any", "variant": "A", "tp": 1, "fp": 0, "fn": 0, "tn": 1,
                                             "precision": float("nan"), "recall": None}])
    page = tmp_path / "r.html"
    assert main(["report", str(jobs), "-o", str(page)]) == 0
    assert "n/a" in page.read_text(encoding="utf-8")


@pytest.mark.parametrize("name", ["a$\\frac$b", "$^$", "x$\\undefinedcmd{$y"])
def test_names_with_dollar_signs_do_not_break_the_plots(tmp_path: Path, name: str) -> None:
    """A model, tenant, user or campaign named like matplotlib mathtext (``$^$``) was a ValueError
    while drawing: one client-set name ended the whole report with exit 1."""
    jobs = tmp_path / "jobs"
    _aggregates(jobs, tenant=name, model=name)
    _parquet(jobs / "offenders", [{"rank": 1, "user_id": name, "risk": 3.0, "records": 3, "flagged": 2,
                                   "max_severity": "high", "categories": ["jailbreak"], "models": [name]}])
    _parquet(jobs / "campaigns", [{"campaign_id": name, "records": 3, "users": 2, "models": [name],
                                   "categories": ["jailbreak"], "representative_prompt": "x"}])
    page = tmp_path / "r.html"
    assert main(["report", str(jobs), "-o", str(page)]) == 0
    html = page.read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 4  # trend, mix, offenders, campaigns


@pytest.mark.parametrize("option", ["-o", "--truth"])
def test_simulate_into_a_folder_that_is_a_file_is_a_usage_error(tmp_path: Path, option: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """`-o notes.txt/out.jsonl` was "internal error: FileExistsError" (exit 1)."""
    blocker = tmp_path / "notes.txt"
    blocker.write_text("keep")
    out = tmp_path / "s.jsonl"
    target = blocker / "deeper" / "x.jsonl"
    args = ["-o", str(target)] if option == "-o" else ["-o", str(out), "--truth", str(target)]
    assert main(["simulate", *args, "--records", "3"]) == ExitCode.USAGE
    assert "is a file" in capsys.readouterr().err
    assert blocker.read_text() == "keep" and not out.exists()


@needs_corpora
def test_simulate_creates_the_truth_folder_as_it_does_the_output_folder(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """-o's missing folders were created, --truth's were not: exit 4 after -o had been emptied."""
    out, truth = tmp_path / "a" / "s.jsonl", tmp_path / "b" / "c" / "truth.jsonl"
    assert main(["simulate", "-o", str(out), "--truth", str(truth), "--records", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 3
    assert len(out.read_text().splitlines()) == len(truth.read_text().splitlines()) == 3


def test_report_replaces_the_page_whole(tmp_path: Path) -> None:
    """`report -o` wrote the page in place: a killed run left a truncated page that looked like a
    report. It is now written beside it and renamed (pipeline/stdio.py open_output)."""
    jobs = tmp_path / "jobs"
    _aggregates(jobs)
    page = tmp_path / "r.html"
    page.write_text("the previous page", encoding="utf-8")
    page.chmod(0o640)
    before = page.stat().st_ino
    assert main(["report", str(jobs), "-o", str(page)]) == 0
    assert page.stat().st_ino != before, "written in place, not replaced"
    assert page.stat().st_mode & 0o777 == 0o640
    assert page.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobs", "r.html"]


def test_a_record_dated_decades_ago_does_not_make_a_tick_per_day(tmp_path: Path) -> None:
    """A lake date is its sender's timestamp (1970-2200). Aggregates over 1970-01-01 and
    2026-11-01 made one tick a day (20,000) and a report of 146 s (a hostile review, 2026-12-06)."""
    from pipeline.report import MAX_DAILY_TICKS, trend_figure

    rows = []
    for day in ("1970-01-01", "2026-11-01"):
        rows.append({"date": day, "tenant_id": "acme", "deployment": "chat", "model": "m", "category": "all",
                     "records": 10, "flagged": 2, "flagged_share": 0.2, "severity_none": 8, "severity_low": 0,
                     "severity_medium": 0, "severity_high": 2, "severity_critical": 0})
    fig = trend_figure(pd.DataFrame(rows))
    for ax in fig.axes:
        assert len(ax.xaxis.get_major_locator()()) <= MAX_DAILY_TICKS + 2


def test_a_new_report_page_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    """The page holds representative prompts (docs/spark.md: treat it like the lake); it was
    written with the umask's mode, 0644 on most hosts (a hostile review, 2026-12-06)."""
    import os
    import stat

    jobs = tmp_path / "jobs"
    _aggregates(jobs)
    old = os.umask(0o022)
    try:
        assert main(["report", str(jobs), "-o", str(tmp_path / "r.html")]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o600
    os.chmod(tmp_path / "r.html", 0o640)  # an operator's choice survives the next run
    assert main(["report", str(jobs), "-o", str(tmp_path / "r.html")]) == 0
    assert stat.S_IMODE((tmp_path / "r.html").stat().st_mode) == 0o640


def test_many_tenants_and_models_are_summed_past_the_top_ones(tmp_path: Path) -> None:
    """Tenants and models are the client's to name: 20,000 tenants made a page of 20,005 table
    rows, and 20,000 models a mix plot that ran for minutes (a hostile review, 2026-12-06)."""
    from pipeline.report import TOP_MIX_MODELS, TOP_VOLUMES, mix_figure, volume_tables

    rows = []
    for i in range(300):
        for cat, n, flagged in (("all", 10 + i, 2), ("jailbreak", 2, 2)):
            rows.append({"date": "2026-11-01", "tenant_id": f"t{i}", "deployment": "chat", "model": f"m{i}",
                         "category": cat, "records": n, "flagged": flagged, "flagged_share": flagged / n,
                         "severity_none": n - flagged, "severity_low": 0, "severity_medium": 0,
                         "severity_high": flagged, "severity_critical": 0})
    agg = pd.DataFrame(rows)
    tables = volume_tables(agg, pd.DataFrame())
    for key in ("tenant_id", "model"):
        assert len(tables[key]) == TOP_VOLUMES + 1 and tables[key][-1]["name"] == f"({300 - TOP_VOLUMES} more)"
        assert sum(r["records"] for r in tables[key]) == int(agg[agg["category"] == "all"]["records"].sum())
    assert tables["tenant_id"][0]["name"] == "t299"  # the largest first
    models = [t.get_text() for t in mix_figure(agg).axes[0].get_yticklabels()]
    assert len(models) == TOP_MIX_MODELS + 1 and f"({300 - TOP_MIX_MODELS} more)" in models


@pytest.mark.parametrize(("folder", "row", "says"), [
    ("aggregates", {"date": "not-a-date"}, "column date holds a value that is not a YYYY-MM-DD date"),
    ("aggregates", {"records": "10"}, "column records holds large_string, not numbers"),
    ("aggregates", {"model": ["a", "b"]}, "column model holds list<element: string>, not text"),
    ("offenders", {"rank": 1, "user_id": "u_1", "risk": None}, "column risk has 1 empty value(s)"),
    ("offenders", {"rank": 1, "user_id": None, "risk": 1.0}, "column user_id has 1 empty value(s)"),
    ("campaigns", {"campaign_id": "c_1", "records": 3, "users": 3, "representative_prompt": b"\x00x"},
     "column representative_prompt holds binary, not text"),
    ("shadow/metrics", {"scope": "all", "variant": "a", "tp": 1, "fp": 0, "fn": 0, "tn": 1, "precision": "0.5",
                        "recall": 1.0}, "column precision holds large_string, not numbers"),
])
def test_a_job_output_column_of_another_type_is_an_input_error_naming_it(tmp_path: Path, capsys, folder: str,
                                                                         row: dict, says: str) -> None:
    """Each was a TypeError or a parse error deep in a plot, a filter or the redactor: "internal
    error", exit 1 (a hostile review, 2026-12-06)."""
    jobs = tmp_path / "jobs"
    if folder == "aggregates":
        (jobs / "aggregates").mkdir(parents=True)
        base = {"date": "2026-11-01", "tenant_id": "acme", "deployment": "chat", "model": "m", "category": "all",
                "records": 10, "flagged": 2, "flagged_share": 0.2, "severity_none": 8, "severity_low": 0,
                "severity_medium": 0, "severity_high": 2, "severity_critical": 0}
        pd.DataFrame([{**base, **row}]).to_parquet(jobs / "aggregates" / "part-00000.parquet", index=False)
    else:
        _aggregates(jobs)
        _parquet(jobs / folder, [row])
    assert main(["report", str(jobs), "-o", str(tmp_path / "r.html")]) == ExitCode.INPUT
    err = capsys.readouterr().err
    assert says in err and "internal error" not in err, err


def test_a_whole_prompt_in_an_old_campaigns_output_is_cut_before_it_is_redacted(tmp_path: Path) -> None:
    """The report redacted each representative prompt whole, and outputs written before the
    campaigns job cut them hold whole prompts: 100,000 characters of a hostile run cost the
    redactor minutes (a review, 2026-12-07). It is cut as the job cuts it, then redacted."""
    jobs = tmp_path / "jobs"
    _aggregates(jobs)
    prompt = "Call Jane Doe at jane.doe@example.com about the ransomware. " + "  -p  \n" * 15_000
    _parquet(jobs / "campaigns", [
        {"campaign_id": "c1", "records": 3, "users": 3, "models": ["m"], "categories": ["cyber_abuse"],
         "first_seen": "2026-11-01", "last_seen": "2026-11-01", "representative_prompt": prompt},
    ])
    page = tmp_path / "r.html"
    started = time.perf_counter()
    assert main(["report", str(jobs), "-o", str(page)]) == 0
    assert time.perf_counter() - started < 60  # a bound for a hang, not for speed
    html = page.read_text(encoding="utf-8")
    assert "about the ransomware." in html and "jane.doe@example.com" not in html and "&lt;EMAIL&gt;" in html
    assert html.count("-p") < 500
