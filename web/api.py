"""The JSON API: every dashboard action, for programs (Authorization: Bearer <token>).

Reads also accept a logged-in browser session (the live pages poll them); writes need the token,
so the CSRF-exempt API cannot be driven by another site through a person's cookie. Requests are
validated and answers serialised by the web.schemas models that /api/openapi.json describes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, request
from pydantic import BaseModel

from core.service import job_edits
from core.service import deletion
from core.service import jobs as job_service
from core.service.db import check_database, get_sessionmaker
from core.service.disk import disk_summary
from core.common.errors import DatabaseUnavailable, UserInputError
from core.service.settings import get_settings
from web import errors, queries, results, schemas
from web.auth import bearer_token_valid, current_actor
from web.downloads import send_artifact
from web.inputs import csv_name_problem, json_body, query_model
from web.openapi import FILE, PNG, openapi_document, operation
from worker import dispatch

bp = Blueprint("api", __name__, url_prefix="/api")
PUBLIC_ENDPOINTS = {"api.health", "api.openapi"}
# Fields a sweep may not vary over the web: paths never come from a request, and kind is the sweep's.
NOT_IN_WEB_GRIDS = ("data_dir", "checkpoint", "checkpoints", "kind")


@bp.before_request
def require_token() -> None:
    """Bearer token for everything but health and the document; a browser session may read."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    if bearer_token_valid():
        return
    if request.method == "GET" and g.get("user") is not None:
        return
    abort(401, description="authorization: send 'Authorization: Bearer <API token>'")


def answer(model: BaseModel, status: int = 200) -> Any:
    """A response serialised by its model (the shape the document promises)."""
    return current_app.response_class(model.model_dump_json(), status=status, mimetype="application/json")


def check_web_params(params: dict[str, Any]) -> None:
    """No filesystem path from a request: the data folder must be registered, checkpoints come from a parent."""
    for name in ("checkpoint", "checkpoints"):
        if params.get(name):
            raise UserInputError(f"{name}: paths are not accepted over the web; give parent_id and checkpoint_choice",
                                 field=name)
    data_dir = params.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise UserInputError("data_dir: give the path of a registered data folder (GET /api/data-folders)",
                             field="data_dir")
    with get_sessionmaker().begin() as session:
        if queries.registered_folder_by_path(session, data_dir) is None:
            raise UserInputError(f"data_dir: {data_dir!r} is not a registered data folder (GET /api/data-folders)",
                                 field="data_dir")
    if problem := csv_name_problem(params.get("csv")):
        raise UserInputError(f"csv: {problem}", field="csv")


# --- health and document ----------------------------------------------------------------------


@operation(bp, "get", "/health", operation_id="getHealth", tag="service", public=True,
           responses={200: schemas.Health, 503: schemas.Health})
def health() -> Any:
    """Is the database reachable? (for compose healthchecks)"""
    try:
        check_database()
    except DatabaseUnavailable as error:  # gone, dropped, unreachable or without tables: the reason is logged
        return answer(schemas.Health(status="unavailable", database=errors.database_unavailable_line(error)), 503)
    return answer(schemas.Health(status="ok", database="reachable"))


@operation(bp, "get", "/openapi.json", operation_id="getOpenApiDocument", tag="service", public=True,
           responses={200: schemas.OpenApiDocument})
def openapi() -> Any:
    """This document, generated from the declared operations and their models"""
    return answer(schemas.OpenApiDocument.model_validate(openapi_document()))


# --- jobs ------------------------------------------------------------------------------------------


@operation(bp, "post", "/jobs", operation_id="submitJob", tag="jobs", body=schemas.JobSubmission,
           responses={201: schemas.Job}, errors=(400, 403, 413, 503))
def submit_job() -> Any:
    """Submit a job"""
    submission = json_body(schemas.JobSubmission)
    check_web_params(submission.params)
    job_id = dispatch.submit_job(submission.kind, submission.params, parent_id=submission.parent_id,
                                 queue=submission.queue, strict=True, origin="web", actor=current_actor(),
                                 options=submission.options)
    return job_response(job_id, 201)


