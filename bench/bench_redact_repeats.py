"""Every pattern recogniser of the redactor on hostile repeats: the slowest cases.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_redact_repeats.py [--chars 540] [--top 12] [--only email] [--rev REV]

Evidence is hostile text, and a regex that backtracks holds its record (Presidio's regex timeout
is 60 s). Each unit below ("de la ", "a.", "1/", "Karl-Marx" ...) is repeated to ``--chars``
characters (540: about the largest region ``snippet`` redacts), with four endings, and every
recogniser but spaCy's reads each text; the slowest are listed. Compiling happens on a warm-up
pass first, so the times are of matching alone. Found this way on 2026-12-04 (docs/benchmarks.md,
PII redaction): "12 rue " + "de la " * 60 never finished, and Presidio's URL recogniser took
0.42 s on 540 characters of "a.a.a.". With ``--chars 2000`` (2026-12-07): a password pattern cubic
on blanks, and five quadratic ones (docs/benchmarks.md, "Redactor patterns on long runs").
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.eval_redaction import redactor_at  # noqa: E402
from pipeline.redact import PresidioRedactor  # noqa: E402

UNITS = (
    "de la ", "12 rue de la ", "Calle de la ", "calle de la ", "Karl-Marx", "karl-marx", "Abc ", "abc ", "Abc, ",
    "a.", "1.", "www.", "a@", "@a.", "a1", "ab12", "ab12 ", "a-", "1-", "1/", "1 ", "+1 ", "sk-", "%40", "(at)",
    "password is ", "passport number ", "born on ", "aa:", "1 main ", "5 ", "Flat 1, ", "P.O. Box ", "l e a k ",
    "phone ", "call me at ", "phone 1 2 ", "tel. (1) ", "username ", "username a1", "a1.", "a1-", "handle is ",
    "login for a is ", "Telegram @", "@a_", '"password": "', "DB_PASSWORD=", "<password>", "'user': '", "_user=",
    "_", "<username>a1", "postgres://a:", "://a:a@", "-p a1", "mysql -p", "mysql a", "machine a login a password ",
    "Authorization: Basic ", "-u a:", "--password ", "'pass' => '", "-p a1 ", "-u a -p a1 ", "hydra -p a1 ",
    "u/", "/u/", "u/a", " u/aaa", "5 u/", " @a", " @a.", " @a1.", "@_", "tag @", "reply to @a ",
    " ", "\n", "-", "@a", "a ", "\\n", "ab'",
)  # fmt: skip
ENDINGS = ("", "!", " 5", "@")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chars", type=int, default=540, help="length of each repeated text")
    ap.add_argument("--top", type=int, default=12, help="how many of the slowest cases to list")
    ap.add_argument("--only", default="", help="only the recognisers whose name holds this (any case), e.g. email")
    ap.add_argument("--rev", help="the recognisers of pipeline/redact.py at this git revision, not the checkout's")
    args = ap.parse_args()
    redactor = redactor_at(args.rev) if args.rev else PresidioRedactor.create()
    recognizers = [r for r in redactor._analyzer.registry.recognizers
                   if not r.name.startswith("Spacy") and args.only.lower() in r.name.lower()]
    texts = [((unit * (args.chars // len(unit) + 1))[: args.chars] + end, unit, end) for unit in UNITS for end in ENDINGS]
    for rec in recognizers:  # compile every pattern once
        rec.analyze("warm up 1 a.b", rec.supported_entities, None)
    timed = []
    for text, unit, end in texts:
        for rec in recognizers:
            t0 = time.perf_counter()
            rec.analyze(text, rec.supported_entities, None)
            timed.append(((time.perf_counter() - t0) * 1000, rec.name, unit, end))
    table = Table(title=f"Slowest of {len(timed):,} readings ({len(texts)} texts of {args.chars} characters)")
    for col in ("ms", "recogniser", "repeated unit", "ending"):
        table.add_column(col)
    for ms, name, unit, end in sorted(timed, reverse=True)[: args.top]:
        table.add_row(f"{ms:.1f}", name, repr(unit), repr(end))
    Console().print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
