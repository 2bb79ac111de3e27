"""The JSON API: every dashboard action, for programs (Authorization: Bearer <token>).

Reads also accept a logged-in browser session (the live pages poll them); writes need the token,
so the CSRF-exempt API cannot be driven by another site through a person's cookie."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, jsonify, request, send_file
from sqlalchemy import text

from core import jobs as job_service
from core.db import get_engine, get_sessionmaker
from core.errors import UserInputError
from core.params import PARAMS_BY_KIND
from core.records import JOB_KINDS, JOB_STATUSES
from web import queries
from web.auth import bearer_token_valid
from web.openapi import openapi_document
from worker import dispatch

bp = Blueprint("api", __name__, url_prefix="/api")
PUBLIC_ENDPOINTS = {"api.health", "api.openapi"}
MAX_PER_PAGE = 200


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


# --- request parsing: every bad value is a UserInputError naming its field ---------------------


def json_body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise UserInputError("body: send a JSON object with Content-Type: application/json", field="body")
    return body


def optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 2**63 - 1:
        raise UserInputError(f"{name}: must be a positive integer or null", field=name)
    return value


def optional_str(body: dict[str, Any], name: str, max_length: int = 100) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= max_length:
        raise UserInputError(
            f"{name}: must be a non-empty string of at most {max_length} characters, or null", field=name
        )
    return value.strip()


def job_kind(body: dict[str, Any]) -> str:
    kind = body.get("kind")
    if kind not in PARAMS_BY_KIND:
        raise UserInputError(f"kind: must be one of {', '.join(PARAMS_BY_KIND)}", field="kind")
    return kind


def params_object(body: dict[str, Any], name: str = "params") -> dict[str, Any]:
    params = body.get(name, {})
    if not isinstance(params, dict):
        raise UserInputError(f"{name}: must be an object of field: value", field=name)
    return params


def check_web_params(params: dict[str, Any]) -> None:
    """No filesystem path from a request: the data folder must be registered, checkpoints come from a parent."""
    for name in ("checkpoint", "checkpoints"):
        if params.get(name):
            raise UserInputError(
                f"{name}: paths are not accepted over the web; give parent_id and checkpoint_choice", field=name
            )
    data_dir = params.get("data_dir")
    if not isinstance(data_dir, str) or not data_dir:
        raise UserInputError(
            "data_dir: give the path of a registered data folder (GET /api/data-folders)", field="data_dir"
        )
    with get_sessionmaker().begin() as session:
        if queries.registered_folder_by_path(session, data_dir) is None:
            raise UserInputError(
                f"data_dir: {data_dir!r} is not a registered data folder (GET /api/data-folders)", field="data_dir"
            )
    csv = params.get("csv")
    if isinstance(csv, str) and ("/" in csv or "\\" in csv or csv.startswith(".")):
        raise UserInputError(f"csv: {csv!r} must be a file name inside the data folder, e.g. test.csv", field="csv")


def query_int(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserInputError(f"{name}: must be an integer", field=name) from None
    if not low <= value <= high:
        raise UserInputError(f"{name}: must be between {low} and {high}", field=name)
    return value


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    value = request.args.get(name) or None
    if value is not None and value not in choices:
        raise UserInputError(f"{name}: must be one of {', '.join(choices)}", field=name)
    return value


def page_body(items: list[dict[str, Any]], total: int, page: int, per_page: int, key: str) -> dict[str, Any]:
    return {key: items, "total": total, "page": page, "per_page": per_page}


# --- health and document ----------------------------------------------------------------------


@bp.get("/health")
def health() -> Any:
    """For compose healthchecks: is the database reachable?"""
    try:
        with get_engine().connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any driver error means "not reachable"; the reason is reported
        return jsonify({"status": "unavailable", "database": f"unreachable: {type(error).__name__}"}), 503
    return jsonify({"status": "ok", "database": "reachable"})


@bp.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document())


# --- jobs ------------------------------------------------------------------------------------------


@bp.post("/jobs")
def submit_job() -> Any:
    body = json_body()
    kind = job_kind(body)
    params = params_object(body)
    parent_id, queue = optional_int(body, "parent_id"), optional_str(body, "queue")
    check_web_params(params)
    job_id = dispatch.submit_job(kind, params, parent_id=parent_id, queue=queue)
    return job_response(job_id, 201)


@bp.get("/jobs")
def list_jobs() -> Any:
    status = query_choice("status", JOB_STATUSES)
    kind = query_choice("kind", JOB_KINDS)
    sweep_id = query_int("sweep_id", 0, 0, 2**63 - 1) or None
    page, per_page = query_int("page", 1, 1, 10**6), query_int("per_page", 50, 1, MAX_PER_PAGE)
    with get_sessionmaker().begin() as session:
        jobs, total = job_service.list_jobs(session, status=status, kind=kind, sweep_id=sweep_id, page=page, per_page=per_page)
        return jsonify(page_body(queries.job_rows(session, jobs), total, page, per_page, "jobs"))


def job_response(job_id: int, status: int = 200) -> Any:
    with get_sessionmaker().begin() as session:
        job = queries.find_job(session, job_id)
        if job is None:
            abort(404, description=f"job {job_id} not found")
        return jsonify(queries.job_rows(session, [job])[0]), status


@bp.get("/jobs/<int:job_id>")
def get_job(job_id: int) -> Any:
    return job_response(job_id)


def existing_job_id(job_id: int) -> int:
    with get_sessionmaker().begin() as session:
        if queries.find_job(session, job_id) is None:
            abort(404, description=f"job {job_id} not found")
    return job_id


@bp.post("/jobs/<int:job_id>/cancel")
def cancel_job(job_id: int) -> Any:
    dispatch.cancel_job(existing_job_id(job_id))
    return job_response(job_id)


@bp.post("/jobs/<int:job_id>/retry")
def retry_job(job_id: int) -> Any:
    dispatch.retry_job(existing_job_id(job_id))
    return job_response(job_id)


@bp.get("/jobs/<int:job_id>/metrics")
def job_metrics(job_id: int) -> Any:
    existing_job_id(job_id)
    with get_sessionmaker().begin() as session:
        rows = [queries.metric_dict(m) for m in job_service.epoch_metrics(session, job_id)]
    return jsonify({"job_id": job_id, "epochs": rows})


@bp.get("/jobs/<int:job_id>/artifacts")
def job_artifacts(job_id: int) -> Any:
    existing_job_id(job_id)
    with get_sessionmaker().begin() as session:
        rows = [queries.artifact_dict(a) for a in job_service.artifacts(session, job_id)]
    return jsonify({"job_id": job_id, "artifacts": rows})


@bp.get("/jobs/<int:job_id>/artifacts/<int:artifact_id>")
def download_artifact(job_id: int, artifact_id: int) -> Any:
    return send_artifact(job_id, artifact_id)


def send_artifact(job_id: int, artifact_id: int) -> Any:
    """Send a recorded artifact's file by id; no path ever comes from the request."""
    with get_sessionmaker().begin() as session:
        artifact = queries.find_artifact(session, job_id, artifact_id)
        if artifact is None:
            abort(404, description=f"artifact {artifact_id} of job {job_id} not found")
        path, name = queries.artifact_file(artifact), artifact.name
    if path is None:
        abort(404, description=f"artifact {artifact_id}: its file is missing from the artifacts folder")
    return send_file(path, as_attachment=True, download_name=name)


