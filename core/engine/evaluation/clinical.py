"""Clinical metrics of P(ALL) scores: ROC and precision-recall curves with their areas,
sensitivity, specificity, PPV and NPV at an operating threshold, 95% bootstrap intervals,
a reliability diagram with its expected calibration error, and threshold selection.

Conventions (STARD 2015): the positive class is ALL (label 1); an image is called ALL when
P(ALL) >= threshold. A metric that is undefined on a set (ROC-AUC with one class only, PPV
when nothing is called ALL) is None, with a note saying why, never a made-up number.

Bootstrap: every resample draws whole units with replacement, images or, when the subjects
are known, subjects (all images of a drawn subject come along; cells of one patient are not
independent). A resample is a weight per image (how often it was drawn), so each metric is
computed for all resamples at once on one sorted order of the scores (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from core.common.errors import UserInputError
from core.engine.evaluation.results import CalibrationBin, ClinicalReport

BOOTSTRAP_RESAMPLES = 1000
CONFIDENCE = 0.95
CALIBRATION_BINS = 10
CURVE_POINTS = 500  # curves stored for the dashboard keep at most this many points
RATE_NAMES = ("sensitivity", "specificity", "ppv", "npv")
SCORE_NAMES = ("roc_auc", "pr_auc")
ThresholdMethod = Literal["youden", "sensitivity"]


def _arrays(y_true: Sequence[int] | np.ndarray, scores: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    truth = np.asarray(y_true, dtype=np.int64).reshape(-1)
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    if truth.shape != score.shape:
        raise ValueError(f"{truth.size} labels but {score.size} scores")
    return truth, score


# ---------------------------------------------------------------- curves and areas


def roc_curve(y_true: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds): one point per distinct score, from (0, 0) at threshold +inf to (1, 1)."""
    truth, score = _arrays(y_true, scores)
    tps, fps, thresholds = _cumulative_counts(truth, score)
    positives, negatives = tps[-1] if tps.size else 0, fps[-1] if fps.size else 0
    tpr = np.r_[0.0, tps / positives] if positives else np.full(tps.size + 1, np.nan)
    fpr = np.r_[0.0, fps / negatives] if negatives else np.full(fps.size + 1, np.nan)
    return fpr, tpr, np.r_[np.inf, thresholds]


def precision_recall_curve(y_true: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, thresholds) at each distinct score, highest threshold first."""
    truth, score = _arrays(y_true, scores)
    tps, fps, thresholds = _cumulative_counts(truth, score)
    positives = tps[-1] if tps.size else 0
    precision = tps / np.maximum(tps + fps, 1)
    recall = tps / positives if positives else np.full(tps.size, np.nan)
    return precision, recall, thresholds


def _cumulative_counts(truth: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when calling ALL at each distinct score, highest first."""
    order = np.argsort(-score, kind="mergesort")
    score, truth = score[order], truth[order]
    last_of_each = np.r_[np.flatnonzero(np.diff(score)), score.size - 1] if score.size else np.array([], int)
    tps = np.cumsum(truth)[last_of_each].astype(np.float64)
    fps = (last_of_each + 1) - tps
    return tps, fps, score[last_of_each]


def roc_auc(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """Area under the ROC curve (ties count one half); None unless both classes are present."""
    truth, score = _arrays(y_true, scores)
    return _nan_to_none(_weighted_scores(truth, score, np.ones((1, truth.size)))["roc_auc"][0])


def average_precision(y_true: Sequence[int], scores: Sequence[float]) -> float | None:
    """PR-AUC as average precision, sum over thresholds of (recall step) x precision; None without positives."""
    truth, score = _arrays(y_true, scores)
    return _nan_to_none(_weighted_scores(truth, score, np.ones((1, truth.size)))["pr_auc"][0])


def _weighted_scores(truth: np.ndarray, score: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """ROC-AUC and average precision for each row of image weights (B, n), on one sort of the scores."""
    order = np.argsort(-score, kind="mergesort")
    sorted_score = score[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_score)) + 1] if score.size else np.array([0])
    positive = (truth[order] == 1).astype(np.float64)
    sorted_weights = weights[:, order] if score.size else np.zeros((weights.shape[0], 1))
    positive = positive if score.size else np.zeros(1)
    # Tied scores form one group (highest first): its positive and negative weight per resample.
    pos = np.add.reduceat(sorted_weights * positive, starts, axis=1)
    neg = np.add.reduceat(sorted_weights * (1.0 - positive), starts, axis=1)
    total_pos, total_neg = pos.sum(axis=1), neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        # Mann-Whitney: each positive beats the negatives scored lower (later groups) and half-ties its own.
        negatives_below = total_neg[:, None] - np.cumsum(neg, axis=1)
        auc = (pos * (negatives_below + 0.5 * neg)).sum(axis=1) / (total_pos * total_neg)
        true_pos, false_pos = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
        precision = np.where(true_pos + false_pos > 0, true_pos / (true_pos + false_pos), 0.0)
        ap = (pos * precision).sum(axis=1) / total_pos
    auc[(total_pos == 0) | (total_neg == 0)] = np.nan
    ap[total_pos == 0] = np.nan
    return {"roc_auc": auc, "pr_auc": ap}


