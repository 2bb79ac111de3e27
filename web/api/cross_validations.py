"""Cross-validations: submit, read, delete, and the fold ensemble's evaluate or predict job."""

from __future__ import annotations

from typing import Any

from core.common.errors import UserInputError
from core.service import deletion
from core.service.cv_jobs import cross_validation_summary
from core.service.jobs.request import EnsembleRequest, Origin
from web.api import schemas
from web.api.blueprint import answer, bp
from web.api.jobs import check_web_params, job_response
from web.auth import current_actor
from web.db import commit, db
from web.inputs import csv_name_problem, json_body
from web.openapi import operation
from web.settings import app_settings
from worker import dispatch


@operation(
    bp,
    "post",
    "/cross-validations",
    operation_id="submitCrossValidation",
    tag="cross-validations",
    body=schemas.CrossValidationSubmission,
    responses={201: schemas.CrossValidation},
    errors=(400, 403, 413, 503),
)
def submit_cross_validation() -> Any:
    """Submit a cross-validation: one training job per fold"""
    submission = json_body(schemas.CrossValidationSubmission)
    check_web_params(submission.params)
    actor = current_actor()
    commit()  # worker.dispatch commits the jobs in a transaction of its own, then sends them (web.db)
    return cross_validation_response(dispatch.submit(submission, actor=actor, origin=Origin.API, settings=app_settings()).id, 201)


def cross_validation_response(cv_id: int, status: int = 200) -> Any:
    return answer(schemas.CrossValidation.model_validate(cross_validation_summary(db(), cv_id)), status)


@operation(
    bp,
    "get",
    "/cross-validations/<int:cv_id>",
    operation_id="getCrossValidation",
    tag="cross-validations",
    responses={200: schemas.CrossValidation},
    errors=(404,),
)
def get_cross_validation(cv_id: int) -> Any:
    """One cross-validation: its fold jobs, best metrics per fold, mean ± std, out-of-fold metrics, ensembles"""
    return cross_validation_response(cv_id)


@operation(
    bp,
    "delete",
    "/cross-validations/<int:cv_id>",
    operation_id="deleteCrossValidation",
    tag="cross-validations",
    responses={200: schemas.Deletion},
    errors=(400, 403, 404, 409, 503),
)
def delete_cross_validation(cv_id: int) -> Any:
    """Delete a cross-validation whose jobs have all finished: its fold and ensemble jobs' files and rows, then it"""
    done = deletion.delete_cross_validation(db(), cv_id, actor=current_actor())
    return answer(schemas.Deletion(job_ids=done.job_ids, cv_id=cv_id, freed_bytes=done.freed_bytes))


@operation(
    bp,
    "post",
    "/cross-validations/<int:cv_id>/ensemble",
    operation_id="submitEnsemble",
    tag="cross-validations",
    body=schemas.EnsembleSubmission,
    responses={201: schemas.Job},
    errors=(400, 403, 404, 409, 413, 503),
)
def submit_ensemble(cv_id: int) -> Any:
    """Submit an evaluate or predict job averaging a finished cross-validation's fold models"""
    submission = json_body(schemas.EnsembleSubmission)
    if problem := csv_name_problem(submission.split):
        raise UserInputError(f"split: {problem}", field="split")
    ensemble = EnsembleRequest(cv_id=cv_id, **dict(submission))
    actor = current_actor()
    commit()  # worker.dispatch commits the job in a transaction of its own, then sends it (web.db)
    return job_response(dispatch.submit(ensemble, actor=actor, origin=Origin.API, settings=app_settings()).id, 201)
