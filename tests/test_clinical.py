"""Clinical metrics against values counted by hand on small fixed examples, bootstrap intervals
that hold the estimate and narrow with more data, and reproducible threshold selection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.common.errors import UserInputError
from core.engine.evaluation.clinical import (
    average_precision,
    bootstrap_intervals,
    bootstrap_weights,
    choose_threshold,
    clinical_report,
    precision_recall_curve,
    rates_at,
    reliability_bins,
    roc_auc,
    roc_curve,
)

# Six images, scores ranked by hand: the positives (ALL) sit at 0.9, 0.7, 0.4; the negatives at 0.8, 0.3, 0.1.
TRUTH = [1, 0, 1, 1, 0, 0]
SCORES = [0.9, 0.8, 0.7, 0.4, 0.3, 0.1]


def test_auc_of_a_known_ranking() -> None:
    # Positive beats negative in 7 of the 9 pairs: 0.9 beats all 3, 0.7 and 0.4 beat 0.3 and 0.1 each.
    assert roc_auc(TRUTH, SCORES) == pytest.approx(7 / 9)
    assert roc_auc([0, 1], [0.2, 0.8]) == 1.0 and roc_auc([1, 0], [0.2, 0.8]) == 0.0
    assert roc_auc([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.5)  # all tied: each pair counts one half


def test_roc_curve_points() -> None:
    fpr, tpr, thresholds = roc_curve(TRUTH, SCORES)
    assert thresholds[0] == np.inf and thresholds[1:].tolist() == SCORES
    assert tpr.tolist() == pytest.approx([0, 1 / 3, 1 / 3, 2 / 3, 1, 1, 1])
    assert fpr.tolist() == pytest.approx([0, 0, 1 / 3, 1 / 3, 1 / 3, 2 / 3, 1])
    assert np.trapezoid(tpr, fpr) == pytest.approx(roc_auc(TRUTH, SCORES))


def test_average_precision_by_hand() -> None:
    # Positives found at ranks 1, 3, 4 with precision 1, 2/3, 3/4; each adds recall 1/3.
    assert average_precision(TRUTH, SCORES) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    precision, recall, _ = precision_recall_curve(TRUTH, SCORES)
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 3 / 4, 3 / 5, 1 / 2])
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1, 1, 1])


def test_rates_at_a_threshold() -> None:
    # At 0.5: called ALL = 0.9 (tp), 0.8 (fp), 0.7 (tp); hem = 0.4 (fn), 0.3 (tn), 0.1 (tn).
    assert rates_at(TRUTH, SCORES, 0.5) == pytest.approx({"sensitivity": 2 / 3, "specificity": 2 / 3, "ppv": 2 / 3, "npv": 2 / 3})
    # The threshold itself calls ALL (>=).
    assert rates_at(TRUTH, SCORES, 0.4)["sensitivity"] == 1.0
    assert rates_at(TRUTH, SCORES, 0.95) == {"sensitivity": 0.0, "specificity": 1.0, "ppv": None, "npv": 0.5}


def test_ece_of_a_known_binning() -> None:
    truth = [0, 1, 1, 1, 0]
    probabilities = [0.05, 0.15, 0.72, 0.78, 1.0]
    bins, ece = reliability_bins(truth, probabilities, bins=5)
    # Bins of width 0.2: [0, .2) holds 0.05 (hem) and 0.15 (ALL): mean p 0.1, fraction ALL 0.5;
    # [.6, .8) holds 0.72 and 0.78 (both ALL): mean 0.75, fraction 1; [.8, 1] holds 1.0 (hem).
    assert [b.count for b in bins] == [2, 0, 0, 2, 1]
    assert bins[0].mean_probability == pytest.approx(0.1) and bins[0].fraction_all == 0.5
    assert bins[1].mean_probability is None
    assert ece == pytest.approx(2 / 5 * 0.4 + 2 / 5 * 0.25 + 1 / 5 * 1.0)
    assert reliability_bins([1, 0], [1.0, 0.0])[1] == 0.0  # perfectly calibrated and sure


def test_intervals_hold_the_estimate_and_narrow_with_more_data() -> None:
    rng = np.random.default_rng(3)

    def sample(size: int) -> tuple[np.ndarray, np.ndarray]:
        truth = (rng.random(size) < 0.66).astype(int)
        return truth, np.clip(0.3 * truth + 0.35 + rng.normal(0, 0.2, size), 0, 1)

    widths = []
    for size in (60, 2000):
        truth, scores = sample(size)
        intervals = bootstrap_intervals(truth, scores, 0.5, resamples=400, seed=1)
        point = {**rates_at(truth, scores, 0.5), "roc_auc": roc_auc(truth, scores), "pr_auc": average_precision(truth, scores)}
        for name, (low, high) in intervals.items():
            assert low <= point[name] <= high, name
        widths.append({name: high - low for name, (low, high) in intervals.items()})
    for name in widths[0]:
        assert widths[1][name] < widths[0][name] / 2, name


def test_intervals_are_reproducible_and_over_subjects_when_known() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random(200) < 0.6).astype(int)
    scores = np.clip(0.4 * truth + 0.3 + rng.normal(0, 0.2, 200), 0, 1)
    first = bootstrap_intervals(truth, scores, 0.5, resamples=300, seed=7)
    assert bootstrap_intervals(truth, scores, 0.5, resamples=300, seed=7) == first
    # Subject resampling draws whole subjects: every image of a subject gets that subject's weight.
    subjects = [f"p{i % 5}" for i in range(200)]
    weights = bootstrap_weights(200, 50, 0, subjects)
    for row in weights:
        for s in range(5):
            assert len(set(row[s::5])) == 1
        assert row.sum() == 200  # five subjects of 40 images, five drawn
    # The resampling unit changes the intervals (same seed).
    by_subject = bootstrap_intervals(truth, scores, 0.5, subjects=subjects, resamples=300, seed=7)
    assert by_subject != first


def test_threshold_selection_is_reproducible() -> None:
    rng = np.random.default_rng(5)
    truth = (rng.random(300) < 0.66).astype(int)
    scores = np.clip(0.3 * truth + 0.35 + rng.normal(0, 0.15, 300), 0, 1)
    chosen = choose_threshold(truth, scores, "sensitivity", 0.95)
    assert chosen == choose_threshold(truth.copy(), scores.copy(), "sensitivity", 0.95)
    assert rates_at(truth, scores, chosen)["sensitivity"] >= 0.95
    # The highest such threshold: the next higher score falls short of the target.
    higher = np.sort(np.unique(scores))
    next_up = higher[np.searchsorted(higher, chosen) + 1]
    assert rates_at(truth, scores, next_up)["sensitivity"] < 0.95
    youden = choose_threshold(truth, scores, "youden")
    j = lambda t: sum(rates_at(truth, scores, t)[k] for k in ("sensitivity", "specificity")) - 1
    assert j(youden) >= max(j(t) for t in np.unique(scores)) - 1e-12
    # By hand on the six images: J is 1/3 at 0.9 and 0.7, 2/3 at 0.4, 1/3 at 0.3: 0.4 wins.
    assert choose_threshold(TRUTH, SCORES, "youden") == 0.4
    assert choose_threshold(TRUTH, SCORES, "sensitivity", 0.6) == 0.7


def test_threshold_selection_refuses_sets_it_cannot_use() -> None:
    with pytest.raises(UserInputError, match="no ALL"):
        choose_threshold([0, 0], [0.1, 0.2], "youden")
    with pytest.raises(UserInputError, match="no hem"):
        choose_threshold([1, 1], [0.1, 0.2], "youden")
    with pytest.raises(UserInputError, match="target_sensitivity"):
        choose_threshold(TRUTH, SCORES, "sensitivity", 1.5)


def test_report_of_a_one_class_set_says_what_is_undefined() -> None:
    report = clinical_report([1, 1, 1], [0.9, 0.4, 0.7], 0.5, threshold_source="fixed 0.5", resamples=50)
    json.dumps(report, allow_nan=False)  # JSON-safe: no NaN, no infinity
    assert report["metrics"]["roc_auc"] == {"value": None, "low": None, "high": None}
    assert report["metrics"]["sensitivity"]["value"] == pytest.approx(2 / 3)
    assert "ROC-AUC is undefined: the set holds one class only" in report["notes"]
    assert any(note.startswith("specificity is undefined") for note in report["notes"])


def test_report_shape() -> None:
    report = clinical_report(
        TRUTH, SCORES, 0.5, threshold_source="fixed 0.5", resamples=100, subjects=["a", "a", "b", "c", "c", "d"]
    )
    json.dumps(report, allow_nan=False)
    assert report["interval"]["unit"] == "subject" and report["interval"]["units"] == 4
    assert report["metrics"]["roc_auc"]["value"] == pytest.approx(7 / 9)
    assert report["roc"]["thresholds"][0] is None and report["roc"]["fpr"][-1] == 1.0
    assert report["notes"] == []
