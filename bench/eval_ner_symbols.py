"""Names and places that spaCy finds in harmful prompts, with a digit or a symbol in them.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_ner_symbols.py [--show 40]

Evidence of cyber abuse is full of technical tokens, and the named-entity recogniser behind
Presidio reads some of them as people or places: "GPT-4", "COVID-19", "KB5034441",
"System.out.println(input1" become ``<PERSON>`` or ``<LOCATION>`` in evidence, which then reads
worse and hides what the request asked for. This counts, on the simulator's harmful prompts
(those of ``bench/eval_redaction_benign.py``), the PERSON and LOCATION spans of the redactor's
spaCy recogniser and those with a digit or a symbol in them, and lists the latter for a person
to judge. It measures a gap (docs/benchmarks.md, "Names with digits or symbols in them"); a
rule for a fix is still to be written.
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

from bench.eval_redaction_benign import HARMFUL  # noqa: E402
from detectors.training import corpora  # noqa: E402
from pipeline.redact import PresidioRedactor  # noqa: E402

SYMBOL = re.compile(r"[\d&_/@=<>{}\[\]#$%*+|\\]")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--show", type=int, default=40, help="how many of the spans with a digit or symbol to list")
    args = ap.parse_args()
    console = Console()
    redactor = PresidioRedactor.create()
    spacy = next(r for r in redactor._analyzer.registry.recognizers if r.name.startswith("Spacy"))
    engine = redactor._analyzer.nlp_engine
    texts = [item.text for source in HARMFUL for item in corpora.load(source)]
    total, odd = 0, []
    for text in track(texts, description="harmful prompts", console=console, transient=True):
        for result in spacy.analyze(text, ["PERSON", "LOCATION"], engine.process_text(text, "en")):
            total += 1
            if SYMBOL.search(span := text[result.start:result.end]):
                odd.append((result.entity_type, span))
    summary = Table(title="spaCy's names and places in the harmful prompts")
    for col in ("texts", "PERSON and LOCATION spans", "with a digit or symbol", "share"):
        summary.add_column(col)
    summary.add_row(f"{len(texts):,}", f"{total:,}", str(len(odd)), f"{len(odd) / max(total, 1):.1%}")
    console.print(summary)
    listing = Table(title=f"The first {min(args.show, len(odd))} spans with a digit or symbol")
    for col in ("entity", "span"):
        listing.add_column(col, overflow="fold")
    for entity, span in odd[: args.show]:
        listing.add_row(entity, escape(span))
    console.print(listing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