@operation(bp, "get", "/jobs", operation_id="listJobs", tag="jobs", query=schemas.JobListQuery,
           responses={200: schemas.JobPage}, errors=(400,))
def list_jobs() -> Any:
    """Jobs, newest first"""
    query = query_model(schemas.JobListQuery)
    with get_sessionmaker().begin() as session:
        jobs, total = job_service.list_jobs(session, status=query.status, kind=query.kind, sweep_id=query.sweep_id,
                                            tag=query.tag, page=query.page, per_page=query.per_page)
        return answer(schemas.JobPage(jobs=queries.job_models(session, jobs), total=total, page=query.page,
                                      per_page=query.per_page))


def job_response(job_id: int, status: int = 200) -> Any:
    with get_sessionmaker().begin() as session:
        job = queries.find_job(session, job_id)
        if job is None:
            abort(404, description=f"job {job_id} not found")
        return answer(queries.job_models(session, [job])[0], status)


@operation(bp, "get", "/jobs/<int:job_id>", operation_id="getJob", tag="jobs",
           responses={200: schemas.Job}, errors=(404,))
def get_job(job_id: int) -> Any:
    """One job"""
    return job_response(job_id)


def existing_job_id(job_id: int) -> int:
    with get_sessionmaker().begin() as session:
        if queries.find_job(session, job_id) is None:
            abort(404, description=f"job {job_id} not found")
    return job_id


@operation(bp, "patch", "/jobs/<int:job_id>", operation_id="editJob", tag="jobs", body=schemas.OptionsEdit,
           responses={200: schemas.Job}, errors=(400, 403, 404, 413))
def edit_job(job_id: int) -> Any:
    """Change a job's notes, tags, priority or retention (its owner or an admin); fields left out stay"""
    changes, actor = json_body(schemas.OptionsEdit), current_actor()
    existing_job_id(job_id)
    with get_sessionmaker().begin() as session:
        job_edits.edit_job(session, actor, job_id, changes)
    return job_response(job_id)


@operation(bp, "post", "/jobs/<int:job_id>/cancel", operation_id="cancelJob", tag="jobs",
           responses={200: schemas.Job}, errors=(403, 404, 409))
def cancel_job(job_id: int) -> Any:
    """Cancel a job (queued: now; running: at its next batch)"""
    dispatch.cancel_job(existing_job_id(job_id), actor=current_actor())
    return job_response(job_id)


@operation(bp, "post", "/jobs/<int:job_id>/retry", operation_id="retryJob", tag="jobs",
           responses={200: schemas.Job}, errors=(400, 403, 404, 409, 503))
def retry_job(job_id: int) -> Any:
    """Queue a failed or cancelled job again"""
    dispatch.retry_job(existing_job_id(job_id), actor=current_actor())
    return job_response(job_id)


@operation(bp, "delete", "/jobs/<int:job_id>", operation_id="deleteJob", tag="jobs",
           responses={200: schemas.Deletion}, errors=(400, 403, 404, 409, 503))
def delete_job(job_id: int) -> Any:
    """Delete a finished job: its files (the space freed is reported) and its rows"""
    existing_job_id(job_id)
    actor = current_actor()  # before the transaction: it reads the token's user in one of its own
    with get_sessionmaker().begin() as session:
        done = deletion.delete_job(session, job_id, actor=actor)
    return answer(schemas.Deletion(job_ids=done.job_ids, freed_bytes=done.freed_bytes))


@operation(bp, "get", "/jobs/<int:job_id>/metrics", operation_id="getJobMetrics", tag="jobs",
           responses={200: schemas.JobMetrics}, errors=(404,))
def job_metrics(job_id: int) -> Any:
    """Per-epoch metrics of a job"""
    existing_job_id(job_id)
    with get_sessionmaker().begin() as session:
        epochs = [queries.epoch_model(m) for m in job_service.epoch_metrics(session, job_id)]
    return answer(schemas.JobMetrics(job_id=job_id, epochs=epochs))


@operation(bp, "get", "/jobs/<int:job_id>/artifacts", operation_id="listJobArtifacts", tag="jobs",
           responses={200: schemas.JobArtifacts}, errors=(404,))
