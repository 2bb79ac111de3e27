"""What a run folder holds: every file the engine writes there, named once, with the artifact kind
it is recorded as. Writers (training, evaluate, predict, cross-validation), the worker's
classifier (`classify_artifacts`) and the readers (the web's results, the per-subject table) all
use these names; a file not in the table is not an artifact, except checkpoints (*.pt) and plots
(*.png), which are recognised by their ending."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

ARTIFACT_KINDS = ("checkpoint", "predictions", "metrics", "plot", "evaluation", "explanation")


class RunFile(NamedTuple):
    name: str
    kind: str  # one of ARTIFACT_KINDS
    what: str


RUN_KEY_FILE = ".run_key"  # the stamp naming the job that owns the folder (resolver.claim_run_folder)
LAST_CHECKPOINT = "last.pt"  # the last completed epoch, with what a resume needs
BEST_CHECKPOINT = "best.pt"  # the best epoch by the chosen metric (every epoch without a validation split)
METRICS_CSV = "metrics.csv"
METRICS_JSON = "metrics.json"
EVENT_LOG = "events.out.tfevents.leukemia"  # TensorBoard reads files whose name holds "tfevents"
EVALUATION_JSON = "evaluation.json"
CONFUSION_CSV = "confusion.csv"
SUBJECTS_CSV = "subjects.csv"
PER_IMAGE_CSV = "per_image.csv"
OOF_CSV = "oof.csv"
PREDICTIONS_CSV = "predictions.csv"
PREDICTION_JSON = "prediction.json"
EXPLANATIONS_CSV = "explanations.csv"
EXPLANATIONS_ZIP = "explanations.zip"

LOSS_PNG = "loss.png"
ACCURACY_PNG = "accuracy.png"
CONFUSION_PNG = "confusion.png"
ROC_PNG = "roc.png"
PR_PNG = "pr.png"
CALIBRATION_PNG = "calibration.png"
HISTOGRAM_PNG = "probabilities.png"

RUN_FILES = (
    RunFile(METRICS_CSV, "metrics", "one row per epoch (core.engine.run_folder.history_files)"),
    RunFile(METRICS_JSON, "metrics", "the epochs and the run's outcome"),
    RunFile(EVENT_LOG, "metrics", "the epochs as a TensorBoard event log (core.engine.run_folder.event_log)"),
    RunFile(EVALUATION_JSON, "evaluation", "an evaluation's metrics, threshold and clinical report"),
    RunFile(CONFUSION_CSV, "evaluation", "the confusion matrix at the operating threshold"),
    RunFile(SUBJECTS_CSV, "evaluation", "per-subject results, where subjects are known"),
    RunFile(PER_IMAGE_CSV, "evaluation", "one row per image: ID, subject, label, P(ALL), prediction"),
    RunFile(OOF_CSV, "predictions", "a fold's out-of-fold predictions: ID, subject, label, prob_1, fold"),
    RunFile(PREDICTIONS_CSV, "predictions", "the submission CSV: ID,label in the test CSV's order"),
    RunFile(PREDICTION_JSON, "predictions", "what a prediction scored and with which threshold"),
    RunFile(EXPLANATIONS_CSV, "explanation", "which images have a heat map, and why each was chosen"),
    RunFile(EXPLANATIONS_ZIP, "explanation", "the heat-map PNGs and the CSV"),
)
KIND_OF = {run_file.name: run_file.kind for run_file in RUN_FILES}


def artifact_kind(path: Path) -> str | None:
    """The artifact kind of a file in a run folder, or None when it is not one (stamps, temporaries)."""
    if path.name.startswith("."):
        return None
    if path.name in KIND_OF:
        return KIND_OF[path.name]
    return {".pt": "checkpoint", ".png": "plot"}.get(path.suffix)


def classify_artifacts(run_folder: Path) -> list[tuple[str, Path]]:
    """The files of a run folder worth recording, with their artifact kind, in name order."""
    if not run_folder.is_dir():
        return []
    files = (path for path in sorted(run_folder.iterdir()) if path.is_file())
    return [(kind, path) for path in files if (kind := artifact_kind(path)) is not None]
