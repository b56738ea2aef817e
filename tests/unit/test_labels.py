"""One truth format: what ``simulate --truth`` writes is what ``evaluate --labels`` (and Spark
shadow, tests/integration/spark/test_jobs.py) read, and the scores mean what they say."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipeline import labels as lb
from pipeline.cli import app
from pipeline.schemas import Category
from tests.fixtures.corpora import needs_corpora

pytestmark = needs_corpora

N = 300


@pytest.fixture(scope="module")
def simulated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list]:
    from pipeline import simulate as sim

    d = tmp_path_factory.mktemp("sim")
    records = list(sim.simulate(N, seed=5, end=datetime(2026, 3, 1, tzinfo=UTC)))
    sim.write_jsonl(records, d / "traffic.jsonl", d / "truth.jsonl")
    return d / "traffic.jsonl", d / "truth.jsonl", records


def test_truth_file_is_a_label_file(simulated: tuple[Path, Path, list]) -> None:
    _, truth, records = simulated
    labels = lb.read_labels(truth)
    assert list(labels) == [r.log.request_id for r in records]
    for r in records:
        label = labels[r.log.request_id]
        assert label.misuse == (r.truth.role != "benign")
        if r.truth.intended_category:
            assert Category(r.truth.intended_category) in label.categories
        else:
            assert label.categories == []
    # a jailbreak template that wraps a harmful request also carries that request's category
    assert any(len(lab.categories) == 2 and Category.JAILBREAK in lab.categories for lab in labels.values())


def test_evaluate_scores_classify_output_against_the_truth(simulated: tuple[Path, Path, list], tmp_path: Path) -> None:
    traffic, truth, records = simulated
    verdicts = tmp_path / "verdicts.jsonl"
    runner = CliRunner()
    done = runner.invoke(app, ["classify", str(traffic), "-o", str(verdicts), "--detectors", "rules"])
    assert done.exit_code == 0, done.output
    result = runner.invoke(app, ["evaluate", "--labels", str(truth), "--verdicts", str(verdicts), "--json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["matched"] == N and scores["unmatched_labels"] == 0
    by_scope = {s["scope"]: s for s in scores["scopes"]}
    flagged = sum(json.loads(line)["flagged"] for line in verdicts.read_text().splitlines())
    assert by_scope["any"]["support"] == sum(r.truth.role != "benign" for r in records)
    assert by_scope["any"]["predicted"] == flagged
    assert set(by_scope) == {"any", *(c.value for c in Category)}
    assert 0 < by_scope["any"]["recall"] < 1  # the rules baseline catches some misuse, not all

    table = runner.invoke(app, ["evaluate", "--labels", str(truth), "--verdicts", str(verdicts)])
    assert table.exit_code == 0 and "precision" in table.stdout and "jailbreak" in table.stdout


def test_scores_of_perfect_and_inverted_verdicts() -> None:
    labels = {
        "a": lb.Label(request_id="a", misuse=True, categories=[Category.CYBER_ABUSE]),
        "b": lb.Label(request_id="b", misuse=False),
        "c": lb.Label(request_id="c", misuse=True, categories=[Category.JAILBREAK, Category.OTHER_HARM]),
    }
    perfect = {k: lb.Predicted(v.misuse, frozenset(c.value for c in v.categories)) for k, v in labels.items()}
    acc = lb.score(labels, perfect)
    scopes = {s.scope: s for s in acc.scopes}
    assert scopes["any"].precision == scopes["any"].recall == 1.0
    assert scopes["misinformation"].precision is None and scopes["misinformation"].recall is None
    inverted = {k: lb.Predicted(not v.misuse, frozenset({"misinformation"} if not v.misuse else ())) for k, v in labels.items()}
    scopes = {s.scope: s for s in lb.score(labels, inverted).scopes}
    assert scopes["any"].precision == 0.0 and scopes["any"].recall == 0.0
    assert scopes["misinformation"].predicted == 1 and scopes["misinformation"].support == 0


def test_bad_label_line_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "labels.jsonl"
    bad.write_text('{"request_id": "a", "misuse": true}\n{"request_id": "b", "intended_category": "jailbreak"}\n')
    with pytest.raises(lb.LabelsError, match=r"labels.jsonl:2"):
        lb.read_labels(bad)


def test_records_or_labels_given_as_verdicts_are_refused_naming_the_line(tmp_path: Path) -> None:
    """`evaluate --verdicts records.jsonl` (the input, not classify's output) read every line as "not
    flagged" and printed a normal-looking table with recall 0 (a careless-newcomer check, 2026-12-02)."""
    from pipeline.labels import LabelsError, read_verdicts

    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"schema": "inference-log/v1", "request_id": "r1", "prompt": "hi"}) + "\n")
    with pytest.raises(LabelsError, match="line 1 is not a verdict"):
        read_verdicts(records)


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("[1, 2]", "line 3 is a JSON list, not a verdict object"),
        ('{"request_id": ["x"], "flagged": true}', "line 3: 'request_id' is a list"),
        ('{"request_id": "x", "flagged": true, "categories": 5}', "line 3: 'categories' must be a list"),
        ('{"request_id": "x", "flagged": true, "categories": [[1]]}', "line 3: 'categories' must be a list"),
        ('{"request_id": "x", "flagged": true, "categories": "cyber_abuse"}', "line 3: 'categories' must be a list"),
    ],
)
def test_a_verdict_line_of_the_wrong_shape_is_refused_naming_its_line_in_the_file(tmp_path: Path, line: str, says: str) -> None:
    """A hostile review (2026-12-07): these were internal errors (exit 1), or, for a string as
    categories, read letter by letter into a wrong table; and the line counted only lines that
    were not blank (two blank lines first gave "line 1")."""
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text("\n\n" + line + "\n")
    with pytest.raises(lb.LabelsError, match=says.replace("[", r"\[")):
        lb.read_verdicts(verdicts)


