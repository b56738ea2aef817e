"""Reviewed labels (ground truth) and how verdicts score against them: one format, one scorer.

A label line is JSON with ``request_id``, ``misuse`` (bool) and ``categories`` (the taxonomy
categories the record really belongs to; empty when it is benign). Extra fields are allowed
and ignored, so ``misuse-monitor simulate --truth`` can add what it intended (role,
completion kind, campaign) to the very lines that ``spark shadow --labels``,
``misuse-monitor evaluate --labels`` and ``misuse-monitor report --labels`` read.

Verdicts come from a ``classify`` output (JSONL of misuse-verdict/v1) or a Parquet lake
(``flagged`` and ``categories`` columns). Precision and recall use ``sklearn.metrics`` over
one row per labelled request id that has a verdict; scope ``any`` is flagged vs misuse, then
one scope per category (a verdict "predicts" a category when it lists it).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.exits import first_line
from pipeline.schemas import Category
from pipeline.stdio import LongLine, is_dash, open_input


class Label(BaseModel):
    """One reviewed record. ``categories`` empty with ``misuse`` true means "misuse, category unknown"."""

    model_config = ConfigDict(extra="ignore")

    request_id: str
    misuse: bool
    categories: list[Category] = Field(default_factory=list)


class LabelsError(ValueError):
    """A labels or verdicts file that cannot be read (names the file and line)."""


# No label or verdict line comes near this; a longer one is read in pieces and refused, never
# held whole (a file of one 10 GB line, given by mistake, took all the memory there was).
MAX_LINE_BYTES = 16 * 1024 * 1024


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of a JSONL file ('-': stdin), without a byte order mark; a line too
    long or not UTF-8 is a LabelsError naming the file and line."""
    with open_input(path, max_line_bytes=MAX_LINE_BYTES) as fh:
        for n, raw in enumerate(fh, start=1):
            if isinstance(raw, LongLine):
                raise LabelsError(f"{path}:{n}: a line of {raw.size} bytes, longer than any label or verdict ({MAX_LINE_BYTES})")
            try:
                yield n, _without_bom(raw.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise LabelsError(f"{path}:{n}: not UTF-8 text (byte {exc.start} of the line)") from exc


def read_labels(path: Path) -> dict[str, Label]:
    """request_id -> Label from a JSONL file ('-': stdin); a replayed id keeps its first line (as shadow does)."""
    labels: dict[str, Label] = {}
    for n, line in _lines(path):
        if not line.strip():
            continue
        try:
            label = Label.model_validate_json(line)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors())
            raise LabelsError(f"{path}:{n}: not a label line ({problems})") from exc
        labels.setdefault(label.request_id, label)
    return labels


@dataclass(frozen=True)
class Predicted:
    flagged: bool
    categories: frozenset[str]
    # (category, part) of each finding: which part of the record it points at ("-": not named)
    parts: frozenset[tuple[str, str]] = frozenset()


def _parts(findings: Iterable[Mapping] | None) -> frozenset[tuple[str, str]]:
    return frozenset((str(f.get("category")), str(f.get("part") or "-")) for f in findings or () if isinstance(f, Mapping))


def read_verdicts(path: Path) -> dict[str, Predicted]:
    """request_id -> what the verdict said, from a verdict JSONL file ('-': stdin) or a Parquet lake folder.

    Error lines of ``classify`` (``misuse-error/v1``) have no verdict and are skipped.
    """
    verdicts: dict[str, Predicted] = {}
    if not is_dash(path) and path.is_dir():
        # A lake root holds verdicts/ (and dead_letters/ from backfills, which have no verdict).
        root = path / "verdicts" if (path / "verdicts").is_dir() else path
        files = sorted(str(p) for p in root.rglob("*.parquet"))
        if not files:
            raise LabelsError(f"no Parquet files under {path}")
        # Read the files by name, not as a Hive dataset: the lake's date= folders would
        # otherwise add a partition column that clashes with the stored `date` column.
        try:
            table = _verdict_table(files)
        except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid (not Parquet, a column missing) is a ValueError
            # Another job's output (aggregates/) or a damaged file was an internal error (exit 1).
            first = first_line(exc, type(exc).__name__)
            raise LabelsError(f"{path}: not a verdict lake (Parquet with request_id, flagged, categories): {first}") from exc
        rows: Iterable[tuple[int, Any]] = enumerate(table.to_pylist(), start=1)
    else:
        rows = _jsonl_rows(path)
    for n, row in rows:
        # Types checked: `[1, 2]` or a list as request_id was an internal error, and a string as
        # categories was read letter by letter (a hostile review, 2026-12-07).
        if not isinstance(row, dict):
            raise LabelsError(f"{path}: line {n} is a JSON {type(row).__name__}, not a verdict object")
        if row.get("schema") == "misuse-error/v1" or "request_id" not in row:
            continue
        if not isinstance(row["request_id"], str):
            raise LabelsError(f"{path}: line {n}: 'request_id' is a {type(row['request_id']).__name__}, not a string")
        categories = row.get("categories") or []
        if not isinstance(categories, list) or not all(isinstance(c, str) for c in categories):
            raise LabelsError(f"{path}: line {n}: 'categories' must be a list of category names")
        if "flagged" not in row:
            # Input records or label lines given as verdicts read as "nothing flagged" and gave a
            # normal-looking table with recall 0 (a careless-newcomer check, 2026-12-02).
            raise LabelsError(
                f"{path}: line {n} is not a verdict (no 'flagged' field; schema {row.get('schema')!r}); "
                "--verdicts takes classify's output or a lake"
            )
        flagged = row.get("flagged")
        if not isinstance(flagged, bool) and flagged is not None:
            # bool("false") is True: a verdict file from another tool with "flagged": "false" or 0
            # counted every record as flagged and still gave a normal-looking table.
            raise LabelsError(f"{path}: line {n}: 'flagged' is {flagged!r}, not true or false")
        findings = row.get("findings")
        verdicts.setdefault(row["request_id"], Predicted(
            bool(flagged), frozenset(categories), _parts(findings if isinstance(findings, list) else None),
        ))
    return verdicts


