"""`evaluate` says where wrong flags point: which part of the record (system prompt, user turn,
completion...) the findings of a category the label does not have came from. In `make demo` most
wrong jailbreak flags came from one deployment's system prompt, which the accuracy table alone
does not show (README, "Detectors": trusted system prompts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from typer.testing import CliRunner

from pipeline import labels as lb
from pipeline.cli import app
from pipeline.lake import LakeWriter
from pipeline.schemas import Category, Finding, PartKind, Side
from pipeline.sinks.base import ScoredRecord, SourcePosition
from pipeline.verdicts import Pseudonymizer, build_verdict
from tests.fixtures.logs import make_log


def _finding(category: Category, part: PartKind | None) -> Finding:
    return Finding(category=category, side=Side.PROMPT, score=0.9, detector="rules", detector_version="1",
                   evidence="x", part=part, location=None)


LABELS = {
    "benign-system": lb.Label(request_id="benign-system", misuse=False),
    "benign-two-parts": lb.Label(request_id="benign-two-parts", misuse=False),
    "cyber-right": lb.Label(request_id="cyber-right", misuse=True, categories=[Category.CYBER_ABUSE]),
    "cyber-also-jailbreak": lb.Label(request_id="cyber-also-jailbreak", misuse=True, categories=[Category.CYBER_ABUSE]),
    "benign-unflagged": lb.Label(request_id="benign-unflagged", misuse=False),
}
FINDINGS = {
    "benign-system": [_finding(Category.JAILBREAK, PartKind.SYSTEM)],
    # two findings of one category in two parts: the record counts once for each part
    "benign-two-parts": [_finding(Category.JAILBREAK, PartKind.SYSTEM), _finding(Category.JAILBREAK, PartKind.USER),
                         _finding(Category.JAILBREAK, PartKind.USER)],
    "cyber-right": [_finding(Category.CYBER_ABUSE, PartKind.USER)],
    "cyber-also-jailbreak": [_finding(Category.CYBER_ABUSE, PartKind.USER), _finding(Category.JAILBREAK, None)],
    "benign-unflagged": [],
}
EXPECTED = {("jailbreak", "system"): 2, ("jailbreak", "user"): 1, ("jailbreak", "-"): 1}


def _verdicts():
    for rid, findings in FINDINGS.items():
        log = make_log(request_id=rid, timestamp=datetime(2026, 12, 5, tzinfo=UTC).isoformat())
        yield log, build_verdict(log, findings, Pseudonymizer(b"k"))


def _labels_file(tmp_path: Path) -> Path:
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(label.model_dump_json() + "\n" for label in LABELS.values()))
    return path


def test_wrong_flags_are_counted_by_the_part_their_findings_point_at(tmp_path: Path) -> None:
    jsonl = tmp_path / "verdicts.jsonl"
    jsonl.write_text("".join(v.to_json() + "\n" for _, v in _verdicts()))
    lake = LakeWriter(tmp_path / "lake")
    lake.write([ScoredRecord(log, v, SourcePosition("logs", 0, i)) for i, (log, v) in enumerate(_verdicts())])
    for source in (jsonl, tmp_path / "lake"):
        assert lb.wrong_flags_by_part(LABELS, lb.read_verdicts(source)) == EXPECTED, source


def test_evaluate_prints_them_and_points_at_trusted_prompts(tmp_path: Path) -> None:
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text("".join(v.to_json() + "\n" for _, v in _verdicts()))
    args = ["evaluate", "--labels", str(_labels_file(tmp_path)), "--verdicts", str(verdicts)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    assert {(r["category"], r["part"]): r["records"] for r in json.loads(result.stdout)["wrong_flags_by_part"]} == EXPECTED
    table = CliRunner().invoke(app, args, terminal_width=200)
    assert table.exit_code == 0, table.output
    words = " ".join(table.output.split())  # rich wraps a title to its table's width
    assert "wrong flags by the part they point at" in words
    assert "jailbreak │ system │ 2" in words and "detectors.trusted_system_prompts" in words


def test_verdicts_without_findings_still_score(tmp_path: Path) -> None:
    """A verdict file from another tool may have no findings: the scores stand, the parts are unknown."""
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text(json.dumps({"request_id": "benign-system", "flagged": True, "categories": ["jailbreak"]}) + "\n")
    predicted = lb.read_verdicts(verdicts)
    assert lb.wrong_flags_by_part(LABELS, predicted) == {("jailbreak", "-"): 1}


def test_the_html_report_shows_them_too(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline.report import build_report

    (tmp_path / "jobs" / "aggregates").mkdir(parents=True)
    pq.write_table(pa.table({
        "date": ["2026-12-05"], "tenant_id": ["t"], "deployment": ["d"], "model": ["m"], "category": ["all"],
        "records": [5], "flagged": [4], "severity_low": [4], "severity_medium": [0], "severity_high": [0],
        "severity_critical": [0],
    }), tmp_path / "jobs" / "aggregates" / "part-0.parquet")
    LakeWriter(tmp_path / "lake").write(
        [ScoredRecord(log, v, SourcePosition("logs", 0, i)) for i, (log, v) in enumerate(_verdicts())])
    html = build_report(tmp_path / "jobs", tmp_path / "r.html", lake=tmp_path / "lake",
                        labels=_labels_file(tmp_path)).read_text()
    assert "<h3>Wrong flags by the part they point at</h3>" in html and "detectors.trusted_system_prompts" in html
    for (category, part), n in EXPECTED.items():
        assert f'{category}</td><td>{part}</td><td class="num">{n}</td>' in html, (category, part)


def test_a_verdict_parquet_with_a_findings_column_of_another_shape_still_scores(tmp_path: Path) -> None:
    """Reading the parts made such a file (another tool's verdicts) an internal error
    (ArrowNotImplementedError: cast from string to list), where it used to score."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "verdicts").mkdir()
    pq.write_table(pa.table({"request_id": ["benign-system"], "flagged": [True], "categories": [["jailbreak"]],
                             "findings": ["not a list"]}), tmp_path / "verdicts" / "other-tool.parquet")
    predicted = lb.read_verdicts(tmp_path)
    assert predicted == {"benign-system": lb.Predicted(True, frozenset({"jailbreak"}))}
    assert lb.wrong_flags_by_part(LABELS, predicted) == {("jailbreak", "-"): 1}
