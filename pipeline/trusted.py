"""System prompts the operator trusts: not screened (``detectors.trusted_system_prompts``).

Every part of a record is screened (issue 11), the system prompt included, because on an open API
the caller writes it and a jailbreak can hide there. But a deployment's own system prompt comes
with every one of its requests, so a detector that misreads it flags them all: the shipped
detector flags 12 of the 40 ordinary operator prompts of ``tests/fixtures/system_prompts_benign.txt``
as jailbreaks (docs/model-card.md). An operator lists the prompts it wrote. Wherever one of them
appears in a system (or developer) message, whitespace aside, it is cut out of the copy the
detectors read, and what is left of the message is screened: a date line or a user's name that a
template adds, and anything a caller appends or inserts. A message that is nothing but trusted
text is not screened at all. Every other part is screened as before, and a prompt with one
character changed is not trusted text: trust is for the exact text, not for a deployment.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

from pipeline.schemas import InferenceLog, PartKind


def normalise(text: str) -> str:
    """``text`` with every run of whitespace one space and none at the ends."""
    return " ".join(text.split())


class TrustedPrompts:
    """The operator's system prompts, compared whitespace aside."""

    def __init__(self, prompts: Iterable[str] = ()) -> None:
        texts = {normalise(p) for p in prompts}
        if "" in texts:
            raise ValueError("a trusted system prompt is empty")
        # Longest first, so a trusted prompt that holds a shorter one is cut out whole; only where
        # it starts and ends a word, so a short one never cuts letters out of a caller's words.
        self._patterns = tuple(re.compile(rf"(?<!\w){re.escape(t)}(?!\w)") for t in sorted(texts, key=len, reverse=True))

    def __bool__(self) -> bool:
        return bool(self._patterns)

    def untrusted_rest(self, text: str) -> str | None:
        """What of a system message's ``text`` is not trusted text ("" when nothing is), or None
        when no trusted prompt is in it. The pieces around a cut are joined by a line break."""
        rest = normalise(text)
        found = False
        for trusted in self._patterns:
            pieces = trusted.split(rest)
            if len(pieces) > 1:
                found = True
                rest = "\n".join(piece.strip() for piece in pieces if piece.strip())
        return rest if found else None

    def screened(self, log: InferenceLog) -> tuple[InferenceLog, Counter[tuple[str, str]]]:
        """What the detectors read of ``log`` (``log`` itself when nothing in it is trusted), and
        how many messages had trusted text cut out, by role and by what was left ("nothing" or
        "screened"). Message indices stay as they are, so a finding's ``location`` still points
        into the original record."""
        if not self._patterns or not log.messages:
            return log, Counter()
        cut: Counter[tuple[str, str]] = Counter()
        messages = list(log.messages)
        for i, m in enumerate(messages):
            if m.kind is not PartKind.SYSTEM or m.content is None:
                continue
            rest = self.untrusted_rest(m.text)
            if rest is None:
                continue
            messages[i] = m.model_copy(update={"content": rest or None})
            cut[(m.role.lower(), "screened" if rest else "nothing")] += 1
        if not cut:
            return log, cut
        return log.model_copy(update={"messages": messages}), cut
