"""Dashboard pages: the job list, the job pages, compare, data folders. Each view parses its input, calls
one core/worker function, renders rows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, send_file, url_for

from core.common.errors import StateConflict, UserInputError
from core.common.formats import human_bytes
from core.service import data_folders as folder_service
from core.service import deletion, job_edits, webhooks
from core.service import jobs as job_service
from core.service.disk import disk_summary
from core.service.job_options import JobOptionsEdit
from core.service.records import (
    CANCELLABLE_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    MODEL_KINDS,
    RETRYABLE_STATUSES,
    JobStatus,
    utcnow,
)
from web import compare as compare_table
from web import forms, results, row_models
from web.api import schemas
from web.auth import current_actor, login_required
from web.db import commit, db, rollback
from web.downloads import send_artifact
from web.errors import refusal_status
from web.inputs import query_choice, query_int
from web.paging import Pager, requested_page
from web.settings import app_settings
from worker import dispatch

bp = Blueprint("views", __name__)
JOBS_PER_PAGE = 50
POLL_INTERVAL_MS = 2000  # how often a job page or the job list asks for its live regions
# plotly.js (the cartesian partial bundle: scatter, bar, heatmap...) vendored beside its licence
# (web/static/plotly.LICENSE.txt): the one file of plotly the app uses.
PLOTLY_JS = Path(__file__).resolve().parent / "static" / "plotly-cartesian.min.js"


@bp.app_template_filter("when")
def when(value: datetime | str | None) -> str:
    """A UTC time as '2024-05-01 12:00:00', from a row's datetime or an API model's ISO text ('...Z')."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value.removesuffix("Z")) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@bp.app_template_filter("run_seconds")
def run_seconds(job: dict[str, Any]) -> float | None:
    """How long a job (an API model's JSON) has run: from its start to its end, or to now while it runs; None
    while queued (a retried job's old start does not count)."""
    if job["status"] == JobStatus.queued or not job["started_at"]:
        return None
    started = datetime.fromisoformat(job["started_at"].removesuffix("Z"))
    ended = datetime.fromisoformat(job["finished_at"].removesuffix("Z")) if job["finished_at"] else utcnow()
    return max(0.0, (ended - started).total_seconds())


@bp.get("/vendor/plotly-cartesian.min.js")
def plotly_js() -> Any:
    """plotly.js from this package (no CDN: browsers may have no internet), cached for a day."""
    return send_file(PLOTLY_JS, mimetype="text/javascript", max_age=86400)


@bp.get("/favicon.ico")
def favicon() -> Any:
    """The tab icon (static/favicon.svg, linked from every page) where browsers look for it unasked."""
    return send_file(Path(__file__).resolve().parent / "static" / "favicon.svg", mimetype="image/svg+xml", max_age=86400)


# --- jobs --------------------------------------------------------------------------------------


@bp.get("/")
@login_required
def job_list() -> Any:
    """Newest jobs first, filtered by status, kind or sweep, one page at a time."""
    return _job_list_page(*_job_list_query())


@bp.get("/jobs/live")
@login_required
def job_list_live() -> Any:
    """The job list's live regions alone (jobs_live.html), for the same query, drawn from the page's own context:
    live.js swaps them in."""
    return _job_list_page(*_job_list_query(), template="jobs_live.html")


def _job_list_query() -> tuple[str | None, str | None, int | None, str | None, int]:
    """The job list's query arguments: status, kind, sweep, tag and page (a bad one is a 400 naming it)."""
    status, kind = query_choice("status", JOB_STATUSES), query_choice("kind", JOB_KINDS)
    sweep_id, page = query_int("sweep", None), requested_page()
    tag = request.args.get("tag", "").strip() or None
    return status, kind, sweep_id, tag, page


def _job_list_page(
    status: str | None,
    kind: str | None,
    sweep_id: int | None,
    tag: str | None,
    page: int,
    sweep_form: Any = None,
    sweep_errors: dict[str, str] | None = None,
    template: str = "jobs.html",
) -> Any:
    """The job list (or its live regions); for one sweep, headed by its notes, tags and edit form (as submitted and
    marked: a 400)."""
    per_page = JOBS_PER_PAGE
    jobs, total = job_service.list_jobs(db(), status=status, kind=kind, sweep_id=sweep_id, tag=tag, page=page, per_page=per_page)
    rows = [job.model_dump(mode="json") for job in row_models.job_models(db(), jobs)]
    disk = disk_summary(db())
    sweep = _sweep_card(db(), sweep_id, sweep_form, sweep_errors) if sweep_id is not None else None
    sweep_rule = row_models.sweep_rule_text(db(), sweep_id) if sweep_id is not None else None
    lost = [worker.hostname for worker in webhooks.lost_workers(db(), within_hours=24, limit=10)]
    filters = {"status": status, "kind": kind, "sweep": sweep_id, "tag": tag and job_service.tag_filter(tag)}
    return render_template(
        template,
        rows=rows,
        all_finished=all(row["finished"] for row in rows),  # nothing shown can change: live.js stops asking
        poll_ms=POLL_INTERVAL_MS,
        total=total,
        paged=Pager(page, per_page, total),
        filters=filters,
        statuses=JOB_STATUSES,
        kinds=JOB_KINDS,
        sweep=sweep,
        disk=disk,
        sweep_rule=sweep_rule,
        lost_workers=lost,
    ), (400 if sweep_errors else 200)


