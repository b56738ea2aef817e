"""Recall of the PII redactor per entity type on tests/fixtures/pii_cases.jsonl.

    .venv/bin/python bench/eval_redaction.py

Prints one row per entity type (caught / total, recall, what was missed) and the share of
non-PII characters redacted as well. The target is recall >= 0.90 for every type.
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.table import Table

from pipeline.redact import PresidioRedactor
from pipeline.redact_eval import CASES, evaluate, load_cases


def main() -> int:
    console = Console()
    t0 = time.perf_counter()
    redactor = PresidioRedactor.create()
    built = time.perf_counter() - t0
    cases = load_cases()
    t0 = time.perf_counter()
    result = evaluate(cases, redactor)
    elapsed = time.perf_counter() - t0
    table = Table(title=f"PII recall on {CASES.name} ({len(cases)} sentences)")
    for col in ("type", "caught", "total", "recall", "missed"):
        table.add_column(col)
    worst = 1.0
    for name, score in result.by_type.items():
        worst = min(worst, score.recall)
        table.add_row(name, str(score.caught), str(score.total), f"{score.recall:.2f}", ", ".join(score.missed))
    console.print(table)
    console.print(
        f"non-PII characters redacted too: {result.over_redaction:.1%} ({result.other_redacted}/{result.other_chars}); "
        f"analyzer built in {built:.1f} s; {elapsed / len(cases) * 1000:.1f} ms per sentence"
    )
    return 0 if worst >= 0.90 else 1


if __name__ == "__main__":
    sys.exit(main())
