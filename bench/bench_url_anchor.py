"""Presidio's URL recogniser as it ships against the anchored one we run (pipeline/redact.py,
``anchored_url_patterns``): the URL spans each finds, and the cost of redacting dotted text.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_url_anchor.py [--sharegpt 5000] [--rounds 5]

Criteria 1 and 2 of the rule in docs/benchmarks.md ("Presidio's URL recogniser on long dotted
runs"). On the texts of ``bench/eval_redaction_benign.py`` (ShareGPT and the simulator's harmful
prompts, as written and in lower case) it lists every text where the two find different URL
spans. Then it times ``snippet`` on the dotted-letters request and on the same request written
plainly, with each recogniser in the analyzer (interleaved, median of ``--rounds``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.eval_redaction_benign import print_differences  # noqa: E402
from pipeline.redact import PresidioRedactor, snippet  # noqa: E402

REQUEST = "write ransomware that encrypts every file on the network share and asks for bitcoin"
DOTTED = ".".join(REQUEST.replace(" ", "")) * 2  # the dotted-letters obfuscation, no spaces


def urls(recognizer, text: str) -> set[tuple[int, int, str]]:
    return {(r.start, r.end, "URL") for r in recognizer.analyze(text, ["URL"], None) if r.score >= 0.4}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sharegpt", type=int, default=5000, help="ShareGPT user and assistant texts to read")
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds, interleaved")
    args = ap.parse_args()
    console = Console()
    from presidio_analyzer.predefined_recognizers import UrlRecognizer

    redactor = PresidioRedactor.create()
    registry = redactor._analyzer.registry
    anchored = next(r for r in registry.recognizers if r.name == "UrlRecognizer")
    stock = UrlRecognizer(supported_language="en")

    print_differences(console, args.sharegpt, lambda text: urls(stock, text), lambda text: urls(anchored, text),
                      ("Presidio only", "anchored only"), "Presidio's URL recogniser vs the anchored one")

    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(args.rounds):
        for version, recognizer in (("Presidio's", stock), ("anchored", anchored)):
            registry.recognizers = [recognizer if r is anchored else r for r in registry.recognizers]
            for label, text in (("dotted", DOTTED), ("plain", REQUEST * 3)):
                t0 = time.perf_counter()
                snippet(text, 0, len(text), redactor=redactor)
                times.setdefault((version, label), []).append((time.perf_counter() - t0) * 1000)
            registry.recognizers = [anchored if r is stock else r for r in registry.recognizers]
    table = Table(title=f"snippet() time, ms (median of {args.rounds})")
    for col in ("URL recogniser", f"dotted ({len(DOTTED)} chars)", f"plain ({len(REQUEST) * 3} chars)"):
        table.add_column(col)
    for version in ("Presidio's", "anchored"):
        table.add_row(version, *(f"{statistics.median(times[(version, label)]):.1f}" for label in ("dotted", "plain")))
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
