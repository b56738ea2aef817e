"""Calibration (Platt scaling) and per-label thresholds for a stated precision.

Both are fitted on out-of-fold logits (train.py: each source scored by models that never saw it):
a score of 0.8 should mean "about 80% of such texts from an unseen source are positive",
and a threshold should keep that precision on data unlike the training sources.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelCalibration:
    """Platt scaling (sigmoid(a*logit + b)) and the pinned decision threshold of one label."""

    a: float
    b: float
    threshold: float
    target_precision: float
    validation_precision: float | None
    validation_recall: float | None
    validation_positives: int


DEFAULT_TARGET_PRECISION = 0.90
# Below this many validation positives a label is not calibrated: the Platt fit would mostly
# encode the validation set's base rate. Such labels keep the head's own sigmoid, and their
# threshold is the higher of 0.5 and the score that keeps the validation false-positive
# rate at FALLBACK_MAX_FPR (precision cannot be estimated from a handful of positives).
MIN_POSITIVES = 20
FALLBACK_MAX_FPR = 0.01
# Every threshold also keeps the validation false-positive rate of its label at or below
# this: the issue asks for at most 3% flagged benign prompts, a prompt can be flagged by any
# of four labels, and a pooled precision target alone is dominated by easy positives
# (AdvBench) and let thresholds fall far enough to flag 20% of benign prompts (v1.1).
MAX_FPR = 0.01
# Never pick a threshold below this: a nearly-zero threshold on a label with few
# validation positives would flag most traffic.
MIN_THRESHOLD = 0.30


@dataclass(frozen=True)
class PlattScaler:
    a: float
    b: float

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(logits, dtype=np.float64) + self.b)))


def fit_platt(logits: np.ndarray, labels: np.ndarray) -> PlattScaler:
    """Fit sigmoid(a*logit + b) by logistic regression on one feature.

    With a single class present (a label with no validation positives) the raw sigmoid
    is kept: there is nothing to calibrate against.
    """
    from sklearn.linear_model import LogisticRegression  # training-time only

    logits = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min(initial=0) == labels.max(initial=0) or len(np.unique(labels)) < 2:
        return PlattScaler(1.0, 0.0)
    model = LogisticRegression(C=1e4, solver="lbfgs", max_iter=1000)
    model.fit(logits, labels)
    a = float(model.coef_[0, 0])
    if a <= 0:  # an inverted fit means the head is useless on this split: keep it monotone
        return PlattScaler(1.0, 0.0)
    return PlattScaler(a, float(model.intercept_[0]))


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float
    precision: float | None
    recall: float | None
    met_target: bool


def choose_threshold(
    scores: np.ndarray,
    labels: np.ndarray,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    max_fpr: float = MAX_FPR,
) -> ThresholdChoice:
    """Lowest threshold whose validation precision reaches ``target_precision`` while the
    validation false-positive rate stays at or below ``max_fpr``.

    The lowest such threshold gives the most recall at that precision. When no threshold
    reaches the target, the F1-maximising one within the FPR cap is returned with
    ``met_target=False`` (the model card reports it). Thresholds are clamped to at least
    MIN_THRESHOLD.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    positives = int(labels.sum())
    if positives == 0:
        return ThresholdChoice(0.5, None, None, False)
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(1 - y)
    # Only cut between distinct scores: a threshold cannot split tied scores.
    last_of_run = np.r_[s[1:] != s[:-1], True]
    precision = tp / (tp + fp)
    recall = tp / positives
    candidates = np.flatnonzero(last_of_run & (s >= MIN_THRESHOLD))
    if candidates.size == 0:
        return ThresholdChoice(max(MIN_THRESHOLD, 0.5), None, None, False)
    negatives = max(1, int((1 - y).sum()))
    candidates = candidates[fp[candidates] / negatives <= max_fpr]
    if candidates.size == 0:
        return ThresholdChoice(float(min(0.999, s[0] + 1e-6)), None, 0.0, False)
    good = candidates[precision[candidates] >= target_precision]
    if good.size:
        k = good[-1]
        return ThresholdChoice(float(s[k]), float(precision[k]), float(recall[k]), True)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    k = candidates[np.argmax(f1[candidates])]
    return ThresholdChoice(float(s[k]), float(precision[k]), float(recall[k]), False)


def calibrate_label(
    logits: np.ndarray, labels: np.ndarray, target_precision: float = DEFAULT_TARGET_PRECISION
) -> LabelCalibration:
    positives = int(np.asarray(labels).sum())
    if positives < MIN_POSITIVES:
        scaler = PlattScaler(1.0, 0.0)
        scores = scaler(logits)
        negatives = scores[np.asarray(labels) == 0]
        threshold = 0.5
        if negatives.size:
            threshold = max(0.5, float(np.quantile(negatives, 1.0 - FALLBACK_MAX_FPR, method="higher")) + 1e-6)
            threshold = min(threshold, 0.999)
        m = PRF.of(scores >= threshold, np.asarray(labels) > 0)
        choice = ThresholdChoice(threshold, m.precision, m.recall, False)
    else:
        scaler = fit_platt(logits, labels)
        choice = choose_threshold(scaler(logits), labels, target_precision)
    return LabelCalibration(
        a=scaler.a,
        b=scaler.b,
        threshold=choice.threshold,
        target_precision=target_precision,
        validation_precision=choice.precision,
        validation_recall=choice.recall,
        validation_positives=int(np.asarray(labels).sum()),
    )


def apply_calibration(calibration: LabelCalibration, logits: np.ndarray) -> np.ndarray:
    return PlattScaler(calibration.a, calibration.b)(logits)


@dataclass(frozen=True)
class PRF:
    precision: float | None
    recall: float | None
    f1: float | None
    support: int
    predicted: int

    @classmethod
    def of(cls, predicted: np.ndarray, labels: np.ndarray) -> PRF:
        predicted = np.asarray(predicted, dtype=bool)
        labels = np.asarray(labels, dtype=bool)
        tp = int((predicted & labels).sum())
        n_pred, n_pos = int(predicted.sum()), int(labels.sum())
        p = tp / n_pred if n_pred else None
        r = tp / n_pos if n_pos else None
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and (p + r) > 0 else None
        return cls(p, r, f1, n_pos, n_pred)
