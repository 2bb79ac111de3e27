"""Dashboard pages of cross-validations: the form that queues one training job per fold, the list,
and the page of one (fold table, mean ± std, per-fold curves overlaid, out-of-fold metrics, the
ensemble action). Each view parses its input, calls one core/worker function and renders rows."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from core.common.errors import StateConflict, UserInputError
from core.service import data_folders as folder_service
from core.service import deletion
from core.service.access import require_submit
from core.service.cv_jobs import ENSEMBLE_KINDS, cross_validation_ids, cross_validation_summary, out_of_fold_csv
from core.service.jobs.request import CrossValidationRequest, EnsembleRequest, Origin, parse_request
from core.service.records import CANCELLABLE_STATUSES
from web import forms
from web.auth import current_actor, login_required
from web.db import commit, db
from web.errors import refusal_status
from web.inputs import csv_name_problem
from web.settings import app_settings
from web.submit_views import form_choices, queue_choice, selected_folder
from web.views import delete_and_flash
from worker import dispatch

bp = Blueprint("cv", __name__)
# Each fold sets its own splits.
FOLD_SET_FIELDS = ("split", "valid_split")


def _fields() -> list[forms.FormField]:
    return [item for item in forms.form_fields("train") if item.name not in FOLD_SET_FIELDS]


def _folds_value(errors: dict[str, str]) -> int | None:
    raw = request.form.get("folds", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 2 <= int(raw) <= 20:
        errors["folds"] = "give a whole number from 2 to 20, or leave it blank"
        return None
    return int(raw)


@bp.route("/cross-validations/new", methods=("GET", "POST"))
@login_required
def new_cross_validation() -> Any:
    """One training job per fold with the same parameters; the folds come from the data folder."""
    actor = current_actor()
    if request.method == "GET":
        require_submit(actor)  # the form only for those who may submit
    errors: dict[str, str] = {}
    values = (
        {k: v for k, v in forms.values_from_form("train", request.form).items() if k not in FOLD_SET_FIELDS}
        if request.method == "POST"
        else {}
    )
    if request.method == "POST":
        folds = _folds_value(errors)
        folder = selected_folder(db(), errors)
        data_dir = folder.path if folder else ""
        errors.update(
            {
                k: v
                for k, v in forms.validation_errors("train", {**values, "data_dir": data_dir or "-"}).items()
                if k not in errors
            }
        )
        if not errors:
            try:
                cv_request = parse_request(
                    CrossValidationRequest,
                    {
                        "params": {**values, "data_dir": data_dir},
                        "folds": folds,
                        "release_folds": "release_folds" in request.form,
                        "name": request.form.get("name", "").strip()[:200] or None,
                        "queue": queue_choice(),
                    },
                )
                commit()  # worker.dispatch commits the jobs in a transaction of its own, then sends them (web.db)
                queued = dispatch.submit(cv_request, actor=actor, origin=Origin.FORM, settings=app_settings())
            except UserInputError as error:
                name = "data_folder" if error.field == "data_dir" else error.field  # as the job forms show it
                shown = {f.name for f in _fields()} | {"folds", "data_folder"}
                errors[name if name in shown else forms.FORM_LEVEL] = str(error)
            else:
                flash(f"Cross-validation {queued.id} queued: {len(queued.jobs)} fold jobs.")
                return redirect(url_for("cv.cross_validation", cv_id=queued.id))
        else:
            require_submit(actor)  # refused before the form comes back (a submit is checked by the service)
    choices = form_choices(db())
    return render_template("cv_form.html", fields=_fields(), errors=errors, form=request.form, **choices), (
        400 if errors else 200
    )


@bp.get("/cross-validations")
@login_required
def cross_validations() -> Any:
    """Every cross-validation, newest first, with its folds' states and mean accuracy."""
    summaries = [cross_validation_summary(db(), cv_id) for cv_id in cross_validation_ids(db())]
    return render_template("cv_list.html", summaries=summaries)


def _summary(cv_id: int) -> dict[str, Any]:
    return cross_validation_summary(db(), cv_id)


