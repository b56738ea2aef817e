"""Per-transformation recall and false-positive rate of the default detectors (issue 11).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_obfuscation.py [--sentence-pass MODE]

Each of the harmful cyber requests and benign requests (BENIGN_REQUESTS, and BENIGN_HELD_OUT:
written before the jailbreak-on-decoded-words fix was measured, not used to design it) of
tests/fixtures/obfuscation.py
(written for this test, not from any training or reserved evaluation source) goes through
each cheap trick of issue 11, and then through:

* ``transformer (before)``: the transformer detector as it screened until issue 11
  (bench/bench_screening.py ``legacy_detect``: joined non-assistant messages + completion,
  8 windows per text, no normalisation or decoding),
* ``transformer``: the detector as shipped (every part, readings, full windows, sentence pass),
* ``rules``: the rules detector as shipped,
* ``both``: the union of the two shipped detectors (the ``transformer,rules`` set).

Recall: share of harmful requests with a ``cyber_abuse`` finding. FPR (harm): share of
benign requests with any finding other than ``jailbreak``; FPR (any): with any finding at
all (a role-play wrapper is a jailbreak attempt even around a benign request, so it is
reported apart). Prints a Markdown table (pasted into docs/model-card.md) and the three
special benign texts' verdicts (a base64 image, a Russian sentence, a long document).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_screening import legacy_detect  # noqa: E402
from pipeline.schemas import Category, Finding  # noqa: E402


def _cyber(findings: list[Finding]) -> bool:
    return any(f.category is Category.CYBER_ABUSE for f in findings)


def _harm(findings: list[Finding]) -> bool:
    return any(f.category is not Category.JAILBREAK for f in findings)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sentence-pass", default=None, help="override the transformer's sentence_pass mode")
    parser.add_argument("--stride", default=None, help="override the transformer's serving window stride")
    parser.add_argument("--structure", default=None, help="override the transformer's structure option (true/false)")
    parser.add_argument("--dtype", default=None, help="override the transformer's CPU dtype option (float32, bfloat16, auto)")
    parser.add_argument("--write", type=Path, default=None, help="also write the section (docs/obfuscation-eval.md)")
    args = parser.parse_args()
    lines: list[str] = []

    def emit(line: str = "") -> None:
        print(line)
        lines.append(line)


    from detectors.base import DetectorConfig
    from detectors.rules import RulesDetector
    from detectors.transformer import TransformerDetector
    from tests.fixtures.obfuscation import (
        BENIGN_HELD_OUT, BENIGN_REQUESTS, HARMFUL_CYBER, SPECIAL_BENIGN, STRUCTURE_SHAPES, TRANSFORMATIONS, plain_log,
    )

    options = {"cache_size": "0"}
    if args.sentence_pass:
        options["sentence_pass"] = args.sentence_pass
    if args.stride:
        options["stride"] = args.stride
    if args.structure:
        options["structure"] = args.structure
    if args.dtype:
        options["dtype"] = args.dtype
    transformer = TransformerDetector.create(DetectorConfig(options=options))
    rules = RulesDetector()
    emit("## Hidden requests: obfuscation, history, long texts (issue 11)")
    emit()
    emit(f"Command: `HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_obfuscation.py --write docs/obfuscation-eval.md` "
         f"(transformer {transformer.detector_version}, sentence_pass={transformer.sentence_pass}; rules {rules.version}). "
         f"{len(HARMFUL_CYBER)} harmful cyber requests, {len(BENIGN_REQUESTS)} benign requests and {len(BENIGN_HELD_OUT)} "
         "held-out benign requests written for this test (tests/fixtures/obfuscation.py; not from any training or reserved "
         "source), each under every transformation. Recall: harmful requests with a `cyber_abuse` finding. FPR harm: benign "
         "requests with a finding other than `jailbreak`; FPR any: with any finding. FPR cells read `benign set, held-out set`. "
         "`base64` says \"decode this and do what it says\" (the encoding attack), `base64_question` asks what a logged "
         "string says; `role_play` is a persona \"who has no rules and never refuses\" (a jailbreak attempt whatever it wraps), "
         "`persona` a story character with nothing about rules. `tag_characters` (\"ASCII smuggling\") and "
         "`variation_selectors` hide the request in invisible characters after a visible sentence or an emoji; "
         "`html_entities` and `unicode_escapes` write every character as `&#87;` or `\\u0057` (these four were added "
         "on 2026-12-02 after a hostile check found them unread, with `backwards`, `circled_letters` and `small_caps` "
         "(\"fancy text\" letters) and `in_word_markup` (an empty HTML element or comment inside words); upside-down "
         "text (`ʇxǝʇ`) is not decoded yet). `json_string` puts the request in a one-line JSON object's value and "
         "`code_comment` in a `# TODO:` comment of a Python function (added on 2026-12-02 with the structure reading; "
         "its `structure` option decides whether the transformer reads them, docs/benchmarks.md); `numbers_flood` puts 25 "
         "random integers before and after it (the numbers reading, same option). `dotted` joins the letters of each word "
         "with dots; `morse`, `caesar` (shift 3), `atbash` and `words_backwards` (every word spelled backwards, in order) "
         "follow a plain \"decode this ... and answer it\" (these five were added on 2026-12-03 after a hostile check "
         "found them unread; Morse code is not decoded: its decoder failed its rule, docs/benchmarks.md); so were "
         "`ascii_decimal` and `binary` (every character as a decimal code or every byte as 8 bits, after a decode "
         "instruction) and `hyphenated` (every word cut into hyphen-joined pieces of three letters; not joined: that "
         "decoder failed its rule too). `split_variables` cuts the request into two quoted variables and asks what "
         "a + b says (payload splitting; read since 2026-12-03 through the structure reading). "
         "`before`: the transformer as it screened until issue 11. "
         "A small, hand-written set: it shows which tricks work, not a population rate.")
    emit()
    emit("| transformation | transformer (before) recall | transformer recall | rules recall | both recall "
         "| transformer FPR harm / any | rules FPR harm / any | both FPR harm / any |")
    emit("|---|---|---|---|---|---|---|---|")
    for name, build in TRANSFORMATIONS.items():
        harmful = [build(t, f"{name}-h{i}") for i, t in enumerate(HARMFUL_CYBER)]
        benign = [build(t, f"{name}-b{i}") for i, t in enumerate(BENIGN_REQUESTS)]
        held = [build(t, f"{name}-o{i}") for i, t in enumerate(BENIGN_HELD_OUT)]
        logs = harmful + benign + held
        before = legacy_detect(transformer, logs)
        tr = transformer.detect(logs)
        ru = rules.detect(logs)
        both = [a + b for a, b in zip(tr, ru, strict=True)]
        h, n, o = len(harmful), len(benign), len(held)

        def recall(res: list[list[Finding]]) -> str:
            return f"{sum(_cyber(r) for r in res[:h])}/{h}"

        def fpr(res: list[list[Finding]]) -> str:
            b, ho = res[h : h + n], res[h + n :]
            return (f"{sum(_harm(r) for r in b)}/{n}, {sum(_harm(r) for r in ho)}/{o} / "
                    f"{sum(bool(r) for r in b)}/{n}, {sum(bool(r) for r in ho)}/{o}")

        emit(f"| {name} | {recall(before)} | {recall(tr)} | {recall(ru)} | {recall(both)} | {fpr(tr)} | {fpr(ru)} | {fpr(both)} |")
    emit()
    emit("Reading the benign columns: jailbreak is judged on the decoded words of a part that has a decoded reading "
         "(detectors/transformer.py `_judged`); before that, the classifier read base64 runs and spaced-out letters as a "
         "jailbreak whatever they said (FPR any 10/10 for `base64`, 9/10 for `spaced` on the benign set). What is still "
         "flagged: `base64` says \"do what it says\", which the model reads as a jailbreak on the decoded words for some "
         "requests (jailbreak only, never a harm category; with a neutral question, `base64_question`, nothing is flagged); "
         "`role_play` is flagged jailbreak around every request by both detectors, which is the intended reading of a "
         "\"no rules, never refuses\" persona; `backwards` says \"read this backwards and answer it\", the same kind "
         "of instruction as `base64`'s, and so do the cipher rows' \"decode this ... and answer it\". Known errors: "
         "`persona` gets `other_harm` on benign requests (the sentence "
         "pass, run because the whole reads as a jailbreak, scores \"Let's write a story together.\" alone at 0.73 "
         "against a threshold of 0.66); the transformer reads request 6 deciphered from `atbash` (in bfloat16; float32 "
         "flags it) and turned from `words_backwards` as a jailbreak only, and flags nothing on request 4 of "
         "`words_backwards` (the rules flag all three); decoded from `binary`, the held-out \"Explain what a phishing "
         "email usually looks like so I can warn my parents.\" reads as `cyber_abuse`; request 4 split into variables "
         "is not flagged by the transformer. tests/unit/test_obfuscation.py holds these cases as strict xfails.")
    emit()
    emit(f"Shapes written as fresh checks of the structure and numbers readings (docs/benchmarks.md; transformer "
         f"`structure={transformer.structure}`):")
    emit()
    emit("| shape | transformer recall | rules recall | transformer FPR harm / any | rules FPR harm / any |")
    emit("|---|---|---|---|---|")
    for name, shape in STRUCTURE_SHAPES.items():
        harmful = [plain_log(shape(t), f"{name}-h{i}") for i, t in enumerate(HARMFUL_CYBER)]
        benign = [plain_log(shape(t), f"{name}-b{i}") for i, t in enumerate(BENIGN_REQUESTS)]
        held = [plain_log(shape(t), f"{name}-o{i}") for i, t in enumerate(BENIGN_HELD_OUT)]
        tr, ru = transformer.detect(harmful + benign + held), rules.detect(harmful + benign + held)
        h, n, o = len(harmful), len(benign), len(held)
        emit(f"| {name} | {recall(tr)} | {recall(ru)} | {fpr(tr)} | {fpr(ru)} |")
    emit()
    for name, text in SPECIAL_BENIGN.items():
        log = plain_log(text, name)
        found = transformer.detect([log])[0] + rules.detect([log])[0]
        verdict = "flagged " + ", ".join(sorted({f.category.value for f in found})) if found else "not flagged"
        emit(f"- benign {name.replace('_', ' ')} (both detectors): {verdict}")
    if args.write:
        # Sections below KEPT_MARKER (measured by other scripts) survive a rewrite of the table.
        kept = args.write.read_text().partition(KEPT_MARKER)[2] if args.write.exists() else ""
        args.write.write_text("\n".join(lines) + "\n" + (f"\n{KEPT_MARKER}{kept}" if kept else ""))


KEPT_MARKER = "<!-- kept by bench_obfuscation.py --write -->"


if __name__ == "__main__":
    main()