# ---------------------------------------------------------------- rates at a threshold


def rates_at(y_true: Sequence[int], scores: Sequence[float], threshold: float) -> dict[str, float | None]:
    """Sensitivity, specificity, PPV and NPV when calling ALL at P(ALL) >= threshold (None where undefined)."""
    truth, score = _arrays(y_true, scores)
    rates = _weighted_rates(truth, score >= threshold, np.ones((1, truth.size)))
    return {name: _nan_to_none(values[0]) for name, values in rates.items()}


def _weighted_rates(truth: np.ndarray, called: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    positive = truth == 1
    tp = weights @ (positive & called)
    fn = weights @ (positive & ~called)
    fp = weights @ (~positive & called)
    tn = weights @ (~positive & ~called)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }


# ---------------------------------------------------------------- bootstrap intervals


def bootstrap_weights(
    size: int, resamples: int, seed: int | np.random.SeedSequence, subjects: Sequence[str] | None = None
) -> np.ndarray:
    """(resamples, size) image weights: how often each image was drawn (or its subject was)."""
    rng = np.random.default_rng(seed)
    if subjects is None:
        draws = rng.integers(0, size, size=(resamples, size))
        return np.stack([np.bincount(row, minlength=size) for row in draws]).astype(np.float64)
    names, subject_index = np.unique(np.asarray(subjects), return_inverse=True)
    draws = rng.integers(0, names.size, size=(resamples, names.size))
    subject_counts = np.stack([np.bincount(row, minlength=names.size) for row in draws]).astype(np.float64)
    return subject_counts[:, subject_index]