def job_artifacts(job_id: int) -> Any:
    """Files a job recorded"""
    existing_job_id(job_id)
    with get_sessionmaker().begin() as session:
        rows = [schemas.Artifact.model_validate(a) for a in job_service.artifacts(session, job_id)]
    return answer(schemas.JobArtifacts(job_id=job_id, artifacts=rows))


@operation(bp, "get", "/jobs/<int:job_id>/artifacts/<int:artifact_id>", operation_id="downloadJobArtifact",
           tag="jobs", responses={200: FILE}, errors=(404,))
def download_artifact(job_id: int, artifact_id: int) -> Any:
    """Download a file a job recorded"""
    return send_artifact(job_id, artifact_id)


@operation(bp, "get", "/jobs/<int:job_id>/results", operation_id="getJobResults", tag="results",
           responses={200: schemas.JobResults}, errors=(404,))
def job_results(job_id: int) -> Any:
    """Evaluation (metrics with 95% intervals, curves, calibration) or prediction summary, and the heat maps"""
    with get_sessionmaker().begin() as session:
        job = queries.find_job(session, job_id)
        if job is None:
            abort(404, description=f"job {job_id} not found")
        kind = job.kind
    return answer(results.job_results(job_id, kind))


@operation(bp, "get", "/jobs/<int:job_id>/images", operation_id="listJobImages", tag="results",
           responses={200: schemas.JobImages}, errors=(404,))
def job_images(job_id: int) -> Any:
    """Per-image results of an evaluate job: ID, subject, true label, P(ALL), predicted, correct, heat map"""
    return answer(results.job_images(existing_job_id(job_id)))


@operation(bp, "get", "/jobs/<int:job_id>/images/<int:index>/thumbnail", operation_id="getJobImageThumbnail",
           tag="results", responses={200: PNG}, errors=(400, 404))
def job_image_thumbnail(job_id: int, index: int) -> Any:
    """A thumbnail of the cell in row index (1-based) of the per-image results"""
    with get_sessionmaker().begin() as session:
        job = queries.find_job(session, job_id)
        if job is None:
            abort(404, description=f"job {job_id} not found")
        data_dir = job.data_dir or job.params.get("data_dir", "")
    return png_response(results.thumbnail_png(job_id, data_dir, index))


@operation(bp, "get", "/jobs/<int:job_id>/explanations/<int:index>", operation_id="getJobExplanation",
           tag="results", responses={200: PNG}, errors=(404,))
def job_explanation(job_id: int, index: int) -> Any:
    """Heat map index (1-based, the order of results.explained): the cell, and beside it the Grad-CAM overlay"""
    return png_response(results.explanation_png(existing_job_id(job_id), index))