def _verdict_table(files: list[str]):  # noqa: ANN202 - pyarrow Table
    """request_id, flagged, categories and, where the files have them, findings. Findings say which
    part each flag came from; lake files written before a finding had a part read with it null. A
    verdict file from another tool may have a findings column of another shape: its flags still
    score, their parts are unknown."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    columns = ["request_id", "flagged", "categories"]
    dataset = ds.dataset(files, format="parquet")
    if "findings" in dataset.schema.names:
        from pipeline.lake import LAKE_SCHEMA

        fields = [*columns, "findings"]
        try:
            schema = pa.schema([LAKE_SCHEMA.field(f) for f in fields])
            return ds.dataset(files, format="parquet", schema=schema).to_table(columns=fields)
        except (pa.ArrowException, ValueError):
            pass
    return dataset.to_table(columns=columns)


def _without_bom(line: str) -> str:
    """The line without a UTF-8 byte order mark before it, as ``classify`` reads (RFC 8259 lets a
    parser ignore it; Windows editors and PowerShell write one, and `cat a b` puts one mid-file):
    it made a valid file "not JSON" on line 1."""
    return line.removeprefix("\ufeff")


def _jsonl_rows(path: Path) -> Iterable[tuple[int, Any]]:
    """(line number in the file, JSON value) of each line that is not blank."""
    for n, line in _lines(path):
        if line.strip():
            try:
                yield n, json.loads(line)
            except ValueError as exc:
                raise LabelsError(f"{path}:{n}: not JSON") from exc


@dataclass(frozen=True)
class ScopeScore:
    scope: str  # "any" or a category name
    support: int  # labelled positives
    predicted: int  # records the verdicts put in this scope
    tp: int
    precision: float | None  # None when nothing was predicted
    recall: float | None  # None when nothing is labelled positive

    def as_dict(self) -> dict[str, object]:
        return {
            "scope": self.scope, "support": self.support, "predicted": self.predicted, "tp": self.tp,
            "precision": self.precision, "recall": self.recall,
        }


@dataclass(frozen=True)
class Accuracy:
    matched: int  # labelled records that have a verdict
    unmatched_labels: int  # labelled records without a verdict (not scored)
    scopes: list[ScopeScore]


def score(labels: Mapping[str, Label], verdicts: Mapping[str, Predicted]) -> Accuracy:
    """Precision/recall of the verdicts on the labelled records they cover."""
    from sklearn.metrics import precision_recall_fscore_support

    ids = sorted(set(labels) & set(verdicts))
    scopes: list[tuple[str, list[bool], list[bool]]] = [
        ("any", [labels[i].misuse for i in ids], [verdicts[i].flagged for i in ids])
    ]
    for cat in Category:
        truth = [cat in labels[i].categories for i in ids]
        pred = [verdicts[i].flagged and cat.value in verdicts[i].categories for i in ids]
        scopes.append((cat.value, truth, pred))
    out = []
    for name, truth, pred in scopes:
        tp = sum(t and p for t, p in zip(truth, pred, strict=True))
        support, predicted = sum(truth), sum(pred)
        if ids:
            p, r, _, _ = precision_recall_fscore_support(
                truth, pred, average="binary", pos_label=True, zero_division=0
            )
        precision = float(p) if ids and predicted else None
        recall = float(r) if ids and support else None
        out.append(ScopeScore(name, support, predicted, tp, precision, recall))
    return Accuracy(len(ids), len(set(labels) - set(verdicts)), out)


def wrong_flags_by_part(labels: Mapping[str, Label], verdicts: Mapping[str, Predicted]) -> Counter[tuple[str, str]]:
    """(category, part) -> labelled records flagged with a category their label does not have, by
    the part of the record that category's findings point at (a record counts once per part).
    Where wrong flags come from: a deployment's system prompt flags every one of its requests.
    As in the per-category scores, a label of misuse with no category makes every category wrong."""
    wrong: Counter[tuple[str, str]] = Counter()
    for i in set(labels) & set(verdicts):
        verdict, label = verdicts[i], labels[i]
        if not verdict.flagged:
            continue
        truth = {c.value for c in label.categories}
        for category in verdict.categories - truth:
            wrong.update({(category, part) for c, part in verdict.parts if c == category} or {(category, "-")})
    return wrong


# What evaluate and report say when system prompts are among the wrong flags.
TRUSTED_PROMPTS_HINT = ("Flags on system prompts: a deployment's own prompt is sent with every request. If those "
                        "prompts are yours, list them in detectors.trusted_system_prompts (README, \"Detectors\").")


def ranked(wrong: Counter[tuple[str, str]]) -> list[tuple[tuple[str, str], int]]:
    """The wrong flags, most records first (then by category and part)."""
    return sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0]))


def on_system_prompts(wrong: Counter[tuple[str, str]]) -> bool:
    return any(part == "system" for _, part in wrong)


def wrong_flags_table(wrong: Counter[tuple[str, str]]):  # noqa: ANN201 - rich Table
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="wrong flags by the part they point at",
                  caption="records flagged with a category their label does not have")
    for col, justify in (("category", "left"), ("part", "left"), ("records", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for (category, part), n in ranked(wrong):
        table.add_row(escape(category), escape(part), str(n))
    return table


def accuracy_table(acc: Accuracy, title: str = "verdicts against the ground truth"):  # noqa: ANN201 - rich Table
    """A rich table: one row per scope with support, predicted, precision and recall."""
    from rich.markup import escape
    from rich.table import Table

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    table = Table(title=f"{title} ({acc.matched} labelled records)")
    for col, justify in (("scope", "left"), ("labelled", "right"), ("flagged", "right"),
                         ("correct", "right"), ("precision", "right"), ("recall", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for s in acc.scopes:
        table.add_row(escape(s.scope), str(s.support), str(s.predicted), str(s.tp), pct(s.precision), pct(s.recall))
    return table


def evaluate_command(labels: Path | None, verdicts: Path | None, as_json: bool = False) -> None:
    """``misuse-monitor evaluate --labels L --verdicts V``: print the accuracy table (or JSON)."""
    import typer
    from rich.console import Console

    if labels is None or verdicts is None:
        raise typer.BadParameter("--labels and --verdicts go together", param_hint="--labels/--verdicts")
    if is_dash(labels) and is_dash(verdicts):
        raise typer.BadParameter("only one of them can be '-' (stdin)", param_hint="--labels/--verdicts")
    for path, hint in ((labels, "--labels"), (verdicts, "--verdicts")):
        if not is_dash(path) and not path.exists():
            raise typer.BadParameter(f"{path} does not exist", param_hint=hint)
    read, predicted = read_labels(labels), read_verdicts(verdicts)
    if not read.keys() & predicted.keys():
        # A table of zeros with exit 0 looked like a result (a newcomer's review, 2026-12-06).
        from pipeline.exits import InputError

        raise InputError(
            f"nothing to score: {len(read)} labelled records ({labels}) and {len(predicted)} verdicts ({verdicts}), "
            "none with the same request_id" + (" (classify's error lines carry no verdict)" if read and not predicted else "")
        )
    acc = score(read, predicted)
    wrong = wrong_flags_by_part(read, predicted)
    if as_json:
        typer.echo(json.dumps({"matched": acc.matched, "unmatched_labels": acc.unmatched_labels,
                               "scopes": [s.as_dict() for s in acc.scopes],
                               "wrong_flags_by_part": [{"category": c, "part": p, "records": n}
                                                       for (c, p), n in sorted(wrong.items())]}, sort_keys=True))
        return
    console = Console()
    console.print(accuracy_table(acc))
    if wrong:
        console.print(wrong_flags_table(wrong))
        if on_system_prompts(wrong):
            console.print(TRUSTED_PROMPTS_HINT)
    if acc.unmatched_labels:
        console.print(f"{acc.unmatched_labels} labelled records have no verdict (not scored)")