# --- sweeps -----------------------------------------------------------------------------------------


def grid_object(body: dict[str, Any]) -> dict[str, list[Any]]:
    grid = body.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise UserInputError("grid: must be an object of field: [value, ...] with at least one field", field="grid")
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            raise UserInputError(f"grid: {name} must map to a non-empty list of values", field="grid")
        if name in ("data_dir", "checkpoint", "checkpoints", "kind"):
            raise UserInputError(f"grid: {name} cannot be varied over the web", field="grid")
    return grid


@bp.post("/sweeps")
def submit_sweep() -> Any:
    body = json_body()
    kind = job_kind(body)
    base_params = params_object(body, "base_params")
    grid = grid_object(body)
    name, queue = optional_str(body, "name", 200), optional_str(body, "queue")
    parent_id = optional_int(body, "parent_id")
    check_web_params(base_params)
    sweep_id, _ = dispatch.submit_sweep(kind, base_params, grid, name=name, parent_id=parent_id, queue=queue)
    return sweep_response(sweep_id, 201)


def sweep_response(sweep_id: int, status: int = 200) -> Any:
    with get_sessionmaker().begin() as session:
        sweep = queries.find_sweep(session, sweep_id)
        if sweep is None:
            abort(404, description=f"sweep {sweep_id} not found")
        return jsonify(queries.sweep_dict(sweep, queries.sweep_job_ids(session, sweep_id))), status


@bp.get("/sweeps")
def list_sweeps() -> Any:
    page, per_page = query_int("page", 1, 1, 10**6), query_int("per_page", 50, 1, MAX_PER_PAGE)
    with get_sessionmaker().begin() as session:
        sweeps, total = queries.list_sweeps(session, page, per_page)
        items = [queries.sweep_dict(s, queries.sweep_job_ids(session, s.id)) for s in sweeps]
    return jsonify(page_body(items, total, page, per_page, "sweeps"))


@bp.get("/sweeps/<int:sweep_id>")
def get_sweep(sweep_id: int) -> Any:
    return sweep_response(sweep_id)


# --- data folders ---------------------------------------------------------------------------------


@bp.post("/data-folders")
def register_data_folder() -> Any:
    body = json_body()
    path = body.get("path")
    if not isinstance(path, str):
        raise UserInputError("path: give the absolute path of a data folder under a data root", field="path")
    name = optional_str(body, "name", 200) or ""
    with get_sessionmaker().begin() as session:
        folder = queries.register_data_folder(session, name, path)
        return jsonify(queries.data_folder_dict(folder)), 201


@bp.get("/data-folders")
def list_data_folders() -> Any:
    with get_sessionmaker().begin() as session:
        return jsonify({"data_folders": [queries.data_folder_dict(f) for f in queries.list_data_folders(session)]})
