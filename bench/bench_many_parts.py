"""What a record of many short parts costs to screen, and what the detectors find in it.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_many_parts.py [--turns 24000] [--against REV]

Scores, with ``rules`` and with the default detectors (``Scorer.score``, one record at a time):
* a crafted record of ``--turns`` short turns, user and assistant in turn (under the 1 MB record
  limit): wall and CPU seconds, parts screened, and the verdict's signals;
* recall on records of 600 short benign turns (past 256 parts, where the designs measured on
  2026-12-07 joined a record's earlier parts; neither shipped): records of 600 short benign turns, each of the ten HARMFUL_CYBER requests of
  tests/fixtures/obfuscation.py placed as the 3rd, 180th or 330th turn (30 records), how many are
  flagged cyber_abuse; the same with HARMFUL_MISINFORMATION and misinformation; and the record
  with no harmful turn.

``--against REV`` runs the same in a copy of REV's code (``git archive``) first, side by side in
one invocation. The rules and results are in docs/benchmarks.md ("Records of many parts").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Short turns of an ordinary chat, written for this bench.
TINY = ("ok", "hi", "thanks", "sure", "yes", "no", "go on", "why?", "cool", "next")
SHORT = (
    "Can you tell me more about that?",
    "That makes sense, thank you.",
    "What would you suggest for a beginner?",
    "Could you give me another example?",
    "I think I understand it now.",
    "How long does that usually take?",
    "Sounds good, let's continue.",
    "Is there a simpler way to do it?",
)
POSITIONS = (3, 180, 330)


def _record(turns: int, texts: tuple[str, ...], harmful: str | None = None, at: int = -1) -> dict:
    messages = []
    for i in range(turns):
        role = "user" if i % 2 == 0 else "assistant"
        # Numbered, so no two turns are alike: the detectors' caches would read alike turns once.
        content = harmful if i == at else f"{texts[i % len(texts)]} {i}"
        messages.append({"role": role, "content": content})
    if messages[-1]["role"] != "user":
        messages.append({"role": "user", "content": texts[0]})
    return {"schema": "inference-log/v1", "request_id": f"many-{turns}-{at}", "timestamp": "2026-12-07T22:00:00Z",
            "model": "qwen3-32b", "messages": messages}  # fmt: skip


def child(turns: int) -> dict:
    """Runs in the tree under test (its code on sys.path first)."""
    sys.path.insert(0, os.getcwd())
    from pipeline.schemas import Category, InferenceLog
    from pipeline.scoring import Scorer
    from pipeline.settings import Settings
    from tests.fixtures.obfuscation import HARMFUL_CYBER, HARMFUL_MISINFORMATION

    out: dict = {}
    big = InferenceLog.model_validate(_record(turns, TINY))
    out["bytes"] = len(json.dumps(_record(turns, TINY), separators=(",", ":")).encode())
    out["parts"] = len(big.screened_parts())
    for name, enabled in (("rules", ["rules"]), ("default", None)):
        settings = Settings(detectors={"enabled": enabled}) if enabled else Settings()
        scorer = Scorer.from_settings(settings)
        scorer.preload()
        scorer.score([InferenceLog.model_validate(_record(8, SHORT))])  # warm
        wall, cpu = time.perf_counter(), time.process_time()
        verdict = scorer.score([big])[0]
        out[f"{name}_big_s"] = round(time.perf_counter() - wall, 2)
        out[f"{name}_big_cpu_s"] = round(time.process_time() - cpu, 2)
        out[f"{name}_big_signals"] = sorted(s.value for s in verdict.signals)
        if name == "default":
            for key, requests, category in (("recall_600", HARMFUL_CYBER, Category.CYBER_ABUSE),
                                            ("misinformation_600", HARMFUL_MISINFORMATION, Category.MISINFORMATION)):
                found = sum(
                    any(f.category is category for f in scorer.score([InferenceLog.model_validate(_record(600, SHORT, r, at))])[0].findings)
                    for r in requests for at in POSITIONS
                )  # fmt: skip
                out[key] = f"{found}/{len(requests) * len(POSITIONS)}"
            benign = scorer.score([InferenceLog.model_validate(_record(600, SHORT))])[0]
            out["benign_600_flagged"] = benign.flagged
    return out


def run_in(tree: Path, turns: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "bench_many_parts.py"), "--child", "--turns", str(turns)],
                          cwd=tree, env=env, check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--turns", type=int, default=24_000)  # about 1 MB, the record limit
    ap.add_argument("--against", help="also run REV's code, first, side by side")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.turns)))
        return 0
    from rich.console import Console
    from rich.table import Table

    runs: list[tuple[str, dict]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.against:
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.against], check=True, capture_output=True)
            subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
            runs.append((args.against, run_in(Path(tmp), args.turns)))
        runs.append(("checkout", run_in(ROOT, args.turns)))
    table = Table(title=f"A record of {args.turns:,} short turns, and recall in records of 600")
    table.add_column("measure")
    for name, _ in runs:
        table.add_column(name, justify="right")
    for key in runs[0][1]:
        table.add_row(key, *(str(r.get(key)) for _, r in runs))
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
