"""Recall cost of the history gate (issue 11): a cheap first pass picks which windows of an
earlier assistant turn the transformer reads.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_history_gate.py [--gate-dir DIR] [--prompt-positives 300] [--completion-positives 100]

The rule that picks the shipped ``history_windows`` (written with this script, before it was
run): the smallest N of 1, 2, 3 whose recall loss on the insertion set is at most 1 point;
0 (no gate) if none is.

Insertion set (allowed data only, nothing reserved): each positive of the held-out validation
sources (``data.fold_of == 0``: prompt-side misuse, and harmful completions, i.e. the content a
forged or earlier assistant turn could carry) and each hand-written cyber request of
tests/fixtures/obfuscation.py is put at a random sentence boundary inside a long benign
assistant reply (simulate's ShareGPT replies of at least 3 windows, seed 23; the throughput bench
uses seed 11), as the earlier assistant turn of a three-message conversation. A positive counts
as found when the record has a finding from that assistant turn.

The ranker is the gate artifact (``python -m detectors.training.firststage gate``), fitted
without the held-out sources, so these positives are new to it; the transformer's heads did see
them in training (v1.0.0 was fitted on every allowed source), which makes "found (gate off)"
optimistic but not the loss, a difference between two readings by the same heads.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

CAPS = (1, 2, 3)


def _stable(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


def carriers(tokenizer, window, n: int = 400, seed: int = 23) -> list[str]:
    """Long benign assistant replies (at least 3 windows) from simulate."""
    from detectors.training.modeling import make_windows
    from pipeline.schemas import PartKind
    from pipeline.simulate import simulate

    out: dict[str, None] = {}
    for r in simulate(n, seed=seed, end=datetime(2026, 1, 2, tzinfo=UTC)):
        for p in r.log.screened_parts():
            if p.kind is PartKind.ASSISTANT and len(make_windows(tokenizer, p.text, window)) >= 3:
                out[p.text] = None
    return list(out)


def insert(carrier: str, payload: str, rng: random.Random) -> str:
    """``payload`` at a random sentence boundary of ``carrier``."""
    cuts = [i + 2 for i in range(len(carrier) - 2) if carrier[i] in ".!?" and carrier[i + 1] in " \n"]
    at = rng.choice(cuts) if cuts else len(carrier)
    return f"{carrier[:at]}{payload} {carrier[at:]}"


def insertion_set(tokenizer, window, *, offset: int, prompt_positives: int, completion_positives: int,
                  host_seed: int, insert_seed: int):
    """(payloads as (group, text), logs with each payload inside a benign host reply, the benign
    host logs, the hosts): the insertion set described in this module's docstring."""
    from detectors.training.data import assemble, fold_of
    from detectors.training.firststage import is_positive
    from pipeline.schemas import Side
    from tests.fixtures.logs import make_log
    from tests.fixtures.obfuscation import HARMFUL_CYBER

    dataset = assemble(seed=1234)
    examples = list(dataset.validation) + list(dataset.train)
    held = [e for e in examples if fold_of(e) == 0 and is_positive(e)]
    prompts = sorted((e for e in held if e.side is Side.PROMPT), key=lambda e: _stable(e.text))[offset : offset + prompt_positives]
    completions = sorted((e for e in held if e.side is Side.COMPLETION), key=lambda e: _stable(e.text))[offset : offset + completion_positives]
    payloads = [("hand-written cyber", t) for t in HARMFUL_CYBER] if offset == 0 else []
    payloads += [(f"held-out prompt ({e.labels[0]})", e.text) for e in prompts]
    payloads += [("held-out harmful completion", e.text) for e in completions]

    hosts = carriers(tokenizer, window, seed=host_seed)
    rng = random.Random(insert_seed)

    def conversation(request_id: str, turn: str):
        return make_log(request_id=request_id, prompt=None, messages=[
            {"role": "user", "content": "Can you help me with this?"},
            {"role": "assistant", "content": turn},
            {"role": "user", "content": "Thanks, please go on."},
        ])

    logs = [conversation(f"gate-{i}", insert(hosts[i % len(hosts)], payload.strip(), rng)) for i, (_, payload) in enumerate(payloads)]
    benign = [conversation(f"benign-{i}", h) for i, h in enumerate(hosts[: len(payloads)])]
    return payloads, logs, benign, hosts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompt-positives", type=int, default=300)
    parser.add_argument("--completion-positives", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--offset", type=int, default=0, help="skip this many held-out positives per side (a fresh set)")
    parser.add_argument("--host-seed", type=int, default=23, help="simulate seed of the benign host replies")
    parser.add_argument("--insert-seed", type=int, default=7, help="seed of the insertion points")
    parser.add_argument("--gate-dir", type=Path, default=Path.home() / ".cache" / "misuse-monitor" / "runs" / "history-gate")
    args = parser.parse_args()

    import numpy as np
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoTokenizer

    from detectors.base import DetectorConfig
    from detectors.training.modeling import backbone_path
    from detectors.transformer import TransformerDetector
    from pipeline.schemas import PartKind

    started = time.monotonic()
    det = TransformerDetector.create(
        DetectorConfig(options={"history_windows": "1", "history_gate_dir": str(args.gate_dir), "feature_cache_size": "200000"})
    )
    tok = AutoTokenizer.from_pretrained(str(backbone_path()), local_files_only=True)
    payloads, logs, benign, hosts = insertion_set(
        tok, det.window, offset=args.offset, prompt_positives=args.prompt_positives,
        completion_positives=args.completion_positives, host_seed=args.host_seed, insert_seed=args.insert_seed,
    )

    def found(batch_logs) -> list[bool]:
        out = []
        for b in range(0, len(batch_logs), args.batch):
            for fs in det.detect(batch_logs[b : b + args.batch]):
                out.append(any(f.part is PartKind.ASSISTANT for f in fs))
        return out

    det.history_windows = 0
    full = np.array(found(logs))
    full_benign = np.array(found(benign))
    det.take_first_pass()
    groups = np.array([g for g, _ in payloads])
    table = Table(title=f"history gate: {len(logs)} positives inside long benign assistant turns ({len(hosts)} hosts)")
    for col in ("history_windows", "found (gate off)", "found (gate on)", "recall loss", "benign turns flagged off / on", "windows cleared"):
        table.add_column(col)
    losses, per_cap = {}, {}
    for cap in CAPS:
        det.history_windows = cap
        gated = per_cap[cap] = np.array(found(logs))
        counts = det.take_first_pass()
        gated_benign = np.array(found(benign))
        det.take_first_pass()
        loss = losses[cap] = (full.sum() - gated.sum()) / len(logs)
        cleared = counts.get("cleared", 0) / max(1, counts.get("cleared", 0) + counts.get("escalated", 0))
        table.add_row(str(cap), f"{full.mean():.3f}", f"{gated.mean():.3f}", f"{100 * loss:.1f} pts",
                      f"{full_benign.sum()} / {gated_benign.sum()}", f"{cleared:.0%}")
    Console().print(table)
    by_group = Table(title="found by payload group: gate off, and on at each history_windows")
    for col in ("group", "n", "off", *(f"N={c}" for c in CAPS)):
        by_group.add_column(col)
    for g in sorted(set(groups)):
        m = groups == g
        by_group.add_row(g, str(int(m.sum())), f"{full[m].mean():.2f}", *(f"{per_cap[c][m].mean():.2f}" for c in CAPS))
    Console().print(by_group)
    chosen = next((c for c in CAPS if losses[c] <= 0.01), 0)
    print(f"rule: smallest N with held-out recall loss <= 1 point -> history_windows = {chosen}")
    print(f"{time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
