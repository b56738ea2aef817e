"""Throughput cost of screening every part of a record (issue 11), side by side, one run.

    COLUMNS=200 HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_screening.py [--records 300] [--batch 32] [--conversations]

On the same simulated records (pipeline.simulate, fixed seed) and the same loaded model, each
variant with its own score cache of the default size (``--cache-size 0``: every text cold),
measures records/s of the ``transformer`` detector:

* ``before``: what it screened until issue 11, reproduced by :func:`legacy_detect`: the
  joined non-assistant messages (``prompt_text``) and the completion, at most 8 windows per
  text, no normalisation or decoding, no sentence pass, the backbone in float32 (as it shipped);
* ``before (dtype=D)`` (``--dtypes``): the same in ``D``, so the cost of issue 11's readings can
  be read at equal dtype;
* ``after (sentence_pass=M)``: ``detect`` as shipped (every part of ``screened_parts()``,
  windows over every token up to 64 per text, normalised/decoded readings, one backbone pass
  for both sides, the window-feature cache of ``--feature-cache-size``), for each
  sentence-pass mode;
* ``after (..., no window-feature cache)``: the first mode without the window-feature cache.
* ``after (..., dtype=D)`` (``--dtypes``): the first mode with the backbone's CPU forward pass in
  ``D`` (e.g. bfloat16, or float32 where the shipped ``auto`` picks bfloat16), compared record by
  record with the shipped variant;
* ``after (..., history_windows=0)``: the first mode with every window of earlier assistant
  turns read (the history gate off), when the shipped detector has the gate on.

``--conversations`` adds, 64 records before each record that re-sends an earlier exchange as
history, that exchange's own record (:func:`with_earlier_turns`): simulate() never emits it,
a gateway logs every request. ``--breakdown`` prints backbone tokens only (tokenizer, no
model), with unbounded caches.

Variants run interleaved batch by batch, so load changes on a shared machine hit all of them
alike. Prints a table with each variant's ratio to ``before``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from detectors.transformer import SENTENCE_PASS_MODES, LRUCache, TransformerDetector, cpu_dtype  # noqa: E402
from pipeline.schemas import Finding, InferenceLog, Side  # noqa: E402


def legacy_detect(det: TransformerDetector, records: Sequence[InferenceLog]) -> list[list[Finding]]:
    """The transformer detector's ``detect`` before issue 11 (prompt_text and completion only,
    the artifact's 8-window cap), on the same loaded model."""
    saved = det.window
    det.window = det.manifest.window
    try:
        prompt_texts = [r.prompt_text for r in records]
        prompts = det.score_texts(Side.PROMPT, prompt_texts)
        with_completion = [i for i, r in enumerate(records) if r.has_completion]
        completions = det.score_texts(Side.COMPLETION, [records[i].completion or "" for i in with_completion])
        out = [det._findings(Side.PROMPT, ts, text) for ts, text in zip(prompts, prompt_texts, strict=True)]
        for i, ts in zip(with_completion, completions, strict=True):
            out[i].extend(det._findings(Side.COMPLETION, ts, records[i].completion or ""))
        return out
    finally:
        det.window = saved


def with_earlier_turns(records: Sequence[InferenceLog], gap: int = 64) -> list[InferenceLog]:
    """``records`` with each earlier exchange that a record re-sends as history also present
    as its own record (its messages up to the earlier assistant turn, which becomes its
    completion), ``gap`` records before the record that re-sends it.

    simulate() gives a record the previous turn of its ShareGPT conversation as history but
    never emits the request that produced that turn; a serving gateway logs every request, so
    real multi-turn traffic holds both, the follow-up some time later (``gap`` records: with
    the default 64 and batches of 32, never in the same micro-batch)."""
    keyed: list[tuple[float, InferenceLog]] = []
    for i, record in enumerate(records):
        messages = list(record.messages or ())
        turn = next((k for k, m in enumerate(messages) if m.role == "assistant" and k < len(messages) - 1), None)
        if turn is not None and messages[turn].text:
            earlier = record.model_copy(
                update={
                    "request_id": record.request_id + "-earlier",
                    "messages": messages[:turn],
                    "completion": messages[turn].text,
                    "reasoning_content": None,
                    "tool_calls": None,
                }
            )
            keyed.append((i - gap - 0.5, earlier))
        keyed.append((float(i), record))
    keyed.sort(key=lambda pair: pair[0])
    return [record for _, record in keyed]