def _sweep_card(session: Any, sweep_id: int, form: Any = None, errors: dict[str, str] | None = None) -> dict | None:
    """A sweep's name, notes and tags, and its edit form's values (the job list's header for one sweep)."""
    sweep = job_service.find_sweep(session, sweep_id)
    if sweep is None:
        return None
    options = job_service.options_of(session, sweep)
    return {
        "id": sweep.id,
        "name": sweep.name,
        "options": options.model_dump(),
        "submitted_by": sweep.submitted_by,
        "form": form or forms.options_form_values(options),
        "errors": errors or {},
    }


@bp.get("/jobs/<int:job_id>")
@login_required
def job_detail(job_id: int) -> Any:
    """Parameters, curves, confusion matrix, metrics, error, log and files of one job."""
    return _job_page(job_id)


@bp.get("/jobs/<int:job_id>/live")
@login_required
def job_live(job_id: int) -> Any:
    """The job page's live regions alone (job_live.html), drawn from the page's own context: live.js swaps them in."""
    return _job_page(job_id, template="job_live.html")


def _job_page(job_id: int, form: Any = None, errors: dict[str, str] | None = None, template: str = "job.html") -> Any:
    """The job page (or its live regions); with form and errors, its edit form as submitted, marked (a 400)."""
    job = job_service.get_job(db(), job_id)
    row = row_models.job_models(db(), [job])[0].model_dump(mode="json")
    metrics = [row_models.epoch_model(m).model_dump(mode="json") for m in job_service.epoch_metrics(db(), job_id)]
    artifacts = [schemas.Artifact.model_validate(a).model_dump(mode="json") for a in job_service.artifacts(db(), job_id)]
    heatmap_note = results.heatmap_note(results.explained_image_size(db(), job)) if job.kind not in MODEL_KINDS else None
    edit_form = form or forms.options_form_values(job_service.options_of(db(), job))
    children = [child.model_dump(mode="json") for child in row_models.job_models(db(), job_service.child_jobs(db(), job_id))]
    return render_template(
        template,
        job=row,
        metrics=metrics,
        artifacts=artifacts,
        heatmap_note=heatmap_note,
        children=children,
        results_error=results.results_error(job_id, row["kind"], row["status"]),
        poll_ms=POLL_INTERVAL_MS,
        cancellable=CANCELLABLE_STATUSES,
        retryable=RETRYABLE_STATUSES,
        model_kinds=MODEL_KINDS,
        retention=app_settings().retention,
        edit_form=edit_form,
        edit_errors=errors or {},
    ), (400 if errors else 200)


@bp.post("/jobs/<int:job_id>/edit")
@login_required
def edit_job(job_id: int) -> Any:
    """The job page's notes-and-tags form: every field as shown replaces the stored one."""
    errors: dict[str, str] = {}
    options = forms.options_from_form(request.form, errors)
    if options is None:
        return _job_page(_existing(job_id), request.form, errors)
    changed = job_edits.edit_job(db(), current_actor(), _existing(job_id), JobOptionsEdit(**options.model_dump()), app_settings())
    flash(job_edits.describe_changes(f"Job {job_id}", changed) + ".")
    return redirect(url_for("views.job_detail", job_id=job_id))


@bp.post("/sweeps/<int:sweep_id>/edit")
@login_required
def edit_sweep(sweep_id: int) -> Any:
    """The sweep header's notes-and-tags form (on the job list of the sweep); a new priority reaches its queued jobs."""
    errors: dict[str, str] = {}
    options = forms.options_from_form(request.form, errors)
    job_edits.get_sweep(db(), sweep_id)
    if options is not None:
        changed = job_edits.edit_sweep(db(), current_actor(), sweep_id, JobOptionsEdit(**options.model_dump()))
    if options is None:
        return _job_list_page(None, None, sweep_id, None, 1, request.form, errors)
    flash(job_edits.describe_changes(f"Sweep {sweep_id}", changed) + ".")
    return redirect(url_for("views.job_list", sweep=sweep_id))


