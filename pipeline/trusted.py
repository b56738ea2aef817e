"""System prompts the operator trusts: not screened (``detectors.trusted_system_prompts``).

Every part of a record is screened (issue 11), the system prompt included, because on an open API
the caller writes it and a jailbreak can hide there. But a deployment's own system prompt comes
with every one of its requests, so a detector that misreads it flags them all: the shipped
detector flags 12 of the 40 ordinary operator prompts of ``tests/fixtures/system_prompts_benign.txt``
as jailbreaks (docs/model-card.md). An operator lists the prompts it wrote; a system (or
developer) message whose text is one of them, whitespace aside, is blanked in the copy the
detectors read, so no detector screens it and no finding points at it. Anything else in such a
message (reasoning, tool calls) and every other part are still screened, and a prompt with one
character added or changed is screened in full: trust is for the exact text, not for a deployment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pipeline.schemas import InferenceLog, PartKind


def normalise(text: str) -> str:
    """``text`` with every run of whitespace one space and none at the ends."""
    return " ".join(text.split())


class TrustedPrompts:
    """The operator's system prompts, compared whitespace aside."""

    def __init__(self, prompts: Iterable[str] = ()) -> None:
        self._texts = frozenset(normalise(p) for p in prompts)
        if "" in self._texts:
            raise ValueError("a trusted system prompt is empty")

    def __bool__(self) -> bool:
        return bool(self._texts)

    def screened(self, log: InferenceLog) -> tuple[InferenceLog, Counter[str]]:
        """What the detectors read of ``log`` (``log`` itself when nothing in it is trusted), and
        how many trusted messages were left out, by role. Message indices stay as they are, so a
        finding's ``location`` still points into the original record."""
        if not self._texts or not log.messages:
            return log, Counter()
        blanked: Counter[str] = Counter()
        messages = list(log.messages)
        for i, m in enumerate(messages):
            if m.kind is PartKind.SYSTEM and m.content is not None and normalise(m.text) in self._texts:
                messages[i] = m.model_copy(update={"content": None})
                blanked[m.role.lower()] += 1
        if not blanked:
            return log, blanked
        return log.model_copy(update={"messages": messages}), blanked
