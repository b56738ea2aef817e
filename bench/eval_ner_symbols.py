"""Names and places that spaCy finds in prompts, with a digit or a symbol in them, and what
``name_parts`` keeps masked of them.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_ner_symbols.py [--sharegpt 2000] [--show 200]

Evidence of cyber abuse is full of technical tokens, and the named-entity recogniser behind
Presidio reads some of them as people or places: "GPT-4", "COVID-19", "KB5034441",
"System.out.println(input1" became ``<PERSON>`` or ``<LOCATION>`` in evidence, which then read
worse and hid what the request asked for. The redactor now cuts each such span to its name-like
pieces (``pipeline.redact.name_parts``). This reads the simulator's harmful prompts (those of
``bench/eval_redaction_benign.py``) and the first ``--sharegpt`` ShareGPT user and assistant
texts, as written, with spaCy as the analyzer runs it, and counts the PERSON and LOCATION spans,
those with a digit or a symbol in them, and those the trim changes; it lists every changed span
with what stays masked in brackets, for a person to judge (criterion 3 of "Names with digits or
symbols in them, trimmed" in docs/benchmarks.md). The pieces released are everything outside
the brackets.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.eval_redaction_benign import texts  # noqa: E402
from pipeline.redact import PresidioRedactor, name_parts  # noqa: E402

SYMBOL = re.compile(r"[\d&_/@=<>{}\[\]#$%*+|\\]")


def kept(text: str, start: int, end: int, parts: list[tuple[int, int]]) -> str:
    """The span with each part that stays masked in brackets."""
    out, cursor = [], start
    for lo, hi in parts:
        out += [text[cursor:lo], "[", text[lo:hi], "]"]
        cursor = hi
    return "".join(out + [text[cursor:end]])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sharegpt", type=int, default=2000, help="ShareGPT user and assistant texts to read")
    ap.add_argument("--show", type=int, default=200, help="how many of the changed spans to list")
    args = ap.parse_args()
    console = Console()
    engine = PresidioRedactor.create()._analyzer.nlp_engine
    summary = Table(title="spaCy's names and places, and what the trim changes")
    for col in ("texts", "read", "PERSON and LOCATION spans", "with a digit or symbol", "changed", "dropped",
                "characters released"):
        summary.add_column(col)
    listing = Table(title="Spans the trim changes (what stays masked in brackets)")
    for col in ("texts", "entity", "span"):
        listing.add_column(col, overflow="fold")
    shown = 0
    for name, items in texts(args.sharegpt).items():
        total = odd = changed = dropped = released = 0
        for text in track(items, description=name, console=console, transient=True):
            for entity in engine.process_text(text, "en").entities:
                if entity.label_ not in ("PERSON", "LOCATION"):
                    continue
                start, end = entity.start_char, entity.end_char
                total += 1
                odd += bool(SYMBOL.search(text[start:end]))
                parts = name_parts(text, start, end)
                if parts == [(start, end)]:
                    continue
                changed += 1
                dropped += not parts
                released += (end - start) - sum(hi - lo for lo, hi in parts)
                if shown < args.show:
                    shown += 1
                    listing.add_row(name, entity.label_, escape(kept(text, start, end, parts)))
        summary.add_row(name, f"{len(items):,}", f"{total:,}", f"{odd:,}", f"{changed:,}", f"{dropped:,}", f"{released:,}")
    console.print(summary)
    console.print(listing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
