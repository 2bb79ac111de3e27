"""The classifier's scores: accuracy, balanced accuracy, weighted F1 (the C-NMC 2019 challenge
metric) and the confusion matrix [[tn, fp], [fn, tp]] (rows = true class), and the per-subject table.

"Scores" here, so that "metrics" in a module's name means telemetry only (core/service/metrics.py,
worker/metrics.py, web/metrics.py: Prometheus). The files and fields the scores are written to keep
their names (metrics.json, an artifact of kind "metrics", the jobs' epoch metric rows)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:  # for the annotation only: subject_table imports pandas when it builds a table
    import pandas as pd

NUM_CLASSES = 2


def _as_labels(values: Sequence[int] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.int64).reshape(-1)


def confusion_matrix(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> list[list[int]]:
    """Counts [[tn, fp], [fn, tp]]: row = true class, column = predicted class."""
    true, pred = _as_labels(y_true), _as_labels(y_pred)
    if true.shape != pred.shape:
        raise ValueError(f"{true.size} true labels but {pred.size} predictions")
    counts = np.bincount(true * NUM_CLASSES + pred, minlength=NUM_CLASSES * NUM_CLASSES)
    return counts.reshape(NUM_CLASSES, NUM_CLASSES).tolist()


def accuracy(confusion: list[list[int]]) -> float:
    """Fraction of correct predictions."""
    matrix = np.asarray(confusion, dtype=np.float64)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else 0.0


def balanced_accuracy(confusion: list[list[int]]) -> float:
    """Mean recall over the classes present, so the majority class cannot hide the other."""
    matrix = np.asarray(confusion, dtype=np.float64)
    support = matrix.sum(axis=1)
    present = support > 0
    if not present.any():
        return 0.0
    recall = np.diag(matrix)[present] / support[present]
    return float(recall.mean())


def weighted_f1(confusion: list[list[int]]) -> float:
    """Per-class F1 averaged with weights = class support (the C-NMC challenge's score)."""
    matrix = np.asarray(confusion, dtype=np.float64)
    support = matrix.sum(axis=1)
    if support.sum() == 0:
        return 0.0
    true_positive = np.diag(matrix)
    denominator = matrix.sum(axis=0) + support  # 2tp + fp + fn == predicted + actual
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return float((f1 * support).sum() / support.sum())


def sensitivity_specificity(confusion: list[list[int]]) -> tuple[float | None, float | None]:
    """Recall of ALL (class 1, the positive class) and of hem (class 0) from [[tn, fp], [fn, tp]]; None for a
    class the set does not hold. The same rates core.engine.evaluation.clinical.rates_at gives at the threshold used."""
    (tn, fp), (fn, tp) = confusion
    return (tp / (tp + fn) if tp + fn else None), (tn / (tn + fp) if tn + fp else None)


def classification_scores(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> dict:
    """All the scores of one set of predictions, JSON-safe."""
    confusion = confusion_matrix(y_true, y_pred)
    return {
        "accuracy": accuracy(confusion),
        "balanced_accuracy": balanced_accuracy(confusion),
        "weighted_f1": weighted_f1(confusion),
        "confusion": confusion,
        "count": int(np.asarray(confusion).sum()),
    }


SUBJECT_COLUMNS = ("subject", "label", "images", "accuracy", "called_all", "mean_prob_1")


def subject_table(
    subjects: Sequence[str | None], y_true: Sequence[int], probabilities: Sequence[float], threshold: float = 0.5
) -> pd.DataFrame:
    """Per subject (patient): its class, images, accuracy and the share of its cells called ALL
    (class 1) at the operating threshold, worst accuracy first. Images of unknown subject are left out."""
    import pandas as pd

    frame = pd.DataFrame({"subject": subjects, "label": y_true, "prob_1": probabilities}).dropna(subset=["subject"])
    frame["called_all"] = (frame["prob_1"] >= threshold).astype(float)
    frame["correct"] = (frame["called_all"] == frame["label"]).astype(float)
    table = frame.groupby("subject", sort=True).agg(
        label=("label", lambda labels: int(labels.mode().iloc[0])),  # a C-NMC subject has one class
        images=("label", "size"),
        accuracy=("correct", "mean"),
        called_all=("called_all", "mean"),
        mean_prob_1=("prob_1", "mean"),
    )
    return table.reset_index().sort_values(["accuracy", "subject"], kind="stable").reset_index(drop=True)[list(SUBJECT_COLUMNS)]
