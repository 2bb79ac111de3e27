"""The dashboard's submit forms: a job of each kind (generated from and validated by
core.engine.params) and a train sweep; the cross-validation form (web.cv_views) shares the
choices and the folder and queue fields."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for

from core.common.errors import NotFound, UserInputError
from core.common.formats import percent
from core.engine.training.early_stopping import EARLY_STOPPING_METRICS
from core.service import data_folders as folder_service
from core.service import jobs as job_service
from core.service.access import require_submit
from core.service.jobs.request import JobRequest, Origin, SweepRequest, parse_request
from core.service.records import JOB_KINDS, DataFolder
from web import forms
from web.auth import current_actor, login_required
from web.db import commit, db
from web.inputs import csv_name_problem, storable_id
from web.settings import app_settings
from worker import dispatch

bp = Blueprint("submit", __name__)


def form_choices(session: Any, kind: str = "train", preset_folder: int | None = None, preset_parent: str = "") -> dict[str, Any]:
    """The registered folders (each with the CSV files and named splits a job of this kind may read there) and
    model jobs to choose from, and which of each the form shows chosen: as submitted, else the preset (the parent
    job's folder, ?parent=), else the only one there is."""
    folders = []
    for folder in folder_service.list_data_folders(session):
        names = forms.offered_names(folder.report, kind)
        folders.append(
            {
                "id": folder.id,
                "name": folder.name,
                "path": folder.path,
                "names": names,
                "image_size": (folder.report or {}).get("image_size"),
                "preset": forms.preset_name(names, kind),
            }
        )
    parents = [
        {
            "id": j.id,
            "label": f"#{j.id} {j.kind} {j.params.get('arch') or ''} "
            f"{'' if j.best_valid_accuracy is None else percent(j.best_valid_accuracy)}",
        }
        for j in job_service.model_jobs(session)
    ]
    return {
        "folders": folders,
        "parents": parents,
        "chosen_folder": _chosen("data_folder", folders, preset_folder),
        "chosen_parent": _chosen("parent_id", parents, preset_parent),
    }


def _chosen(name: str, rows: list[dict[str, Any]], preset: Any) -> str:
    """The id a select shows chosen, as text ("" for none)."""
    if request.method == "POST":
        return request.form.get(name, "")
    if preset:
        return str(preset)
    return str(rows[0]["id"]) if len(rows) == 1 else ""


def selected_folder(session: Any, errors: dict[str, str]) -> DataFolder | None:
    raw = request.form.get("data_folder", "")
    folder = folder_service.find_data_folder(session, int(raw)) if raw.isdigit() else None
    if folder is None:
        errors["data_folder"] = "choose a registered data folder (register one under Data folders)"
    return folder


def selected_parent(errors: dict[str, str]) -> int | None:
    raw = request.form.get("parent_id", "")
    if raw.isdigit() and storable_id(int(raw)):
        return int(raw)
    errors["parent_id"] = "choose the job whose checkpoint to start from"
    return None


def queue_choice() -> str | None:
    return request.form.get("queue", "").strip() or None


def record_submit_error(error: UserInputError, kind: str, errors: dict[str, str]) -> None:
    """Put a one-line error from the job service next to the field it is about (else above the form)."""
    name = "data_folder" if error.field == "data_dir" else error.field
    shown = {f.name for f in forms.form_fields(kind)} | {"parent_id", "data_folder", "queue"}
    errors[name if name in shown else forms.FORM_LEVEL] = str(error)


@bp.route("/jobs/new/<kind>", methods=("GET", "POST"))
@login_required
def new_job(kind: str) -> Any:
    """One form per job kind, generated from and validated by core.engine.params."""
    if kind not in JOB_KINDS:
        raise NotFound(f"no form for job kind {kind!r}")
    actor = current_actor()
    if request.method == "GET":
        require_submit(actor)  # the form only for those who may submit
    errors: dict[str, str] = {}
    values = forms.values_from_form(kind, request.form) if request.method == "POST" else {}
    if request.method == "POST":
        folder = selected_folder(db(), errors)
        data_dir = folder.path if folder else ""
        parent_id = None if kind == "train" else selected_parent(errors)
        errors.update(
            {k: v for k, v in forms.validation_errors(kind, {**values, "data_dir": data_dir or "-"}).items() if k not in errors}
        )
        if kind in ("evaluate", "predict") and (csv_problem := csv_name_problem(values.get("csv"))):
            errors["csv"] = csv_problem  # the web's own rule, stricter than the params' (a file name, no path)
        options = forms.options_from_form(request.form, errors)
        if not errors:
            try:
                job_request = parse_request(
                    JobRequest,
                    {
                        "kind": kind,
                        "params": {**values, "data_dir": data_dir},
                        "parent_id": parent_id,
                        "queue": queue_choice(),
                        "options": options,
                    },
                )
                commit()  # worker.dispatch commits the job in a transaction of its own, then sends it (web.db)
                job_id = dispatch.submit(job_request, actor=actor, origin=Origin.FORM, settings=app_settings()).id
            except UserInputError as error:
                record_submit_error(error, kind, errors)
            else:
                flash(f"Job {job_id} queued.")
                return redirect(url_for("views.job_detail", job_id=job_id))
        else:
            require_submit(actor)  # refused before the form comes back (a submit is checked by the service)
    preset_parent = request.args.get("parent", "")
    choices = form_choices(db(), kind, parent_folder_id(db(), preset_parent), preset_parent)
    status = 400 if errors else 200
    chosen = next((f for f in choices["folders"] if str(f["id"]) == choices["chosen_folder"]), None)
    split_value = request.form.get(forms.SPLIT_FIELD, "") if request.method == "POST" else (chosen or {}).get("preset", "")
    return render_template(
        "job_form.html",
        kind=kind,
        fields=forms.form_fields(kind),
        values=values,
        errors=errors,
        form=request.form,
        split_name=forms.SPLIT_FIELD,
        split_value=split_value,
        **choices,
    ), status


def parent_folder_id(session: Any, parent: str) -> int | None:
    """The registered data folder the parent job (?parent=ID) used, to preselect it; None when there is none."""
    job = job_service.find_job(session, int(parent)) if parent.isdigit() else None
    if job is None:
        return None
    folder = folder_service.registered_folder_by_path(session, job.data_dir or job.params.get("data_dir") or "")
    return folder.id if folder else None


@bp.route("/sweeps/new", methods=("GET", "POST"))
@login_required
def new_sweep() -> Any:
    """A train grid: fixed values from the train form, varied ones as comma-separated lists."""
    actor = current_actor()
    if request.method == "GET":
        require_submit(actor)  # the form only for those who may submit
    errors: dict[str, str] = {}
    values = forms.values_from_form("train", request.form) if request.method == "POST" else {}
    grid: dict[str, list[str]] = {}
    if request.method == "POST":
        for name in forms.SWEEP_FIELDS:
            listed = forms.split_sweep_values(name, request.form.get(f"grid_{name}", ""))
            if listed:
                grid[name] = listed
        if not grid:
            errors["grid"] = "give at least one field several values, e.g. lr: 0.001, 0.0003"
        folder = selected_folder(db(), errors)
        data_dir = folder.path if folder else ""
        errors.update(
            {
                k: v
                for k, v in forms.validation_errors("train", {**values, "data_dir": data_dir or "-"}).items()
                if k not in errors and k not in grid
            }
        )
        options = forms.options_from_form(request.form, errors)
        rule = forms.median_rule_from_form(request.form, errors)
        if not errors:
            try:
                sweep_request = parse_request(
                    SweepRequest,
                    {
                        "kind": "train",
                        "base_params": {**values, "data_dir": data_dir},
                        "grid": grid,
                        "name": request.form.get("name", "").strip()[:200] or None,
                        "queue": queue_choice(),
                        "options": options,
                        "early_stopping": rule,
                    },
                )
                commit()  # worker.dispatch commits the jobs in a transaction of its own, then sends them (web.db)
                queued = dispatch.submit(sweep_request, actor=actor, origin=Origin.FORM, settings=app_settings())
            except UserInputError as error:
                errors["grid" if error.field == "grid" else forms.FORM_LEVEL] = str(error)
            else:
                flash(f"Sweep {queued.id} queued: {len(queued.jobs)} jobs.")
                return redirect(url_for("views.job_list", sweep=queued.id))
        else:
            require_submit(actor)  # refused before the form comes back (a submit is checked by the service)
    choices = form_choices(db())
    return render_template(
        "sweep_form.html",
        fields=forms.form_fields("train"),
        values=values,
        errors=errors,
        form=request.form,
        sweep_fields=forms.SWEEP_FIELDS,
        median_metrics=EARLY_STOPPING_METRICS,
        **choices,
    ), (400 if errors else 200)