@bp.get("/cross-validations/<int:cv_id>")
@login_required
def cross_validation(cv_id: int) -> Any:
    """Fold table, mean ± std, per-fold curves overlaid, out-of-fold metrics and the ensemble action."""
    return _page(_summary(cv_id))


@bp.get("/cross-validations/<int:cv_id>/live")
@login_required
def cross_validation_live(cv_id: int) -> Any:
    """The page's live regions alone (cv_live.html), drawn from the page's own context: live.js swaps them in."""
    return _page(_summary(cv_id), template="cv_live.html")


def _page(
    summary: dict[str, Any], errors: dict[str, str] | None = None, form: Any = None, status: int = 200, template: str = "cv.html"
) -> Any:
    """The page of one cross-validation (with the ensemble form's errors: its refusal status), or its live regions;
    live.js keeps them current while any of its jobs is queued or running."""
    jobs = summary["folds"] + summary["ensembles"]
    ended = not any(job["status"] in CANCELLABLE_STATUSES for job in jobs)
    folder = folder_service.registered_folder_by_path(db(), summary["data_dir"])
    names = ((folder.report if folder else None) or {}).get("split_names") or {}
    split_names = {"evaluate": names.get("labelled", []), "predict": names.get("unlabelled", [])}
    return render_template(
        template, cv=summary, errors=errors or {}, form=form, kinds=ENSEMBLE_KINDS, cv_ended=ended, split_names=split_names
    ), status


@bp.post("/cross-validations/<int:cv_id>/ensemble")
@login_required
def ensemble(cv_id: int) -> Any:
    """Queue the fold ensemble as one evaluate or predict job."""
    actor = current_actor()
    kind, split = request.form.get("kind", ""), request.form.get("split", "").strip()
    errors: dict[str, str] = {}
    status = 400
    if kind not in ENSEMBLE_KINDS:
        errors["kind"] = "choose evaluate or predict"
    if not split:
        errors["split"] = "name a split (e.g. prelim, final) or a CSV of the data folder"
    elif problem := csv_name_problem(split):
        errors["split"] = problem
    if not errors:
        try:
            ensemble_request = parse_request(
                EnsembleRequest,
                {"cv_id": cv_id, "kind": kind, "split": split, "tta": "tta" in request.form, "queue": queue_choice()},
            )
            commit()  # worker.dispatch commits the job in a transaction of its own, then sends it (web.db)
            job_id = dispatch.submit(ensemble_request, actor=actor, origin=Origin.FORM, settings=app_settings()).id
        except (UserInputError, StateConflict) as error:
            errors["split" if error.field == "csv" else "ensemble"] = str(error)
            status = refusal_status(error)
        else:
            flash(f"Job {job_id} queued: {kind} with the {len(_summary(cv_id)['folds'])} fold models on {split}.")
            return redirect(url_for("cv.cross_validation", cv_id=cv_id))
    else:
        require_submit(actor)  # refused before the page comes back (a submit is checked by the service)
    return _page(_summary(cv_id), errors, request.form, status)


@bp.post("/cross-validations/<int:cv_id>/delete")
@login_required
def delete_cross_validation(cv_id: int) -> Any:
    """Delete a finished cross-validation, its fold and ensemble jobs and their files; a refusal (a job
    still queued or running, a checkpoint a live job needs) is flashed as an error on its page."""
    _summary(cv_id)
    return delete_and_flash(
        deletion.delete_cross_validation,
        cv_id,
        f"Cross-validation {cv_id}",
        refused=url_for("cv.cross_validation", cv_id=cv_id),
        deleted=url_for("cv.cross_validations"),
    )


@bp.get("/cross-validations/<int:cv_id>/oof.csv")
@login_required
def out_of_fold(cv_id: int) -> Any:
    """Every training image's out-of-fold prediction, from the fold model that did not train on it."""
    _summary(cv_id)
    text = out_of_fold_csv(db(), cv_id)
    return Response(text, mimetype="text/csv", headers={"Content-Disposition": f"attachment; filename=cv-{cv_id}-oof.csv"})