def test_evaluate_with_nothing_to_score_or_an_option_it_ignores_is_an_error(tmp_path: Path, capsys) -> None:
    """A newcomer's review (2026-12-06): labels and verdicts that share no request_id (an empty
    labels file, classify output of error lines only) printed a table of zeros and exited 0, and
    --model-dir /nonexistent, --limit and --output-dir were silently ignored next to --labels."""
    from pipeline.cli import main
    from pipeline.exits import ExitCode

    labels = tmp_path / "labels.jsonl"
    labels.write_text(json.dumps({"request_id": "a", "misuse": True}) + "\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    errors_only = tmp_path / "errors.jsonl"
    errors_only.write_text(json.dumps({"schema": "misuse-error/v1", "line": 1, "reason": "invalid_json", "detail": "x"}) + "\n")
    for lab, ver in ((empty, errors_only), (labels, empty), (labels, errors_only)):
        assert main(["evaluate", "--labels", str(lab), "--verdicts", str(ver)]) == ExitCode.INPUT
        assert "nothing to score" in capsys.readouterr().err
    for extra in (["--model-dir", str(tmp_path / "nonexistent")], ["--limit", "3"], ["--output-dir", str(tmp_path)],
                  ["--threads", "1"]):
        assert main(["evaluate", "--labels", str(labels), "--verdicts", str(errors_only), *extra]) == ExitCode.USAGE
        assert f"{extra[0]}" in capsys.readouterr().err


def test_a_line_longer_than_any_label_is_refused_without_being_held(tmp_path, monkeypatch):
    """A hostile review (2026-12-05): `evaluate --labels` read a file of one endless line whole
    (given by mistake, a 10 GB one took all the memory there was). It is read in pieces now and
    refused with its file, line and size; a line that is not UTF-8 names its file and line too."""
    import tracemalloc

    monkeypatch.setattr(lb, "MAX_LINE_BYTES", 1 << 20)
    long = tmp_path / "labels.jsonl"
    long.write_bytes(b'{"request_id": "a", "misuse": false}\n' + b"x" * (32 << 20) + b"\n")
    tracemalloc.start()
    try:
        with pytest.raises(lb.LabelsError, match=rf"labels.jsonl:2: a line of {32 << 20} bytes, longer than any"):
            lb.read_labels(long)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8e6, f"{peak / 1e6:.1f} MB held"
    bad = tmp_path / "verdicts.jsonl"
    bad.write_bytes(b'\xff\xfe{"request_id": "a"}\n')
    with pytest.raises(lb.LabelsError, match=r"verdicts.jsonl:1: not UTF-8 text"):
        lb.read_verdicts(bad)
