"""Recall of the PII redactor per entity type on the labelled sets in tests/fixtures/.

    .venv/bin/python bench/eval_redaction.py [--cases FILE ...] [--rounds 3] [--lower] [--compare folding|case|intl|cued|url|intl-lower]
    .venv/bin/python bench/eval_redaction.py [--cases FILE ...] [--rounds 3] [--lower] --against REV

For each set (default: pii_cases.jsonl and pii_cases_accented.jsonl), prints one row per entity
type (caught / total, recall, what was missed) and the share of non-PII characters redacted as
well, for versions of ``pipeline.redact`` (same analyzer, same process; time per sentence
interleaved over ``--rounds`` rounds, the median). ``--compare folding`` (default), the
accent-folded reading:

* ``off``: no folded reading (the redactor until 2026-12-04);
* ``analyzer``: the folded copy read by the whole analyzer (variant 1 of the rule in
  docs/benchmarks.md, not shipped);
* ``ner``: the folded copy read by spaCy's named-entity recogniser alone (shipped).

``--compare case``, street addresses and IBANs written without capitals:

* ``capitals``: Presidio's IBAN recogniser and the capitalised street-address pattern alone (the
  redactor until 2026-12-04);
* ``caseless``: the caseless IBAN reading and street-address pattern added (shipped).

``--compare intl``, addresses written the European and British way:

* ``us``: without ``INTL_ADDRESS_PATTERNS`` (the redactor until 2026-12-04);
* ``intl``: with them (shipped).

``--compare cued``, identifiers, dates of birth and device ids named by a cue word:

* ``uncued``: without the IDENTIFIER, BIRTH_DATE and DEVICE_ID patterns (the redactor until 2026-12-04);
* ``cued``: with them (shipped).

``--compare intl-lower``, European addresses written in lower case:

* ``capitalised-intl``: without ``INTL_CASELESS_PATTERNS`` (the redactor until 2026-12-05);
* ``caseless-intl``: with them (shipped).

``--against REV`` sets the recognisers of ``pipeline/redact.py`` at git revision REV beside this
checkout's: every change since REV at once.

``--compare url``, Presidio's URL recogniser:

* ``presidio-url``: as Presidio ships it (the redactor until 2026-12-04);
* ``anchored-url``: its pattern for links without a scheme anchored (shipped).

``--lower`` scores every sentence written in lower case, as chat users often write (names
included): what the redactor finds without capitals. ``--compare folding`` also counts the folded
copies on which the recogniser alone finds other entities than the full spaCy pipeline. The
target is recall >= 0.90 for every type, shipped version; the exit code is 1 when a type misses it.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import types
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline import redact  # noqa: E402
from pipeline.redact import PresidioRedactor  # noqa: E402
from pipeline.redact_eval import CASES, evaluate, load_cases  # noqa: E402

ACCENTED = CASES.with_name("pii_cases_accented.jsonl")


FAMILIES = {"folding": ("off", "analyzer", "ner"), "case": ("capitals", "caseless"), "intl": ("us", "intl"),
            "cued": ("uncued", "cued"), "url": ("presidio-url", "anchored-url"),
            "intl-lower": ("capitalised-intl", "caseless-intl")}
# The recognisers (pipeline/redact.py) a family's first version goes without.
ADDED = {
    "case": {"mm_street_address_caseless", "mm_iban_caseless"},  # addresses and IBANs in any case
    "intl": {"mm_street_address_intl"},  # addresses written the European and British way
    "cued": {"mm_identifier", "mm_birth_date", "mm_device_id"},  # identifiers named in the text
    "intl-lower": {"mm_street_address_intl_caseless"},  # European addresses in lower case
}


@contextmanager
def version(redactor: PresidioRedactor, family: str, variant: str):
    """``redactor`` and ``pipeline.redact`` as ``variant`` of ``family`` (FAMILIES); the shipped
    version (the last of each family) is the redactor as built."""
    real_fold, real_names = redact._folded_spans, PresidioRedactor.name_spans
    registry = redactor._analyzer.registry
    real_recognizers = list(registry.recognizers)
    if variant == "off":
        redact._folded_spans = lambda text, redactor: []
    elif variant == "analyzer":
        PresidioRedactor.name_spans = PresidioRedactor.spans
    elif family in ADDED and variant == FAMILIES[family][0]:
        registry.recognizers = [r for r in real_recognizers if r.name not in ADDED[family]]
    elif variant == "presidio-url":
        from presidio_analyzer.predefined_recognizers import UrlRecognizer

        registry.recognizers = [UrlRecognizer(supported_language="en") if r.name == "UrlRecognizer" else r
                                for r in real_recognizers]
    try:
        yield
    finally:
        redact._folded_spans, PresidioRedactor.name_spans = real_fold, real_names
        registry.recognizers = real_recognizers


def ner_differs(redactor: PresidioRedactor, texts: list[str]) -> int:
    """Folded copies on which the recogniser alone finds other entities than the whole spaCy pipeline."""
    nlp = redactor._analyzer.nlp_engine.nlp["en"]
    differ = 0
    for text in texts:
        folded = redact.fold_accents(text)
        full = [(e.start_char, e.end_char, e.label_) for e in nlp(folded).ents]
        alone = [(e.start_char, e.end_char, e.label_) for e in nlp(folded, disable=[p for p in nlp.pipe_names if p != "ner"]).ents]
        differ += full != alone
    return differ


def redactor_at(rev: str) -> PresidioRedactor:
    """The analyzer that pipeline/redact.py at git revision ``rev`` builds (its recognisers; the
    readings around them, spaced letters and folded accents, are this checkout's)."""
    shown = subprocess.run(["git", "show", f"{rev}:pipeline/redact.py"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:  # a revision git does not know: its own words, not a traceback
        raise SystemExit(f"no pipeline/redact.py at {rev!r}: {shown.stderr.strip()}")
    source = shown.stdout
    module = sys.modules[f"redact_at_{rev}"] = types.ModuleType(f"redact_at_{rev}")  # dataclasses look it up
    exec(compile(source, f"{rev}:pipeline/redact.py", "exec"), module.__dict__)  # noqa: S102 - our own file at rev
    # Its spans are merged with those of this checkout's readings: one class, or sorting them fails.
    import pipeline.redact

    module.PiiSpan = pipeline.redact.PiiSpan
    return module.PresidioRedactor.create()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=Path, nargs="+", default=[CASES, ACCENTED], help="JSONL sets to score")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds per variant, interleaved")
    ap.add_argument("--lower", action="store_true", help="score the sentences and their PII written in lower case")
    ap.add_argument("--compare", choices=sorted(FAMILIES), default="folding",
                    help="which versions to set side by side (the module docstring says what each is)")
    ap.add_argument("--against", metavar="REV",
                    help="instead of --compare: the recognisers of pipeline/redact.py at git revision REV against this checkout's")
    args = ap.parse_args()
    console = Console()
    t0 = time.perf_counter()
    redactor = PresidioRedactor.create()
    console.print(f"analyzer built in {time.perf_counter() - t0:.1f} s")
    if args.against:
        variants, family = (args.against, "checkout"), "against"
        redactors = {args.against: redactor_at(args.against), "checkout": redactor}
    else:
        variants, family = FAMILIES[args.compare], args.compare
        redactors = dict.fromkeys(variants, redactor)
    shipped, baseline = variants[-1], variants[0]
    worst = 1.0
    for path in args.cases:
        cases = load_cases(path)
        if args.lower:
            cases = [{"text": c["text"].lower(), "pii": [{**p, "value": p["value"].lower()} for p in c["pii"]]} for c in cases]
        evaluate(cases[:5], redactor)  # warm spaCy up before the first timed round
        results, times = {}, {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                with version(redactor, family, variant):
                    t0 = time.perf_counter()
                    results[variant] = evaluate(cases, redactors[variant])
                    times[variant].append((time.perf_counter() - t0) / len(cases) * 1000)
        table = Table(title=f"PII recall on {path.name} ({len(cases)} sentences)")
        for col in ("type", family, "caught / total", "recall", "missed"):
            table.add_column(col)
        for name in results[shipped].by_type:
            for variant in variants:
                score = results[variant].by_type[name]
                table.add_row(name, variant, f"{score.caught} / {score.total}", f"{score.recall:.2f}",
                              ", ".join(score.missed))
            worst = min(worst, results[shipped].by_type[name].recall)
        console.print(table)
        off = statistics.median(times[baseline])
        for variant in variants:
            r, ms = results[variant], statistics.median(times[variant])
            console.print(
                f"{variant:>8}: non-PII characters redacted too {r.over_redaction:.1%} ({r.other_redacted}/{r.other_chars}); "
                f"{ms:.1f} ms per sentence (median of {args.rounds}), {ms / off:.2f}x {baseline}"
            )
        if args.compare == "folding":
            console.print(f"folded copies where the recogniser alone differs from the full pipeline: "
                          f"{ner_differs(redactor, [c['text'] for c in cases])} of {len(cases)}\n")
    return 0 if worst >= 0.90 else 1


if __name__ == "__main__":
    sys.exit(main())
