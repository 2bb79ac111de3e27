"""Jobs: submit, list, read, edit, cancel, retry, delete; their metrics, artifacts, results and images."""

from __future__ import annotations

from typing import Any

from flask import current_app

from core.common.errors import UserInputError
from core.service import data_folders, deletion, job_edits
from core.service import jobs as job_service
from core.service.jobs.request import Origin
from web import results, row_models
from web.api import schemas
from web.api.blueprint import answer, bp
from web.auth import current_actor
from web.db import commit, db
from web.downloads import send_artifact
from web.inputs import csv_name_problem, json_body, query_model
from web.openapi import FILE, PNG, operation
from web.settings import app_settings
from worker import dispatch


def check_web_params(params: dict[str, Any]) -> None:
    """No filesystem path from a request: the data folder must be registered, checkpoints come from a parent."""
    for name in ("checkpoint", "checkpoints"):
        if params.get(name):
            raise UserInputError(f"{name}: paths are not accepted over the web; give parent_id and checkpoint_choice", field=name)
    data_dir = params.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise UserInputError("data_dir: give the path of a registered data folder (GET /api/data-folders)", field="data_dir")
    if data_folders.registered_folder_by_path(db(), data_dir) is None:
        raise UserInputError(f"data_dir: {data_dir!r} is not a registered data folder (GET /api/data-folders)", field="data_dir")
    if problem := csv_name_problem(params.get("csv")):
        raise UserInputError(f"csv: {problem}", field="csv")


@operation(
    bp,
    "post",
    "/jobs",
    operation_id="submitJob",
    tag="jobs",
    body=schemas.JobSubmission,
    responses={201: schemas.Job},
    errors=(400, 403, 413, 503),
)
def submit_job() -> Any:
    """Submit a job"""
    submission = json_body(schemas.JobSubmission)
    check_web_params(submission.params)
    actor = current_actor()
    commit()  # worker.dispatch commits the job in a transaction of its own, then sends it (web.db)
    return job_response(dispatch.submit(submission, actor=actor, origin=Origin.API, settings=app_settings()).id, 201)


@operation(
    bp,
    "get",
    "/jobs",
    operation_id="listJobs",
    tag="jobs",
    query=schemas.JobListQuery,
    responses={200: schemas.JobPage},
    errors=(400,),
)
def list_jobs() -> Any:
    """Jobs, newest first"""
    query = query_model(schemas.JobListQuery)
    jobs, total = job_service.list_jobs(
        db(),
        status=query.status,
        kind=query.kind,
        sweep_id=query.sweep_id,
        tag=query.tag,
        page=query.page,
        per_page=query.per_page,
    )
    return answer(schemas.JobPage(jobs=row_models.job_models(db(), jobs), total=total, page=query.page, per_page=query.per_page))


def job_response(job_id: int, status: int = 200) -> Any:
    job = job_service.get_job(db(), job_id)
    return answer(row_models.job_models(db(), [job])[0], status)


@operation(bp, "get", "/jobs/<int:job_id>", operation_id="getJob", tag="jobs", responses={200: schemas.Job}, errors=(404,))
def get_job(job_id: int) -> Any:
    """One job"""
    return job_response(job_id)


def existing_job_id(job_id: int) -> int:
    job_service.get_job(db(), job_id)
    return job_id


@operation(
    bp,
    "patch",
    "/jobs/<int:job_id>",
    operation_id="editJob",
    tag="jobs",
    body=schemas.OptionsEdit,
    responses={200: schemas.Job},
    errors=(400, 403, 404, 413),
)
def edit_job(job_id: int) -> Any:
    """Change a job's notes, tags, priority or retention (its owner or an admin); fields left out stay"""
    changes, actor = json_body(schemas.OptionsEdit), current_actor()
    existing_job_id(job_id)
    job_edits.edit_job(db(), actor, job_id, changes, app_settings())
    return job_response(job_id)


@operation(
    bp,
    "post",
    "/jobs/<int:job_id>/cancel",
    operation_id="cancelJob",
    tag="jobs",
    responses={200: schemas.Job},
    errors=(403, 404, 409),
)
def cancel_job(job_id: int) -> Any:
    """Cancel a job (queued: now; running: at its next batch)"""
    existing_job_id(job_id)
    actor = current_actor()
    commit()  # worker.dispatch changes the job in a transaction of its own (web.db)
    dispatch.cancel_job(job_id, actor=actor)
    return job_response(job_id)


