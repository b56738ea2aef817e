"""Recall of the PII redactor per entity type on a labelled set (tests/fixtures/pii_cases.jsonl).

Input: JSONL lines ``{"text": ..., "pii": [{"type": "PHONE", "value": "+1 (555) 123-4567"}]}``.
An entity counts as caught only when every non-space character of it is inside a redacted
span: a placeholder that leaves "+1" or the last four digits behind is a miss. Over-redaction
is the share of the other (non-PII) non-space characters that were replaced too: the words
that explain a verdict should survive.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.redact import Redactor, find_spans, merge

CASES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "pii_cases.jsonl"


@dataclass
class TypeScore:
    caught: int = 0
    total: int = 0
    missed: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.caught / self.total if self.total else 0.0


@dataclass
class Evaluation:
    by_type: dict[str, TypeScore]
    other_chars: int
    other_redacted: int

    @property
    def over_redaction(self) -> float:
        return self.other_redacted / self.other_chars if self.other_chars else 0.0


def load_cases(path: Path = CASES) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(cases: Iterable[dict], redactor: Redactor) -> Evaluation:
    by_type: dict[str, TypeScore] = defaultdict(TypeScore)
    other_chars = other_redacted = 0
    for case in cases:
        text = case["text"]
        covered = [False] * len(text)
        for span in merge(find_spans(text, redactor)):  # as redact_text finds them: its extra readings too
            covered[span.start : span.end] = [True] * (span.end - span.start)
        pii_chars = [False] * len(text)
        for item in case["pii"]:
            start = text.index(item["value"])
            end = start + len(item["value"])
            pii_chars[start:end] = [True] * (end - start)
            score = by_type[item["type"]]
            score.total += 1
            if all(covered[i] for i in range(start, end) if not text[i].isspace()):
                score.caught += 1
            else:
                score.missed.append(item["value"])
        for i, ch in enumerate(text):
            if not pii_chars[i] and not ch.isspace():
                other_chars += 1
                other_redacted += covered[i]
    return Evaluation(dict(sorted(by_type.items())), other_chars, other_redacted)