def png_response(data: bytes) -> Any:
    response = current_app.response_class(data, mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=3600"  # a finished job's files do not change
    return response


# --- sweeps -----------------------------------------------------------------------------------------


@operation(bp, "post", "/sweeps", operation_id="submitSweep", tag="sweeps", body=schemas.SweepSubmission,
           responses={201: schemas.Sweep}, errors=(400, 403, 413, 503))
def submit_sweep() -> Any:
    """Submit a grid sweep: one job per point"""
    submission = json_body(schemas.SweepSubmission)
    for name in submission.grid:
        if name in NOT_IN_WEB_GRIDS:
            raise UserInputError(f"grid: {name} cannot be varied over the web", field="grid")
    check_web_params(submission.base_params)
    for csv in submission.grid.get("csv", []):  # the check a single job's csv gets
        if problem := csv_name_problem(csv):
            raise UserInputError(f"grid: csv {problem}", field="grid")
    sweep_id, _ = dispatch.submit_sweep(submission.kind, submission.base_params, submission.grid,
                                        name=submission.name, parent_id=submission.parent_id, queue=submission.queue,
                                        strict=True, origin="web", actor=current_actor(),
                                        options=submission.options, early_stopping=submission.early_stopping)
    return sweep_response(sweep_id, 201)


# --- cross-validations --------------------------------------------------------------------------


@operation(bp, "post", "/cross-validations", operation_id="submitCrossValidation", tag="cross-validations",
           body=schemas.CrossValidationSubmission, responses={201: schemas.CrossValidation}, errors=(400, 403, 413, 503))
def submit_cross_validation() -> Any:
    """Submit a cross-validation: one training job per fold"""
    submission = json_body(schemas.CrossValidationSubmission)
    check_web_params(submission.params)
    cv_id, _ = dispatch.submit_cross_validation(submission.params, folds=submission.folds,
                                                release_folds=submission.release_folds, name=submission.name,
                                                queue=submission.queue, strict=True, origin="web",
                                                actor=current_actor())
    return cross_validation_response(cv_id, 201)


def cross_validation_response(cv_id: int, status: int = 200) -> Any:
    from core.service.cv_jobs import cross_validation_summary
    from core.service.records import CrossValidation

    with get_sessionmaker().begin() as session:
        if not queries.storable_id(cv_id) or session.get(CrossValidation, cv_id) is None:
            abort(404, description=f"cross-validation {cv_id} not found")
        return answer(schemas.CrossValidation.model_validate(cross_validation_summary(session, cv_id)), status)


@operation(bp, "get", "/cross-validations/<int:cv_id>", operation_id="getCrossValidation", tag="cross-validations",
           responses={200: schemas.CrossValidation}, errors=(404,))
def get_cross_validation(cv_id: int) -> Any:
    """One cross-validation: its fold jobs, best metrics per fold, mean ± std, out-of-fold metrics, ensembles"""
    return cross_validation_response(cv_id)


@operation(bp, "delete", "/cross-validations/<int:cv_id>", operation_id="deleteCrossValidation",
           tag="cross-validations", responses={200: schemas.Deletion}, errors=(400, 403, 404, 409, 503))
def delete_cross_validation(cv_id: int) -> Any:
    """Delete a cross-validation whose jobs have all finished: its fold and ensemble jobs' files and rows, then it"""
    from core.service.records import CrossValidation

    actor = current_actor()  # before the transaction: it reads the token's user in one of its own
    with get_sessionmaker().begin() as session:
        if not queries.storable_id(cv_id) or session.get(CrossValidation, cv_id) is None:
            abort(404, description=f"cross-validation {cv_id} not found")
        done = deletion.delete_cross_validation(session, cv_id, actor=actor)
    return answer(schemas.Deletion(job_ids=done.job_ids, cv_id=cv_id, freed_bytes=done.freed_bytes))


@operation(bp, "post", "/cross-validations/<int:cv_id>/ensemble", operation_id="submitEnsemble",
           tag="cross-validations", body=schemas.EnsembleSubmission, responses={201: schemas.Job},
           errors=(400, 403, 404, 409, 413, 503))
def submit_ensemble(cv_id: int) -> Any:
    """Submit an evaluate or predict job averaging a finished cross-validation's fold models"""
    from core.service.records import CrossValidation

    submission = json_body(schemas.EnsembleSubmission)
    if problem := csv_name_problem(submission.split):
        raise UserInputError(f"split: {problem}", field="split")
    with get_sessionmaker().begin() as session:
        if not queries.storable_id(cv_id) or session.get(CrossValidation, cv_id) is None:
            abort(404, description=f"cross-validation {cv_id} not found")
    job_id = dispatch.submit_ensemble(cv_id, submission.kind, submission.split, tta=submission.tta,
                                      queue=submission.queue, origin="web", actor=current_actor())
    return job_response(job_id, 201)


def sweep_response(sweep_id: int, status: int = 200) -> Any:
    with get_sessionmaker().begin() as session:
        sweep = queries.find_sweep(session, sweep_id)
        if sweep is None:
            abort(404, description=f"sweep {sweep_id} not found")
        return answer(queries.sweep_model(session, sweep), status)


@operation(bp, "get", "/sweeps", operation_id="listSweeps", tag="sweeps", query=schemas.SweepListQuery,
           responses={200: schemas.SweepPage}, errors=(400,))
def list_sweeps() -> Any:
    """Sweeps, newest first"""
    query = query_model(schemas.SweepListQuery)
    with get_sessionmaker().begin() as session:
        sweeps, total = queries.list_sweeps(session, query.page, query.per_page, tag=query.tag)
        items = [queries.sweep_model(session, sweep) for sweep in sweeps]
    return answer(schemas.SweepPage(sweeps=items, total=total, page=query.page, per_page=query.per_page))


@operation(bp, "get", "/sweeps/<int:sweep_id>", operation_id="getSweep", tag="sweeps",
           responses={200: schemas.Sweep}, errors=(404,))
def get_sweep(sweep_id: int) -> Any:
    """One sweep"""
    return sweep_response(sweep_id)


@operation(bp, "patch", "/sweeps/<int:sweep_id>", operation_id="editSweep", tag="sweeps", body=schemas.OptionsEdit,
           responses={200: schemas.Sweep}, errors=(400, 403, 404, 413))
def edit_sweep(sweep_id: int) -> Any:
    """Change a sweep's notes, tags, priority (also its queued jobs') or retention; fields left out stay"""
    changes, actor = json_body(schemas.OptionsEdit), current_actor()
    with get_sessionmaker().begin() as session:
        if queries.find_sweep(session, sweep_id) is None:
            abort(404, description=f"sweep {sweep_id} not found")
        job_edits.edit_sweep(session, actor, sweep_id, changes)
    return sweep_response(sweep_id)


@operation(bp, "delete", "/sweeps/<int:sweep_id>", operation_id="deleteSweep", tag="sweeps",
           responses={200: schemas.Deletion}, errors=(400, 403, 404, 409, 503))
def delete_sweep(sweep_id: int) -> Any:
    """Delete a sweep whose jobs have all finished: every job's files and rows, then the sweep"""
    actor = current_actor()  # before the transaction: it reads the token's user in one of its own
    with get_sessionmaker().begin() as session:
        if queries.find_sweep(session, sweep_id) is None:
            abort(404, description=f"sweep {sweep_id} not found")
        done = deletion.delete_sweep(session, sweep_id, actor=actor)
    return answer(schemas.Deletion(job_ids=done.job_ids, sweep_id=sweep_id, freed_bytes=done.freed_bytes))


# --- disk ------------------------------------------------------------------------------------------


@operation(bp, "get", "/disk", operation_id="getDiskUse", tag="disk", responses={200: schemas.DiskUse})
def disk_use() -> Any:
    """Disk use: the jobs' run folders in total, and free/total space of the artifacts volume"""
    with get_sessionmaker().begin() as session:
        summary = disk_summary(session)
    return answer(schemas.DiskUse(jobs_bytes=summary.jobs_bytes, measured_jobs=summary.measured_jobs,
                                  unmeasured_jobs=summary.unmeasured_jobs, free_bytes=summary.volume.free_bytes,
                                  total_bytes=summary.volume.total_bytes, retention=get_settings().retention))


# --- data folders ---------------------------------------------------------------------------------


@operation(bp, "post", "/data-folders", operation_id="registerDataFolder", tag="data folders",
           body=schemas.DataFolderRegistration, responses={201: schemas.DataFolder}, errors=(400, 403, 409, 413))
def register_data_folder() -> Any:
    """Register a data folder under a data root (and check it)"""
    registration = json_body(schemas.DataFolderRegistration)
    with get_sessionmaker().begin() as session:
        folder = queries.register_data_folder(session, registration.name or "", registration.path, actor=current_actor())
        return answer(schemas.DataFolder.model_validate(folder), 201)


@operation(bp, "get", "/data-folders", operation_id="listDataFolders", tag="data folders",
           responses={200: schemas.DataFolderList})
def list_data_folders() -> Any:
    """Registered data folders"""
    with get_sessionmaker().begin() as session:
        folders = [schemas.DataFolder.model_validate(f) for f in queries.list_data_folders(session)]
    return answer(schemas.DataFolderList(data_folders=folders))


# The users, tokens and audit-log routes are declared beside this module, on this blueprint.
from web import users_api  # noqa: E402,F401
