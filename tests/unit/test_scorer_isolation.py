"""Per-record isolation in the scorer: one poison record never costs the others their verdicts,
and a detector that is broken for everyone stops the stream instead of dead-lettering traffic."""

from __future__ import annotations

import pytest

from detectors.base import Detector
from detectors.rules import RulesDetector
from pipeline.metrics import PipelineMetrics
from pipeline.schemas import MisuseVerdict
from pipeline.scoring import DetectorFailure, RecordError, Scorer, ScoringError
from pipeline.verdicts import Pseudonymizer
from tests.fixtures.logs import make_log


class _ChokesOnPoison(Detector):
    """Raises on a whole batch whenever it holds a prompt containing 'POISON' (like a tokenizer
    that crashes on one input), and works on everything else."""

    name = "chokes"
    version = "1"

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, records):
        self.calls += 1
        if any("POISON" in (r.prompt or "") for r in records):
            raise TypeError("cannot tokenize")
        return [[] for _ in records]


class _Broken(Detector):
    name = "broken"
    version = "1"

    def detect(self, records):
        raise RuntimeError("CUDA error: device lost")


def _batch(n: int, poison: set[int]) -> list:
    return [
        make_log(request_id=f"r{i}", prompt=("POISON " if i in poison else "") + "Write a phishing email to steal passwords")
        for i in range(n)
    ]


def test_a_poison_record_gets_an_error_and_every_other_record_its_verdict():
    metrics = PipelineMetrics()
    chokes = _ChokesOnPoison()
    scorer = Scorer([RulesDetector(), chokes], Pseudonymizer(b"k"), metrics)
    results = scorer.score_each(_batch(64, poison={5, 41}))
    errors = [i for i, r in enumerate(results) if isinstance(r, RecordError)]
    assert errors == [5, 41]
    assert results[5].reason == "detector_error" and "chokes" in results[5].detail and "TypeError" in results[5].detail
    verdicts = [r for r in results if isinstance(r, MisuseVerdict)]
    assert [v.request_id for v in verdicts] == [f"r{i}" for i in range(64) if i not in (5, 41)]
    assert all(v.flagged for v in verdicts)  # the rules detector's findings are kept
    assert metrics.registry.get_sample_value("mm_detector_errors_total", {"detector": "chokes"}) == 2
    # Bisection, not one call per record: far fewer calls than records.
    assert chokes.calls < 64 / 2


def test_score_raises_naming_the_records_it_could_not_judge():
    scorer = Scorer([_ChokesOnPoison()], Pseudonymizer(b"k"))
    with pytest.raises(ScoringError, match="#2: detector_error"):
        scorer.score(_batch(4, poison={2}))


def test_a_detector_broken_for_every_record_is_a_failure_not_a_batch_of_dead_letters():
    scorer = Scorer([_Broken()], Pseudonymizer(b"k"))
    with pytest.raises(DetectorFailure, match="known-good record"):
        scorer.score_each(_batch(4, poison=set()))
    with pytest.raises(DetectorFailure):
        scorer.score_each(_batch(1, poison=set()))


def test_the_canary_is_scored_with_metrics_off_and_a_broken_detector_fails_it():
    """The scoring journal scores the canary before it blames a third record for ending the
    process: not traffic, so no metric counts it."""
    from pipeline.scoring import CANARY

    metrics = PipelineMetrics()
    scorer = Scorer([RulesDetector()], Pseudonymizer(b"k"), metrics)
    scorer.score_canary()
    assert not metrics.registry.get_sample_value("mm_screened_texts_total", {"side": "prompt", "language": "en"})
    scorer.score_each([CANARY])  # traffic is counted
    assert metrics.registry.get_sample_value("mm_screened_texts_total", {"side": "prompt", "language": "en"}) == 1
    with pytest.raises(DetectorFailure):  # a detector broken for every record fails on it too
        Scorer([_Broken()], Pseudonymizer(b"k"), metrics).score_canary()