@bp.post("/jobs/<int:job_id>/cancel")
@login_required
def cancel(job_id: int) -> Any:
    _existing(job_id)
    actor = current_actor()
    commit()  # worker.dispatch changes the job in a transaction of its own (web.db)
    status = dispatch.cancel_job(job_id, actor=actor)
    flash(f"Job {job_id}: {'cancelled' if status == JobStatus.cancelled else 'cancel requested; it stops at its next batch'}.")
    return redirect(url_for("views.job_detail", job_id=job_id))


@bp.post("/jobs/<int:job_id>/retry")
@login_required
def retry(job_id: int) -> Any:
    _existing(job_id)
    actor = current_actor()
    commit()  # worker.dispatch changes the job in a transaction of its own (web.db)
    dispatch.retry_job(job_id, actor=actor, settings=app_settings())
    flash(f"Job {job_id} queued again.")
    return redirect(url_for("views.job_detail", job_id=job_id))


@bp.post("/jobs/<int:job_id>/delete")
@login_required
def delete_job(job_id: int) -> Any:
    """Delete a finished job and its files; a refusal (queued, running, needed) is flashed on its page."""
    _existing(job_id)
    return delete_and_flash(
        deletion.delete_job,
        job_id,
        f"Job {job_id}",
        refused=url_for("views.job_detail", job_id=job_id),
        deleted=url_for("views.job_list"),
    )


@bp.post("/sweeps/<int:sweep_id>/delete")
@login_required
def delete_sweep(sweep_id: int) -> Any:
    """Delete a finished sweep, all its jobs and their files."""
    job_edits.get_sweep(db(), sweep_id)
    return delete_and_flash(
        deletion.delete_sweep,
        sweep_id,
        f"Sweep {sweep_id}",
        refused=url_for("views.job_list", sweep=sweep_id),
        deleted=url_for("views.job_list"),
    )


def delete_and_flash(delete: Callable[..., deletion.Deletion], target_id: int, target: str, *, refused: str, deleted: str) -> Any:
    """Run one of core.service.deletion's deletes on target_id as the current user and flash the outcome: the
    space freed (then on to `deleted`), or the refusal, such as a job still running or needed, as an error
    (back to `refused`)."""
    actor = current_actor()
    try:
        done = delete(db(), target_id, actor=actor)
    except (UserInputError, StateConflict) as refusal:
        rollback()
        flash(f"{target} not deleted: {refusal}", "error")
        return redirect(refused)
    flash(f"Deleted {done.what}: {human_bytes(done.freed_bytes)} freed.")
    return redirect(deleted)


def _existing(job_id: int) -> int:
    job_service.get_job(db(), job_id)
    return job_id


@bp.get("/jobs/<int:job_id>/artifacts/<int:artifact_id>")
@login_required
def download(job_id: int, artifact_id: int) -> Any:
    return send_artifact(job_id, artifact_id)


# --- compare and data folders -----------------------------------------------------------------------


@bp.get("/compare")
@login_required
def compare() -> Any:
    """Two or more runs: curves overlaid (drawn by compare.js from the API) and a metrics table."""
    raw = ",".join(request.args.getlist("ids"))
    candidates = [
        {"id": j.id, "kind": j.kind, "status": j.status, "arch": j.params.get("arch"), "best": j.best_valid_accuracy}
        for j in job_service.recent_jobs(db())
    ]
    if not raw:
        return render_template("compare.html", runs=[], candidates=candidates, ids="")
    ids = row_models.parse_job_ids(raw)
    runs = compare_table.compared_runs(db(), [job_service.get_job(db(), job_id) for job_id in ids])
    return render_template(
        "compare.html", runs=runs, candidates=candidates, ids=",".join(map(str, ids)), measures=compare_table.MEASURES
    )


@bp.route("/data-folders", methods=("GET", "POST"))
@login_required
def data_folders() -> Any:
    """Register a folder (only under the configured data roots) and see each folder's check report."""
    error, error_field, status = None, None, 200
    if request.method == "POST":
        try:
            folder = folder_service.register_data_folder(
                db(),
                request.form.get("name", ""),
                request.form.get("path", ""),
                actor=current_actor(),
                roots=app_settings().data_root_paths,
            )
            name = folder.name
        except (UserInputError, StateConflict) as problem:
            rollback()
            error, error_field, status = str(problem), problem.field, refusal_status(problem)
        else:
            flash(f"Data folder {name} registered and checked.")
            return redirect(url_for("views.data_folders"))
    folders = [schemas.DataFolder.model_validate(f).model_dump(mode="json") for f in folder_service.list_data_folders(db())]
    roots = app_settings().data_root_paths
    return render_template(
        "data_folders.html", folders=folders, roots=roots, error=error, error_field=error_field, form=request.form
    ), status
