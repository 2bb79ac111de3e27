"""What evaluate and predict write besides the headline scores and the threshold:

- evaluate: per_image.csv (ID, subject, true_label, prob_all, predicted, correct, explanation),
  roc.png, pr.png, calibration.png, probabilities.png; the clinical report (clinical.clinical_report)
  that evaluation.json holds under `clinical`.
- predict: prediction.json's summary (threshold, class counts, histogram, first rows), probabilities.png.

The plots (matplotlib) are imported where they are drawn, so importing this module loads none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.engine.data.layouts import Sample
from core.engine.evaluation.clinical import clinical_report
from core.engine.evaluation.results import PredictionSummary
from core.engine.run_folder.layout import CALIBRATION_PNG, HISTOGRAM_PNG, PER_IMAGE_CSV, PR_PNG, ROC_PNG
from core.engine.run_folder.spreadsheet_csv import write_csv

HISTOGRAM_BINS = 20
FIRST_ROWS = 10


def subjects_of(samples: list[Sample]) -> list[str] | None:
    """The subject (patient) of every image when each is known, else None (intervals then resample images)."""
    subjects = [s.subject for s in samples]
    return None if any(subject is None for subject in subjects) else subjects  # type: ignore[return-value]


def write_evaluation_outputs(
    out_dir: Path,
    samples: list[Sample],
    probabilities: np.ndarray,
    threshold: dict[str, Any],
    explained: dict[int, str],
) -> dict[str, Any]:
    """per_image.csv, the clinical report's plots and the histogram; returns the clinical report."""
    from core.engine.evaluation.plots import plot_calibration, plot_precision_recall, plot_roc  # matplotlib: only to draw

    truth = np.array([s.label for s in samples])
    subjects = subjects_of(samples)
    report = clinical_report(
        truth, probabilities, threshold["value"], threshold_source=threshold["description"], subjects=subjects
    )
    predicted = (probabilities >= threshold["value"]).astype(int)
    write_csv(
        out_dir / PER_IMAGE_CSV,
        ["ID", "subject", "true_label", "prob_all", "predicted", "correct", "explanation"],
        [
            [
                sample.id,
                subjects[index] if subjects else "",
                sample.label,
                f"{probabilities[index]:.6f}",
                predicted[index],
                int(predicted[index] == sample.label),
                explained.get(index, ""),
            ]
            for index, sample in enumerate(samples)
        ],
    )
    plot_roc(report, out_dir / ROC_PNG)
    plot_precision_recall(report, out_dir / PR_PNG)
    plot_calibration(report, out_dir / CALIBRATION_PNG)
    histogram(probabilities, threshold["value"], out_dir)
    return report


def histogram(probabilities: np.ndarray, threshold: float, out_dir: Path) -> dict[str, list]:
    """Counts of P(ALL) in HISTOGRAM_BINS equal bins, drawn to probabilities.png."""
    from core.engine.evaluation.plots import plot_histogram  # matplotlib: only to draw

    counts, edges = np.histogram(probabilities, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    plot_histogram(edges.tolist(), counts.tolist(), threshold, out_dir / HISTOGRAM_PNG)
    return {"edges": [round(e, 6) for e in edges.tolist()], "counts": counts.tolist()}


def prediction_summary(
    samples: list[Sample],
    probabilities: np.ndarray,
    threshold: dict[str, Any],
    out_dir: Path,
    *,
    explained: int,
    explanation_convention: str | None,
    **scored: Any,
) -> dict[str, Any]:
    """What a predict job shows: class counts, the histogram, the first rows, the threshold used and how
    many images have a heat map (explained, with the convention they follow, explain.CONVENTION)."""
    labels = (probabilities >= threshold["value"]).astype(int)
    return PredictionSummary.model_validate(
        {
            "count": len(samples),
            "class_counts": {"hem": int((labels == 0).sum()), "all": int(labels.sum())},
            "histogram": histogram(probabilities, threshold["value"], out_dir),
            "first_rows": [
                {"ID": s.id, "label": int(label), "prob_all": round(float(p), 6)}
                for s, label, p in list(zip(samples, labels, probabilities))[:FIRST_ROWS]
            ],
            "threshold": threshold,
            "explained": explained,
            "explanation_convention": explanation_convention,
            **scored,
        }
    ).model_dump()
