"""How many ordinary operator system prompts the detectors flag.

    HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_system_prompts.py [--detectors transformer_routed rules] [--user-turn TEXT]

A deployment sends its system prompt with every request, so one that a detector misreads flags
every request of that deployment. ``tests/fixtures/system_prompts_benign.txt`` holds 40 prompts
we wrote as operators write them (assistants for a bank, a clinic, a SOC; translators, JSON
APIs, tutors), none harmful. Each is scored as the system message of a record whose user turn
and completion are harmless greetings; the table lists every prompt with a finding, the part it
points at, its category and score. What an operator can do about it: list its prompts in
``detectors.trusted_system_prompts`` (pipeline/trusted.py).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.schemas import InferenceLog  # noqa: E402
from pipeline.scoring import Scorer  # noqa: E402
from pipeline.settings import load_settings  # noqa: E402

PROMPTS = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "system_prompts_benign.txt"


GREETING = "Hello, can you help me with something today?"


def records(prompts: list[str], user_turn: str = GREETING) -> list[InferenceLog]:
    return [
        InferenceLog.model_validate({
            "schema": "inference-log/v1", "request_id": f"system-prompt-{i}", "timestamp": "2026-12-05T12:00:00Z",
            "model": "m", "messages": [{"role": "system", "content": prompt},
                                       {"role": "user", "content": user_turn}],
            "completion": "Of course! What do you need help with?",
        })
        for i, prompt in enumerate(prompts)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--detectors", nargs="+", default=None, help="detectors, each scored on its own (default: the settings')")
    parser.add_argument("--user-turn", default=GREETING,
                        help="the user's message after each prompt; in another language the routed default also asks E5")
    args = parser.parse_args()
    settings = load_settings(None)
    prompts = [line for line in PROMPTS.read_text(encoding="utf-8").splitlines() if line.strip()]
    console = Console()
    for name in args.detectors or [",".join(settings.detectors.enabled)]:
        detectors = settings.detectors.model_copy(update={"enabled": name.split(",")})
        scorer = Scorer.from_settings(settings.model_copy(update={"detectors": detectors}))
        with console.status(f"scoring {len(prompts)} system prompts with {name}"):
            verdicts = scorer.score(records(prompts, args.user_turn))
        table = Table(title=f"{name}: {sum(v.flagged for v in verdicts)} of {len(prompts)} benign system prompts flagged")
        for column in ("prompt", "part", "category", "score", "artifact"):
            table.add_column(column, overflow="fold")
        for prompt, verdict in zip(prompts, verdicts, strict=True):
            for f in verdict.findings:
                table.add_row(prompt[:70] + ("..." if len(prompt) > 70 else ""), f.part.value if f.part else "-",
                              f.category.value, f"{f.score:.2f}", f.detector_version.split("+")[0])
        console.print(table)
        scorer.close()


if __name__ == "__main__":
    main()