def token_breakdown(records: Sequence[InferenceLog]) -> None:
    """Backbone tokens of ``before`` and ``after`` by what they read (tokenizer only, unique
    texts per side as with the score cache): where the extra cost comes from."""
    from collections import Counter

    from detectors.normalize import NUMBERS, STRUCTURE, iter_all, numbers_reading, structure_lines, structure_reading
    from detectors.transformer import _names_harm
    from detectors.training.modeling import WindowConfig, backbone_path, make_windows
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(backbone_path()), local_files_only=True)

    def tokens(text: str, cap: int) -> int:
        return sum(len(w.input_ids) for w in make_windows(tok, text, WindowConfig(max_windows=cap)))

    before, after, seen, seen_after = Counter(), Counter(), set(), set()
    keyword_pieces: Counter[str] = Counter()
    seen_windows: set[tuple[int, ...]] = set()
    all_parts = window_new = 0  # after: every part with no cache; windows not seen before
    for r in records:
        for side, text in [("prompt_text", r.prompt_text)] + ([("completion", r.completion or "")] if r.has_completion else []):
            if (side, text) not in seen:
                seen.add((side, text))
                before[side] += tokens(text, 8)
        for part in r.screened_parts():
            extra = [r for r in (structure_reading(part.text), numbers_reading(part.text)) if r is not None]
            for reading in [*iter_all(part.text), *extra]:
                for w in make_windows(tok, reading.text, WindowConfig(max_windows=64)):
                    all_parts += len(w.input_ids)
                    if tuple(w.input_ids) not in seen_windows:
                        seen_windows.add(tuple(w.input_ids))
                        window_new += len(w.input_ids)
                key = (part.side, reading.text)
                if key not in seen_after:
                    seen_after.add(key)
                    kind = ("" if not reading.transforms else " (structure)" if STRUCTURE in reading.transforms
                            else " (numbers)" if NUMBERS in reading.transforms else " (readings)")
                    after[part.kind.value + kind] += tokens(reading.text, 64)
                    if reading in extra:  # what `structure = keywords` scores of it
                        pieces = [reading.text[a:b] for a, b in structure_lines(reading.text)]
                        label = f"{part.kind.value} ({'structure' if STRUCTURE in reading.transforms else 'numbers'})"
                        keyword_pieces[label] += sum(tokens(t, 64) for t in pieces if _names_harm(t))
    total = sum(before.values())
    print(f"before: {dict(before)} = {total:,} tokens")
    print("after (plain and readings; sentence pass not included):")
    for kind, n in after.most_common():
        print(f"  {kind}: {n:,} ({n / total:.1%} of before)")
    print(f"  total: {sum(after.values()):,} ({sum(after.values()) / total:.2f}x)")
    plain = sum(n for kind, n in after.items() if "(structure)" not in kind and "(numbers)" not in kind)
    print(f"structure and numbers readings: all {sum(after.values()) - plain:,} tokens, "
          f"pieces that name a harm (structure = keywords) {sum(keyword_pieces.values()):,} {dict(keyword_pieces)}, "
          f"against {plain:,} without them")
    print(f"after, every part of every record (no cache): {all_parts:,} ({all_parts / total:.2f}x); "
          f"with an unbounded window-feature cache (windows not seen before, either side): {window_new:,} "
          f"({window_new / total:.2f}x)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32, help="records per detect call")
    parser.add_argument("--window-batch", type=int, default=0,
                        help="windows per forward pass (detectors.batch_size); 0: the shipped default")
    parser.add_argument("--modes", default=",".join(SENTENCE_PASS_MODES))
    parser.add_argument("--cache-size", type=int, default=4096, help="score cache per variant (the default); 0: cold")
    parser.add_argument("--structures", default="",
                        help="comma-separated transformer `structure` modes to add as variants (e.g. prompt,all)")
    parser.add_argument("--dtypes", default="",
                        help="comma-separated CPU dtypes of the backbone to add as variants (e.g. bfloat16); each is "
                             "also compared record by record with the shipped variant")
    parser.add_argument("--breakdown", action="store_true", help="only print the token breakdown (no model)")
    parser.add_argument("--feature-cache-size", type=int, default=8192, help="window-feature cache of the after variants")
    parser.add_argument(
        "--conversations", action="store_true",
        help="insert each history turn's own earlier record (with_earlier_turns): multi-turn traffic as a gateway logs it",
    )
    args = parser.parse_args()
    if args.breakdown:
        from pipeline.simulate import simulate

        logs = [r.log for r in simulate(args.records, seed=11, end=datetime(2026, 1, 2, tzinfo=UTC))]
        token_breakdown(with_earlier_turns(logs) if args.conversations else logs)
        return

    from rich.console import Console
    from rich.table import Table

    from detectors.base import DetectorConfig
    from pipeline.simulate import simulate

    records = [r.log for r in simulate(args.records, seed=11, end=datetime(2026, 1, 2, tzinfo=UTC))]
    det = TransformerDetector.create(DetectorConfig(**({"batch_size": args.window_batch} if args.window_batch else {})))
    legacy_detect(det, records[-8:])  # warm-up (records not in the measured set's cache)
    det.detect(records[-8:])
    records = records[:-8]
    if args.conversations:
        records = with_earlier_turns(records)

    modes = args.modes.split(",")
    # Each variant keeps its own score cache (the default 4096 texts), as a separate process would.
    caches = {}

    def with_cache(name: str, fn, feature_cache_size: int = 0):
        # Before issue 11 there was no window-feature cache: "before" runs without one.
        caches[name] = (LRUCache(args.cache_size), LRUCache(feature_cache_size))

        def run(batch: Sequence[InferenceLog]) -> list[list[Finding]]:
            det.cache, det.feature_cache = caches[name]
            return fn(batch)

        return run

    shipped_history_windows = det.history_windows
    shipped_structure = det.structure
    shipped_dtype = det.encoder.autocast_dtype

    def before(dtype=None):
        # What shipped until issue 11 ran its backbone in float32 on a CPU (dtype None).
        def run(batch: Sequence[InferenceLog]) -> list[list[Finding]]:
            det.encoder.autocast_dtype = dtype
            return legacy_detect(det, batch)

        return run

    variants = {"before": with_cache("before", before())}
    dtype_names = list(filter(None, args.dtypes.split(",")))
    for dtype_name in dtype_names:  # the same readings as before in another dtype: the like-for-like cost
        name = f"before (dtype={dtype_name})"
        variants[name] = with_cache(name, before(cpu_dtype(dtype_name)))

    def after(mode: str, history_windows: int = shipped_history_windows, structure: str = shipped_structure,
              dtype=shipped_dtype):
        def run(batch: Sequence[InferenceLog]) -> list[list[Finding]]:
            det.sentence_pass = mode
            det.history_windows = history_windows
            det.structure = structure
            det.encoder.autocast_dtype = dtype
            return det.detect(batch)

        return run

    for mode in modes:
        name = f"after (sentence_pass={mode})"
        variants[name] = with_cache(name, after(mode), args.feature_cache_size)
    for structure in filter(None, args.structures.split(",")):
        name = f"after (sentence_pass={modes[0]}, structure={structure})"
        variants[name] = with_cache(name, after(modes[0], structure=structure), args.feature_cache_size)
    shipped = f"after (sentence_pass={modes[0]})"
    compared = []  # variants compared record by record with the shipped one
    for dtype_name in dtype_names:
        name = f"after (sentence_pass={modes[0]}, dtype={dtype_name})"
        variants[name] = with_cache(name, after(modes[0], dtype=cpu_dtype(dtype_name)), args.feature_cache_size)
        compared.append(name)
    if args.feature_cache_size:
        name = f"after (sentence_pass={modes[0]}, no window-feature cache)"
        variants[name] = with_cache(name, after(modes[0]), 0)
    if shipped_history_windows:
        # The shipped history gate against reading every window of earlier assistant turns.
        name = f"after (sentence_pass={modes[0]}, history_windows=0)"
        variants[name] = with_cache(name, after(modes[0], 0), args.feature_cache_size)
    # Tokens through the backbone per variant: what the time is spent on.
    tokens = dict.fromkeys(variants, 0)
    features = det.encoder.features
    current = [""]

    def counting_features(windows, batch_size=32):
        tokens[current[0]] += sum(len(w.input_ids) for w in windows)
        return features(windows, batch_size=batch_size)

    det.encoder.features = counting_features
    seconds = dict.fromkeys(variants, 0.0)
    flagged = dict.fromkeys(variants, 0)
    outcomes: dict[str, list[tuple[bool, frozenset]]] = {name: [] for name in [shipped, *compared]}
    for b in range(0, len(records), args.batch):
        batch = records[b : b + args.batch]
        for name, run in variants.items():
            current[0] = name
            t0 = time.perf_counter()
            results = run(batch)
            seconds[name] += time.perf_counter() - t0
            flagged[name] += sum(bool(r) for r in results)
            if name in outcomes:  # flagged, and the harm categories (jailbreak is not a harm)
                outcomes[name].extend((bool(r), frozenset(f.category.value for f in r if f.category.value != "jailbreak"))
                                      for r in results)
    det.take_truncated()

    shape = ", with earlier turns' records" if args.conversations else ""
    table = Table(title=f"transformer detector on {len(records)} simulated records (seed 11{shape}), cache {args.cache_size}, "
                        f"feature cache {args.feature_cache_size}, batch {args.batch}, window batch {det.batch_size}")
    for col in ("variant", "records/s", "vs before", "backbone tokens", "flagged records"):
        table.add_column(col, no_wrap=True)
    base = len(records) / seconds["before"]
    for name in variants:
        rate = len(records) / seconds[name]
        table.add_row(name, f"{rate:.2f}", f"{rate / base:.2f}x", f"{tokens[name]:,}", str(flagged[name]))
    Console().print(table)
    for name in compared:
        differ = [i for i, (a, b) in enumerate(zip(outcomes[shipped], outcomes[name], strict=True)) if a != b]
        print(f"{name}: {len(differ)} of {len(records)} records differ from {shipped!r} in flagged or harm "
              f"categories (indices {differ[:20]})")
    print(f"threads={os.environ.get('OMP_NUM_THREADS', os.cpu_count())} load={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
