"""Recall cost of less window overlap at serving (issue 11 throughput): the transformer's
windows at stride 96 (the artifact's: 32 tokens of overlap), 112 and 126 (none).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_window_stride.py [--strides 96 112 126] [--offset 0]

The rule that decides the serving stride was written before this script ran (docs/benchmarks.md,
"Window overlap at serving"). The insertion set is bench/bench_history_gate.py's (allowed data only,
nothing reserved): held-out positives and the hand-written cyber requests put at a random
sentence of long benign assistant replies, as the earlier assistant turn of a three-message
conversation; a request hidden across a window boundary is what overlap protects. Reported per
stride: payloads found in that turn, found there with a harm category, the benign host turns
(the same replies without a payload) flagged, and the backbone tokens read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench.bench_history_gate import insertion_set  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strides", type=int, nargs="+", default=[96, 112, 126])
    parser.add_argument("--prompt-positives", type=int, default=300)
    parser.add_argument("--completion-positives", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--offset", type=int, default=0, help="skip this many held-out positives per side (a fresh set)")
    parser.add_argument("--host-seed", type=int, default=23)
    parser.add_argument("--insert-seed", type=int, default=7)
    args = parser.parse_args()

    from rich.console import Console
    from rich.progress import track
    from rich.table import Table
    from transformers import AutoTokenizer

    from detectors.base import DetectorConfig
    from detectors.training.modeling import backbone_path, make_windows
    from detectors.transformer import TransformerDetector
    from pipeline.schemas import Category, PartKind

    started = time.monotonic()
    # No score cache: each stride must score every text itself.
    det = TransformerDetector.create(DetectorConfig(options={"cache_size": "0", "feature_cache_size": "0"}))
    artifact_window = det.window
    tok = AutoTokenizer.from_pretrained(str(backbone_path()), local_files_only=True)
    _, logs, benign, hosts = insertion_set(
        tok, artifact_window, offset=args.offset, prompt_positives=args.prompt_positives,
        completion_positives=args.completion_positives, host_seed=args.host_seed, insert_seed=args.insert_seed,
    )

    table = Table(title=f"window stride: {len(logs)} payloads inside long benign assistant turns ({len(hosts)} hosts, offset {args.offset})")
    for col in ("stride", "found in the turn", "found with a harm category", "benign turns flagged", "backbone tokens", "vs stride 96"):
        table.add_column(col)
    base_tokens = None
    for stride in args.strides:
        det.window = replace(artifact_window, stride=stride)
        found = harm = flagged = 0
        for b in track(range(0, len(logs), args.batch), description=f"stride {stride}", transient=True):
            for fs in det.detect(logs[b : b + args.batch]):
                turn = [f for f in fs if f.part is PartKind.ASSISTANT]
                found += bool(turn)
                harm += any(f.category is not Category.JAILBREAK for f in turn)
        for b in range(0, len(benign), args.batch):
            flagged += sum(any(f.part is PartKind.ASSISTANT for f in fs) for fs in det.detect(benign[b : b + args.batch]))
        tokens = sum(len(w.input_ids) for lg in logs + benign for part in lg.screened_parts()
                     for w in make_windows(tok, part.text, det.window))
        base_tokens = base_tokens or tokens
        table.add_row(str(stride), f"{found / len(logs):.3f} ({found})", f"{harm / len(logs):.3f} ({harm})",
                      f"{flagged} of {len(benign)}", f"{tokens:,}", f"{tokens / base_tokens:.2f}x")
    Console().print(table)
    print("tokens: plain readings of every part, no sentence pass (tokenizer only)")
    print(f"{time.monotonic() - started:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
