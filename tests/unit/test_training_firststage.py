"""First-stage feasibility measurement: the threshold keeps the stated share of positives."""

from __future__ import annotations

import numpy as np

from detectors.training.data import Example
from detectors.training.firststage import is_positive, recall_threshold
from pipeline.schemas import Side


def test_recall_threshold_keeps_at_least_the_target_share() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 7, 100, 946):
        logits = rng.normal(size=n)
        for target in (0.9, 0.95, 0.99, 1.0):
            t = recall_threshold(logits, target)
            kept = float((logits >= t).mean())
            assert kept >= target - 1e-12
            # and it is the highest such threshold: any higher logit would keep too few
            higher = logits[logits > t]
            if higher.size:
                assert float((logits >= higher.min()).mean()) < target


def test_refusals_are_not_positives() -> None:
    assert not is_positive(Example("I can't help with that.", Side.COMPLETION, ("refusal",), None, "s"))
    assert is_positive(Example("x", Side.COMPLETION, ("cyber_abuse",), None, "s"))
    assert not is_positive(Example("hello", Side.PROMPT, (), None, "s"))
