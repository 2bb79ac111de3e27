"""Cross-validation as queued work: one parent row (CrossValidation), one training job per fold
(jobs.cv_id, jobs.cv_fold; run in parallel by as many workers as there are), the summary read back from the fold jobs' rows and files, and the fold
ensemble as one evaluate or predict job. The caller commits, then sends the job ids (worker.dispatch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common.errors import NotFound, StateConflict, UserInputError
from core.common.text import check_printable
from core.engine.data.splits import read_named_split, with_folder_image_size
from core.engine.params import parse_params
from core.engine.run_folder.layout import OOF_CSV
from core.engine.run_folder.spreadsheet_csv import csv_text, frame_rows, read_csv_frame
from core.engine.training.crossval import OOF_FLOAT_FORMAT, fold_params, plan_folds, summarize
from core.service import jobs
from core.service.jobs.request import CrossValidationRequest, EnsembleRequest, JobRequest, Origin
from core.service.records import CrossValidation, EpochMetric, Job, JobStatus, utcnow
from core.service.settings import Settings

ENSEMBLE_KINDS = ("evaluate", "predict")


def create_cross_validation(
    session: Session,
    request: CrossValidationRequest,
    *,
    submitted_by: int | None = None,
    origin: Origin = Origin.CLI,
    settings: Settings | None = None,
) -> tuple[CrossValidation, list[Job]]:
    """Validate the shared train parameters, plan the folds from the data folder and insert one job per fold
    (origin, submitted_by and settings as core.service.jobs.create_job takes them)."""
    if request.name is not None:
        check_printable(request.name, "name")
    for field in ("split", "valid_split"):
        if request.params.get(field) not in (None, ""):
            raise UserInputError(f"{field}: a cross-validation sets each fold's splits itself; leave {field} out", field=field)
    base = parse_params("train", with_folder_image_size("train", request.params), strict=origin.strict).model_dump(mode="json")
    plan = plan_folds(base["data_dir"], request.folds, base["seed"], release_folds=request.release_folds)
    cv = CrossValidation(
        name=(request.name or f"{len(plan.folds)}-fold CV of {Path(base['data_dir']).name}")[:200],
        data_dir=base["data_dir"],
        scheme=plan.scheme,
        base_params=base,
        folds=plan.to_dict()["folds"],
        created_at=utcnow(),
    )
    session.add(cv)
    session.flush()
    fold_jobs = []
    for fold in plan.folds:
        fold_request = JobRequest(kind="train", params=fold_params(base, fold), queue=request.queue)
        job = jobs.create_job(session, fold_request, submitted_by=submitted_by, origin=origin, settings=settings)
        job.cv_id, job.cv_fold = cv.id, fold.fold
        fold_jobs.append(job)
    session.flush()
    return cv, fold_jobs


def get_cross_validation(session: Session, cv_id: int, *, key_share: bool = False) -> CrossValidation:
    """The cross-validation, or NotFound naming cv_id; key_share: its row held FOR KEY SHARE until the
    transaction ends, so a delete (core.service.deletion locks it FOR UPDATE) and this are serialised."""
    lock = {"read": True, "key_share": True} if key_share else None
    cv = (
        session.get(CrossValidation, cv_id, with_for_update=lock, populate_existing=key_share)
        if 1 <= cv_id <= jobs.MAX_ID
        else None
    )
    if cv is None:
        raise NotFound(f"cross-validation {cv_id} not found", field="cv_id")
    return cv


def cross_validation_ids(session: Session, limit: int = 200) -> list[int]:
    """The newest cross-validations' ids, newest first."""
    return list(session.scalars(select(CrossValidation.id).order_by(CrossValidation.id.desc()).limit(limit)))


def fold_jobs(session: Session, cv_id: int) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.cv_id == cv_id, Job.cv_fold.is_not(None)).order_by(Job.cv_fold)))


def ensemble_jobs(session: Session, cv_id: int) -> list[Job]:
    return list(session.scalars(select(Job).where(Job.cv_id == cv_id, Job.cv_fold.is_(None)).order_by(Job.id)))


def _oof_frames(session: Session, folds: list[Job]) -> list[pd.DataFrame]:
    """Each fold's out-of-fold predictions, or [] until every fold has recorded them (one the artifact store
    lacks is core.service.jobs.MissingArtifact)."""
    recorded = [jobs.named_artifact(session, job.id, OOF_CSV) for job in folds]
    if not folds or not all(recorded):
        return []
    return [read_csv_frame(jobs.read_recorded(artifact)) for artifact in recorded if artifact is not None]


