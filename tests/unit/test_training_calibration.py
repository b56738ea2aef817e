"""Calibration and threshold choice: the numbers a reviewer trusts come from here."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.training.calibrate import (
    MIN_THRESHOLD,
    PRF,
    calibrate_label,
    choose_threshold,
    fit_platt,
)


def test_threshold_is_the_lowest_that_keeps_the_stated_precision() -> None:
    # Scores high -> low: 4 positives, then a negative, a positive, then negatives.
    scores = np.array([0.99, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4])
    labels = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0])
    choice = choose_threshold(scores, labels, target_precision=0.8, max_fpr=1.0)
    # Cutting at 0.7 keeps 5/6 = 0.83 precision with 5/5 recall; 0.6 would drop to 0.71.
    assert choice.threshold == pytest.approx(0.7)
    assert choice.met_target and choice.recall == 1.0 and choice.precision >= 0.8
    strict = choose_threshold(scores, labels, target_precision=1.0, max_fpr=1.0)
    assert strict.threshold == pytest.approx(0.85) and strict.recall == pytest.approx(0.8)


def test_threshold_also_caps_the_false_positive_rate() -> None:
    # 100 negatives, 3 of them scoring above most positives: precision 0.8 would allow a cut
    # at 0.5 (3 FP of 100 = 3% FPR); a 1% cap forces the cut above the top negatives.
    scores = np.r_[[0.95, 0.9], [0.85, 0.8, 0.75], np.linspace(0.7, 0.5, 12), np.linspace(0.4, 0.01, 97)]
    labels = np.r_[[1, 1], [0, 0, 0], np.ones(12, dtype=int), np.zeros(97, dtype=int)]
    loose = choose_threshold(scores, labels, target_precision=0.8, max_fpr=1.0)
    capped = choose_threshold(scores, labels, target_precision=0.8, max_fpr=0.01)
    assert loose.threshold == pytest.approx(0.5)
    assert capped.threshold == pytest.approx(0.9)


def test_unreachable_precision_is_reported_not_hidden() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    labels = np.array([0, 1, 0, 1])
    choice = choose_threshold(scores, labels, target_precision=0.95)
    assert not choice.met_target
    assert choice.threshold >= MIN_THRESHOLD


def test_threshold_never_goes_below_the_floor() -> None:
    scores = np.array([0.2, 0.1, 0.05])
    labels = np.array([1, 1, 0])
    assert choose_threshold(scores, labels).threshold >= MIN_THRESHOLD


def test_platt_scaling_matches_observed_frequencies() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 4000)
    # True probability is sigmoid(0.5 * logit - 1): the raw logit is overconfident.
    labels = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * logits - 1)))).astype(int)
    scaler = fit_platt(logits, labels)
    assert scaler(np.array([2.0]))[0] < 0.6  # raw sigmoid(2) = 0.88 would overstate it
    assert scaler(np.array([8.0]))[0] > 0.9
    assert scaler(np.array([-4.0]))[0] < 0.1
    assert np.all(np.diff(scaler(np.linspace(-5, 5, 11))) > 0)  # monotone


def test_single_class_keeps_raw_sigmoid() -> None:
    scaler = fit_platt(np.array([1.0, 2.0]), np.array([0, 0]))
    assert (scaler.a, scaler.b) == (1.0, 0.0)


def test_calibrate_label_records_what_the_card_reports() -> None:
    logits = np.array([-3.0, -2.0, -1.0, 0.5, 2.0, 3.0, 4.0])
    labels = np.array([0, 0, 0, 1, 1, 1, 1])
    cal = calibrate_label(logits, labels, target_precision=0.9)
    assert cal.validation_positives == 4 and cal.target_precision == 0.9
    assert cal.validation_precision is not None and cal.validation_precision >= 0.9


def test_prf() -> None:
    m = PRF.of(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    assert (m.precision, m.recall, m.f1, m.support, m.predicted) == (0.5, 0.5, 0.5, 2, 2)
    assert PRF.of(np.zeros(3, bool), np.zeros(3, bool)).precision is None


def test_labels_with_too_few_positives_keep_the_raw_head() -> None:
    from detectors.training.calibrate import MIN_POSITIVES

    logits = np.linspace(-5, 5, 200)
    labels = np.zeros(200, dtype=int)
    labels[-(MIN_POSITIVES - 1) :] = 1
    cal = calibrate_label(logits, labels)
    assert (cal.a, cal.b) == (1.0, 0.0)
    # Threshold keeps at most 1% of the validation negatives above it, and is at least 0.5.
    negatives = 1 / (1 + np.exp(-logits[labels == 0]))
    assert cal.threshold >= 0.5
    assert (negatives >= cal.threshold).mean() <= 0.01