def bootstrap_intervals(
    y_true: Sequence[int],
    scores: Sequence[float],
    threshold: float,
    *,
    subjects: Sequence[str] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict[str, tuple[float, float] | None]:
    """Percentile 95% intervals of the rates at the threshold and of ROC-AUC and PR-AUC.

    A resample where a metric is undefined (no positive drawn, say) is left out of that
    metric's interval; a metric undefined in every resample gets None."""
    truth, score = _arrays(y_true, scores)
    called = score >= threshold
    values: dict[str, list[np.ndarray]] = {name: [] for name in RATE_NAMES + SCORE_NAMES}
    for chunk_seed, chunk in _chunks(resamples, seed):  # bounded memory: 100 x n weights at a time
        weights = bootstrap_weights(truth.size, chunk, chunk_seed, subjects)
        for name, samples in {**_weighted_rates(truth, called, weights), **_weighted_scores(truth, score, weights)}.items():
            values[name].append(samples)
    tail = 100 * (1 - CONFIDENCE) / 2
    intervals: dict[str, tuple[float, float] | None] = {}
    for name, parts in values.items():
        samples = np.concatenate(parts)
        defined = samples[np.isfinite(samples)]
        intervals[name] = (
            (float(np.percentile(defined, tail)), float(np.percentile(defined, 100 - tail))) if defined.size else None
        )
    return intervals


def _chunks(resamples: int, seed: int, size: int = 100) -> list[tuple[np.random.SeedSequence, int]]:
    """Resamples in chunks of `size`, each with its own child seed: the same seed, the same intervals."""
    counts = [min(size, resamples - start) for start in range(0, resamples, size)]
    children = np.random.SeedSequence(seed).spawn(len(counts))
    return list(zip(children, counts))


# ---------------------------------------------------------------- calibration


def reliability_bins(
    y_true: Sequence[int], probabilities: Sequence[float], bins: int = CALIBRATION_BINS
) -> tuple[list[CalibrationBin], float | None]:
    """Equal-width bins of P(ALL) (the last one includes 1.0) and the expected calibration error,
    ECE = sum over bins of (bin share of images) x |fraction ALL - mean P(ALL)|; None for an empty set."""
    truth, probability = _arrays(y_true, probabilities)
    edges = np.linspace(0.0, 1.0, bins + 1).round(10)
    index = np.clip(np.searchsorted(edges, probability, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        mean_p = float(probability[members].mean()) if count else None
        observed = float(truth[members].mean()) if count else None
        if count:
            ece += count / truth.size * abs(observed - mean_p)
        table.append(
            CalibrationBin(
                low=float(edges[b]), high=float(edges[b + 1]), count=count, mean_probability=mean_p, fraction_all=observed
            )
        )
    return table, (ece if truth.size else None)


# ---------------------------------------------------------------- threshold selection


def choose_threshold(
    y_true: Sequence[int], scores: Sequence[float], method: ThresholdMethod, target_sensitivity: float | None = None
) -> float:
    """An operating threshold from labelled scores (a validation set), deterministic for the same input.

    youden: the score maximising sensitivity + specificity - 1 (the highest such score on a tie).
    sensitivity: the highest score whose sensitivity reaches the target (the most specific such point)."""
    truth, score = _arrays(y_true, scores)
    positives, negatives = int((truth == 1).sum()), int((truth == 0).sum())
    if positives == 0:
        raise UserInputError(
            "threshold: the validation set has no ALL (label 1) image to choose a threshold on", field="threshold"
        )
    fpr, tpr, thresholds = roc_curve(truth, score)
    if method == "sensitivity":
        if target_sensitivity is None or not 0.0 < target_sensitivity <= 1.0:
            raise UserInputError(f"target_sensitivity: {target_sensitivity} is not in (0, 1]", field="target_sensitivity")
        reached = np.flatnonzero(tpr >= target_sensitivity - 1e-12)
        return float(thresholds[reached[reached > 0][0]])
    if negatives == 0:
        raise UserInputError(
            "threshold: Youden's J needs both classes, but the validation set has no hem (label 0) image", field="threshold"
        )
    best = int(np.argmax((tpr - fpr)[1:])) + 1  # skip the +inf point, which calls nothing ALL
    return float(thresholds[best])


# ---------------------------------------------------------------- the whole report


def clinical_report(
    y_true: Sequence[int],
    probabilities: Sequence[float],
    threshold: float,
    *,
    threshold_source: str,
    subjects: Sequence[str] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = 0,
) -> dict:
    """Everything above for one labelled set, JSON-safe: point estimates with 95% intervals, the
    curves (thinned to CURVE_POINTS), the reliability bins and ECE, and notes on what is undefined;
    the shape is core.engine.evaluation.results.ClinicalReport."""
    truth, probability = _arrays(y_true, probabilities)
    point = {
        **rates_at(truth, probability, threshold),
        "roc_auc": roc_auc(truth, probability),
        "pr_auc": average_precision(truth, probability),
    }
    intervals = bootstrap_intervals(truth, probability, threshold, subjects=subjects, resamples=resamples, seed=seed)
    fpr, tpr, roc_thresholds = roc_curve(truth, probability)
    precision, recall, pr_thresholds = precision_recall_curve(truth, probability)
    bins, ece = reliability_bins(truth, probability)
    unit = "subject" if subjects is not None else "image"
    report = {
        "positive_class": "ALL (label 1)",
        "threshold": float(threshold),
        "threshold_source": threshold_source,
        "positives": int((truth == 1).sum()),
        "negatives": int((truth == 0).sum()),
        "interval": {
            "method": "percentile bootstrap",
            "confidence": CONFIDENCE,
            "resamples": resamples,
            "unit": unit,
            "units": len(set(subjects)) if subjects is not None else int(truth.size),
        },
        "metrics": {
            name: {
                "value": point[name],
                "low": None if intervals[name] is None else intervals[name][0],
                "high": None if intervals[name] is None else intervals[name][1],
            }
            for name in RATE_NAMES + SCORE_NAMES
        },
        "roc": _thinned({"fpr": fpr, "tpr": tpr, "thresholds": roc_thresholds}),
        "pr": _thinned({"precision": precision, "recall": recall, "thresholds": pr_thresholds}),
        "calibration": {"bins": bins, "ece": ece},
        "notes": undefined_notes(point),
    }
    return ClinicalReport.model_validate(report).model_dump()


def undefined_notes(point: dict[str, float | None]) -> list[str]:
    """One plain sentence per metric the set cannot define."""
    reasons = {
        "roc_auc": "ROC-AUC is undefined: the set holds one class only",
        "pr_auc": "PR-AUC is undefined: the set holds no ALL (label 1) image",
        "sensitivity": "sensitivity is undefined: the set holds no ALL (label 1) image",
        "specificity": "specificity is undefined: the set holds no hem (label 0) image",
        "ppv": "PPV is undefined: no image was called ALL at this threshold",
        "npv": "NPV is undefined: no image was called hem at this threshold",
    }
    return [reason for name, reason in reasons.items() if point.get(name) is None]


def _thinned(curve: dict[str, np.ndarray]) -> dict[str, list[float | None]]:
    """At most CURVE_POINTS evenly spaced points, first and last kept; non-finite values become None."""
    length = len(next(iter(curve.values())))
    keep = np.unique(np.linspace(0, length - 1, min(length, CURVE_POINTS)).round().astype(int)) if length else []
    return {name: [_nan_to_none(values[i]) for i in keep] for name, values in curve.items()}


def _nan_to_none(value: float) -> float | None:
    return None if not np.isfinite(value) else float(value)