def out_of_fold_csv(session: Session, cv_id: int) -> str:
    """All folds' out-of-fold predictions as one CSV (ID, subject, label, prob_1, fold), in fold order."""
    get_cross_validation(session, cv_id)
    frames = _oof_frames(session, fold_jobs(session, cv_id))
    if not frames:
        raise NotFound(
            f"cv_id: cross-validation {cv_id} has no out-of-fold predictions until every fold has succeeded", field="cv_id"
        )
    together = pd.concat(frames, ignore_index=True)
    return csv_text(list(together.columns), frame_rows(together, OOF_FLOAT_FORMAT))


def cross_validation_summary(session: Session, cv_id: int) -> dict[str, Any]:
    """The parent, each fold job (status, progress, best metrics), mean ± std over the folds that have
    validation results, the out-of-fold metrics once every fold wrote its oof.csv, and the ensembles."""
    cv = get_cross_validation(session, cv_id)
    folds = fold_jobs(session, cv_id)
    by_job = {job.id: job.cv_fold for job in folds}
    metrics = session.scalars(select(EpochMetric).where(EpochMetric.job_id.in_(list(by_job))).order_by(EpochMetric.epoch))
    rows = [
        {
            "fold": by_job[m.job_id],
            "epoch": m.epoch,
            "valid_accuracy": m.valid_accuracy,
            "valid_balanced_accuracy": m.valid_balanced_accuracy,
            "valid_f1": m.valid_f1,
        }
        for m in metrics
    ]
    summary = summarize(rows, _oof_frames(session, folds))
    best = {row["fold"]: row for row in summary["folds"]}
    return {
        "id": cv.id,
        "name": cv.name,
        "data_dir": cv.data_dir,
        "scheme": cv.scheme,
        "base_params": cv.base_params,
        "created_at": cv.created_at,
        "submitted_by": folds[0].submitted_by if folds else None,
        "folds": [
            {
                "fold": job.cv_fold,
                "job_id": job.id,
                "status": job.status,
                "progress": job.progress,
                "split": job.params.get("split"),
                "valid_split": job.params.get("valid_split"),
                "best": best.get(job.cv_fold),
            }
            for job in folds
        ],
        "mean_std": summary["mean_std"],
        "out_of_fold": summary["out_of_fold"],
        "finished": all(job.status == JobStatus.succeeded for job in folds),
        "ensembles": [
            {
                "job_id": job.id,
                "kind": job.kind,
                "status": job.status,
                "split": job.params.get("csv"),
                "tta": job.params.get("tta"),
            }
            for job in ensemble_jobs(session, cv_id)
        ],
    }


def create_ensemble_job(
    session: Session,
    request: EnsembleRequest,
    *,
    submitted_by: int | None = None,
    origin: Origin = Origin.CLI,
    settings: Settings | None = None,
) -> Job:
    """An evaluate or predict job averaging the fold models' probabilities (best.pt of each fold) on a split."""
    cv_id, kind, split = request.cv_id, request.kind, request.split
    if kind not in ENSEMBLE_KINDS:
        raise UserInputError(f"kind: an ensemble is an evaluate or predict job, not {kind!r}", field="kind")
    check_printable(split, "split")
    cv = get_cross_validation(session, cv_id, key_share=True)
    read_named_split(cv.data_dir, split, labelled=kind == "evaluate")  # a bad split is refused now, not on the worker
    folds = fold_jobs(session, cv_id)
    unfinished = [f"fold {job.cv_fold} ({job.status})" for job in folds if job.status != JobStatus.succeeded]
    if unfinished:
        raise StateConflict(f"cv_id: cross-validation {cv_id} is not finished: {', '.join(unfinished)}", field="cv_id")
    checkpoints = []
    for job in folds:  # where each is (a path, or an s3:// URL): the worker that runs the ensemble fetches them
        try:
            checkpoints.append(jobs.checkpoint_location(session, job.id, "best"))
        except UserInputError:
            raise StateConflict(
                f"cv_id: fold {job.cv_fold} (job {job.id}) has no best.pt in the artifact store", field="cv_id"
            ) from None
    common = {"data_dir": cv.data_dir, "csv": split, "tta": request.tta}
    if kind == "predict":
        params = {**common, "checkpoints": checkpoints}  # ID,label: the submission CSV as it is handed in
    else:
        params = {**common, "checkpoint": checkpoints[0], "checkpoints": checkpoints[1:]}
    job_request = JobRequest(kind=kind, params=params, queue=request.queue)
    job = jobs.create_job(session, job_request, submitted_by=submitted_by, origin=origin, settings=settings)
    job.cv_id = cv.id
    session.flush()
    return job
