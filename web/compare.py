"""The compare page's table: for each run, the data folder it used and what it was measured by, from
the same place for every kind. A training run is measured on its validation split at its last epoch
(its epoch rows); an evaluate job on the split it evaluated, at its operating threshold (its
evaluation.json, as the job page shows it)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from core.engine.evaluation.scores import sensitivity_specificity
from core.engine.run_folder.layout import EVALUATION_JSON
from core.service import data_folders
from core.service import jobs as job_service
from core.service.records import Job
from web import results
from web.db import Session

# The measured columns, in the table's order: accuracy, balanced accuracy, weighted F1, sensitivity
# (ALL), specificity (hem), ROC-AUC.
MEASURES = ("accuracy", "balanced_accuracy", "weighted_f1", "sensitivity", "specificity", "roc_auc")


def compared_runs(session: Session, jobs: list[Job]) -> list[dict[str, Any]]:
    """One row per job: the job, its data folder's registered name, where it was measured and the measures."""
    folders = {folder.path: folder.name for folder in data_folders.list_data_folders(session)}
    rows = []
    for job in jobs:
        path = job.data_dir or job.params.get("data_dir") or ""
        rows.append(
            {
                "job": job,
                "options": job_service.options_of(session, job),
                "folder": {"name": folders.get(path), "path": path},
                **_measured(session, job),
            }
        )
    return rows


def _measured(session: Session, job: Job) -> dict[str, Any]:
    """'measured_on' in words and 'measures' (None where the run has none yet); 'train_loss' of the last epoch."""
    if job.kind == "evaluate":
        return _evaluated(session, job)
    metrics = job_service.epoch_metrics(session, job.id)
    last = metrics[-1] if metrics else None
    if last is None or last.valid_accuracy is None:  # queued, failed early, or no validation split
        return {"measured_on": None, "measures": dict.fromkeys(MEASURES), "train_loss": last.train_loss if last else None}
    sensitivity, specificity = sensitivity_specificity(last.confusion) if last.confusion else (None, None)
    return {
        "measured_on": f"valid split, epoch {last.epoch}",
        "train_loss": last.train_loss,
        "measures": {
            "accuracy": last.valid_accuracy,
            "balanced_accuracy": last.valid_balanced_accuracy,
            "weighted_f1": last.valid_f1,
            "sensitivity": sensitivity,
            "specificity": specificity,
            "roc_auc": last.valid_roc_auc,
        },
    }


def _evaluated(session: Session, job: Job) -> dict[str, Any]:
    evaluation = results.read_evaluation(job.id, job_service.named_artifact(session, job.id, EVALUATION_JSON))
    if evaluation is None:  # not finished, or failed
        return {"measured_on": None, "measures": dict.fromkeys(MEASURES), "train_loss": None}
    # An evaluation written before operating thresholds and the clinical report has neither (an upgrade's old jobs).
    at = f" at threshold {evaluation.threshold.value:.2f}" if evaluation.threshold else ""
    clinical = evaluation.clinical.metrics if evaluation.clinical else None
    split = job.params.get("csv") or PurePath(evaluation.csv).name or "its data"  # an old job's row has no csv param
    return {
        "measured_on": f"{split}{at}",
        "train_loss": None,
        "measures": {
            "accuracy": evaluation.accuracy,
            "balanced_accuracy": evaluation.balanced_accuracy,
            "weighted_f1": evaluation.weighted_f1,
            "sensitivity": clinical.sensitivity.value if clinical else None,
            "specificity": clinical.specificity.value if clinical else None,
            "roc_auc": clinical.roc_auc.value if clinical else None,
        },
    }