@operation(
    bp,
    "post",
    "/jobs/<int:job_id>/retry",
    operation_id="retryJob",
    tag="jobs",
    responses={200: schemas.Job},
    errors=(400, 403, 404, 409, 503),
)
def retry_job(job_id: int) -> Any:
    """Queue a failed or cancelled job again"""
    existing_job_id(job_id)
    actor = current_actor()
    commit()  # worker.dispatch changes the job in a transaction of its own (web.db)
    dispatch.retry_job(job_id, actor=actor, settings=app_settings())
    return job_response(job_id)


@operation(
    bp,
    "delete",
    "/jobs/<int:job_id>",
    operation_id="deleteJob",
    tag="jobs",
    responses={200: schemas.Deletion},
    errors=(400, 403, 404, 409, 503),
)
def delete_job(job_id: int) -> Any:
    """Delete a finished job: its files (the space freed is reported) and its rows"""
    existing_job_id(job_id)
    done = deletion.delete_job(db(), job_id, actor=current_actor())
    return answer(schemas.Deletion(job_ids=done.job_ids, freed_bytes=done.freed_bytes))


@operation(
    bp,
    "get",
    "/jobs/<int:job_id>/metrics",
    operation_id="getJobMetrics",
    tag="jobs",
    responses={200: schemas.JobMetrics},
    errors=(404,),
)
def job_metrics(job_id: int) -> Any:
    """Per-epoch metrics of a job"""
    existing_job_id(job_id)
    epochs = [row_models.epoch_model(m) for m in job_service.epoch_metrics(db(), job_id)]
    return answer(schemas.JobMetrics(job_id=job_id, epochs=epochs))


@operation(
    bp,
    "get",
    "/jobs/<int:job_id>/artifacts",
    operation_id="listJobArtifacts",
    tag="jobs",
    responses={200: schemas.JobArtifacts},
    errors=(404,),
)
def job_artifacts(job_id: int) -> Any:
    """Files a job recorded"""
    existing_job_id(job_id)
    rows = [schemas.Artifact.model_validate(a) for a in job_service.artifacts(db(), job_id)]
    return answer(schemas.JobArtifacts(job_id=job_id, artifacts=rows))


@operation(
    bp,
    "get",
    "/jobs/<int:job_id>/artifacts/<int:artifact_id>",
    operation_id="downloadJobArtifact",
    tag="jobs",
    responses={200: FILE},
    errors=(404,),
)
def download_artifact(job_id: int, artifact_id: int) -> Any:
    """Download a file a job recorded"""
    return send_artifact(job_id, artifact_id)


@operation(
    bp,
    "get",
    "/jobs/<int:job_id>/results",
    operation_id="getJobResults",
    tag="results",
    responses={200: schemas.JobResults},
    errors=(404,),
)
def job_results(job_id: int) -> Any:
    """Evaluation (metrics with 95% intervals, curves, calibration) or prediction summary, and the heat maps"""
    kind = job_service.get_job(db(), job_id).kind
    return answer(results.job_results(job_id, kind))


@operation(
    bp,
    "get",
    "/jobs/<int:job_id>/images",
    operation_id="listJobImages",
    tag="results",
    responses={200: schemas.JobImages},
    errors=(404,),
)
def job_images(job_id: int) -> Any:
    """Per-image results of an evaluate job: ID, subject, true label, P(ALL), predicted, correct, heat map"""
    return answer(results.job_images(existing_job_id(job_id)))


@operation(
    bp,
    "get",
    "/jobs/<int:job_id>/images/<int:index>/thumbnail",
    operation_id="getJobImageThumbnail",
    tag="results",
    responses={200: PNG},
    errors=(400, 404),
)
def job_image_thumbnail(job_id: int, index: int) -> Any:
    """A thumbnail of the cell in row index (1-based) of the per-image results"""
    job = job_service.get_job(db(), job_id)
    data_dir = job.data_dir or job.params.get("data_dir", "")
    return png_response(results.thumbnail_png(job_id, data_dir, index))


@operation(
    bp,
    "get",
    "/jobs/<int:job_id>/explanations/<int:index>",
    operation_id="getJobExplanation",
    tag="results",
    responses={200: PNG},
    errors=(404,),
)
def job_explanation(job_id: int, index: int) -> Any:
    """Heat map index (1-based, the order of results.explained): the cell, and beside it the Grad-CAM overlay"""
    return png_response(results.explanation_png(existing_job_id(job_id), index))


def png_response(data: bytes) -> Any:
    response = current_app.response_class(data, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"  # a finished job's files do not change
    return response
