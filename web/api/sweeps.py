"""Sweeps: submit a grid, list, read, edit, delete."""

from __future__ import annotations

from typing import Any

from core.common.errors import UserInputError
from core.service import deletion, job_edits
from core.service import jobs as job_service
from core.service.jobs.request import Origin
from web import row_models
from web.api import schemas
from web.api.blueprint import answer, bp
from web.api.jobs import check_web_params
from web.auth import current_actor
from web.db import commit, db
from web.inputs import csv_name_problem, json_body, query_model
from web.openapi import operation
from web.settings import app_settings
from worker import dispatch


@operation(
    bp,
    "post",
    "/sweeps",
    operation_id="submitSweep",
    tag="sweeps",
    body=schemas.SweepSubmission,
    responses={201: schemas.Sweep},
    errors=(400, 403, 413, 503),
)
def submit_sweep() -> Any:
    """Submit a grid sweep: one job per point"""
    submission = json_body(schemas.SweepSubmission)
    for name in submission.grid:
        if name in schemas.NOT_IN_WEB_GRIDS:
            raise UserInputError(f"grid: {name} cannot be varied over the web", field="grid")
    check_web_params(submission.base_params)
    for csv in submission.grid.get("csv", []):  # the check a single job's csv gets
        if problem := csv_name_problem(csv):
            raise UserInputError(f"grid: csv {problem}", field="grid")
    actor = current_actor()
    commit()  # worker.dispatch commits the jobs in a transaction of its own, then sends them (web.db)
    return sweep_response(dispatch.submit(submission, actor=actor, origin=Origin.API, settings=app_settings()).id, 201)


def sweep_response(sweep_id: int, status: int = 200) -> Any:
    sweep = job_edits.get_sweep(db(), sweep_id)
    return answer(row_models.sweep_model(db(), sweep), status)


@operation(
    bp,
    "get",
    "/sweeps",
    operation_id="listSweeps",
    tag="sweeps",
    query=schemas.SweepListQuery,
    responses={200: schemas.SweepPage},
    errors=(400,),
)
def list_sweeps() -> Any:
    """Sweeps, newest first"""
    query = query_model(schemas.SweepListQuery)
    sweeps, total = job_service.list_sweeps(db(), query.page, query.per_page, tag=query.tag)
    items = [row_models.sweep_model(db(), sweep) for sweep in sweeps]
    return answer(schemas.SweepPage(sweeps=items, total=total, page=query.page, per_page=query.per_page))


@operation(
    bp, "get", "/sweeps/<int:sweep_id>", operation_id="getSweep", tag="sweeps", responses={200: schemas.Sweep}, errors=(404,)
)
def get_sweep(sweep_id: int) -> Any:
    """One sweep"""
    return sweep_response(sweep_id)


@operation(
    bp,
    "patch",
    "/sweeps/<int:sweep_id>",
    operation_id="editSweep",
    tag="sweeps",
    body=schemas.OptionsEdit,
    responses={200: schemas.Sweep},
    errors=(400, 403, 404, 413),
)
def edit_sweep(sweep_id: int) -> Any:
    """Change a sweep's notes, tags, priority (also its queued jobs') or retention; fields left out stay"""
    changes, actor = json_body(schemas.OptionsEdit), current_actor()
    job_edits.edit_sweep(db(), actor, sweep_id, changes)
    return sweep_response(sweep_id)


@operation(
    bp,
    "delete",
    "/sweeps/<int:sweep_id>",
    operation_id="deleteSweep",
    tag="sweeps",
    responses={200: schemas.Deletion},
    errors=(400, 403, 404, 409, 503),
)
def delete_sweep(sweep_id: int) -> Any:
    """Delete a sweep whose jobs have all finished: every job's files and rows, then the sweep"""
    done = deletion.delete_sweep(db(), sweep_id, actor=current_actor())
    return answer(schemas.Deletion(job_ids=done.job_ids, sweep_id=sweep_id, freed_bytes=done.freed_bytes))
