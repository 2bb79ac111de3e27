"""The one core function a job runs, called with the job's parameters: its parent's checkpoint filled in,
every checkpoint it reads made a file on this node (an object store's fetched into the node's cache,
checked against its recorded sha256 and held while the job runs), and the threshold writer the service
allows it."""

from __future__ import annotations

import logging
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.formats import percent
from core.engine.progress import PredictionObserver, TrainingObserver
from core.engine.run_folder.layout import PREDICTIONS_CSV
from core.service import jobs
from core.service.db import get_sessionmaker

if TYPE_CHECKING:  # the annotation only: threshold imports torch (checkpoints), loaded by the first core call
    from core.engine.evaluation.threshold import ThresholdWriter

log = logging.getLogger("leukemia.worker")


@dataclass(frozen=True)
class JobSpec:
    """The claimed row's values the run needs (plain data, no session attached)."""

    id: int
    kind: str
    params: dict[str, Any]
    parent_id: int | None
    attempts: int
    queue: str
    run_key: str
    origin: str
    cv_fold: int | None = None  # a cross-validation's fold: write its out-of-fold predictions after training
    legacy_run_dir: bool = False  # run before run keys: its folder is jobs/<id> (core.service.run_folders)


def threshold_writer(job_id: int) -> ThresholdWriter | None:
    """Asked of the service before the run: None when a threshold this job chooses may not go into its
    model's checkpoint, else the writer the engine calls, which writes it audited in one transaction."""
    from core.service.thresholds import may_record_threshold, record_audited

    with get_sessionmaker().begin() as session:
        if not may_record_threshold(session, job_id):
            return None

    def write(checkpoint: Path, threshold: dict[str, Any]) -> None:
        with get_sessionmaker().begin() as session:
            record_audited(session, job_id, checkpoint, threshold)

    return write


def run_core_function(
    spec: JobSpec, run_folder: Path, observer: TrainingObserver | PredictionObserver, *, holds: ExitStack | None = None
) -> None:
    """Call exactly one core function for the job's kind, with the parent's checkpoint filled in (with an
    object store, every checkpoint it reads fetched into this node's cache, checked, and held in holds)."""
    from core.engine import evaluate_csv, finetune, parse_params, predict_csv, train

    values = dict(spec.params)
    holds = holds if holds is not None else ExitStack()
    if spec.kind != "train":
        choice = values.get("checkpoint_choice", "best")
        with get_sessionmaker().begin() as session:
            if isinstance(values.get("checkpoint"), str) and values["checkpoint"]:
                values["checkpoint"] = jobs.local_checkpoint(session, values["checkpoint"], choice, holds)
            if isinstance(values.get("checkpoints"), list):
                values["checkpoints"] = [
                    jobs.local_checkpoint(session, item, choice, holds) if isinstance(item, str) else item
                    for item in values["checkpoints"]
                ]
            parent = None if spec.parent_id is None else str(jobs.job_checkpoint(session, spec.parent_id, choice, holds=holds))
        if parent is not None and spec.kind == "predict":
            values["checkpoints"] = [parent, *values.get("checkpoints", [])]
        elif parent is not None:
            values["checkpoint"] = parent
    params = parse_params(spec.kind, values)
    if spec.kind in ("evaluate", "predict"):  # the engine logs nothing of a pass: the job's log says what it reads
        log.info("job %s %s: %s on %s of %s", spec.id, spec.kind, scored_with(spec, params), params.csv, params.data_dir)
    if spec.kind == "train":
        train(params, run_folder, resume=True, observer=observer)
        if spec.cv_fold is not None:
            from core.engine.training.crossval import write_out_of_fold

            write_out_of_fold(run_folder, params, spec.cv_fold)
    elif spec.kind == "finetune":
        finetune(params, run_folder, resume=True, observer=observer)
    elif spec.kind == "evaluate":
        scores = evaluate_csv(params, out_dir=run_folder, observer=observer, write_threshold=threshold_writer(spec.id)).scores
        log.info(
            "job %s evaluated %s images at threshold %g (%s): accuracy %s, balanced accuracy %s, weighted F1 %s",
            spec.id,
            scores["count"],
            scores["threshold"]["value"],
            scores["threshold"]["source"],
            percent(scores["accuracy"]),
            percent(scores["balanced_accuracy"]),
            percent(scores["weighted_f1"]),
        )
    else:  # predict: parse_params knows no other kind
        result = predict_csv(
            params,
            run_folder / PREDICTIONS_CSV,
            observer=observer,
            report_dir=run_folder,
            write_threshold=threshold_writer(spec.id),
        )
        log.info(
            "job %s predicted %s images at threshold %g (%s): %s ALL, %s hem; %s written",
            spec.id,
            result.count,
            result.threshold["value"],
            result.threshold["source"],
            result.positives,
            result.count - result.positives,
            PREDICTIONS_CSV,
        )


def scored_with(spec: JobSpec, params: Any) -> str:
    """The model an evaluate or predict job scores with, for its log: "best.pt of job 3", "the mean of 3 checkpoints"."""
    paths = [path for path in [getattr(params, "checkpoint", ""), *params.checkpoints] if path]
    if len(paths) > 1:
        return f"the mean of {len(paths)} checkpoints"
    if spec.parent_id is not None:
        return f"{params.checkpoint_choice}.pt of job {spec.parent_id}"
    return Path(paths[0]).name if paths else "no checkpoint"
