"""Dashboard pages of webhooks (admins only): the list with the add form, enable/disable, delete
and test, and one webhook's delivery history with redelivery. Each view parses the form, calls one
core.service.webhooks admin action (permission checked, audited) and redirects or renders rows."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from core.common.errors import UserInputError
from core.service import webhooks
from core.service.records import WEBHOOK_EVENTS
from web.api import schemas
from web.auth import current_actor, login_required
from web.db import db, rollback
from web.paging import Pager, requested_page
from web.settings import app_settings

bp = Blueprint("webhooks", __name__, url_prefix="/admin/webhooks")
PER_PAGE = 50


@bp.route("", methods=("GET", "POST"))
@login_required
def webhook_list() -> Any:
    """The webhooks with their delivery counts, the workers reported lost, and the add form."""
    actor = current_actor()
    error, error_field, made, form = None, None, None, request.form
    if request.method == "POST":
        try:
            webhook = webhooks.add(
                db(),
                actor,
                request.form.get("url", ""),
                request.form.getlist("events"),
                request.form.get("secret", "").strip() or None,
                settings=app_settings(),
            )
            made = {"id": webhook.id, "secret": webhook.secret}
        except UserInputError as problem:
            rollback()
            error, error_field = str(problem), problem.field
        else:
            # The secret goes into this page only, as a new token does: a flash would carry it in the cookie.
            flash(f"Webhook {made['id']} added.")
            form = MultiDict()
    listed = webhooks.list_webhooks(db(), actor)  # admins only
    rows = [schemas.Webhook.model_validate(w).model_dump(mode="json") for w in listed]
    counts = webhooks.delivery_counts(db(), actor)
    lost = [
        {"hostname": w.hostname, "queues": w.queues, "last_seen": w.last_seen, "lost_at": w.lost_at}
        for w in webhooks.lost_workers(db())
    ]
    return render_template(
        "webhooks.html",
        webhooks=rows,
        counts=counts,
        lost=lost,
        events=WEBHOOK_EVENTS,
        error=error,
        error_field=error_field,
        form=form,
        made=made,
    ), (400 if error else 200)


@bp.post("/<int:webhook_id>/enabled")
@login_required
def set_enabled(webhook_id: int) -> Any:
    actor = current_actor()
    enabled = request.form.get("enabled") == "1"
    webhooks.change(db(), actor, webhook_id, enabled=enabled, settings=app_settings())
    flash(f"Webhook {webhook_id} {'enabled' if enabled else 'disabled'}.")
    return redirect(
        request.form.get("back") == "history"
        and url_for("webhooks.history", webhook_id=webhook_id)
        or url_for("webhooks.webhook_list")
    )


@bp.post("/<int:webhook_id>/delete")
@login_required
def delete(webhook_id: int) -> Any:
    actor = current_actor()
    webhooks.remove(db(), actor, webhook_id)
    flash(f"Webhook {webhook_id} removed, with its delivery history.")
    return redirect(url_for("webhooks.webhook_list"))


@bp.post("/<int:webhook_id>/test")
@login_required
def send_test(webhook_id: int) -> Any:
    actor = current_actor()
    delivery_id = webhooks.send_test(db(), actor, webhook_id).id
    flash(f"Test delivery {delivery_id} queued; a worker sends it within seconds.")
    return redirect(url_for("webhooks.history", webhook_id=webhook_id))


@bp.get("/<int:webhook_id>")
@login_required
def history(webhook_id: int) -> Any:
    """One webhook's deliveries, newest first: event, status, response code, attempts, times, error."""
    actor = current_actor()
    page = requested_page()
    rows, total = webhooks.deliveries(db(), actor, webhook_id, page=page, per_page=PER_PAGE)  # admins only
    webhook = schemas.Webhook.model_validate(webhooks.get_webhook(db(), webhook_id)).model_dump(mode="json")
    deliveries = [schemas.WebhookDelivery.model_validate(d) for d in rows]
    return render_template(
        "webhook.html", webhook=webhook, deliveries=deliveries, total=total, paged=Pager(page, PER_PAGE, total)
    )


@bp.post("/deliveries/<int:delivery_id>/redeliver")
@login_required
def redeliver(delivery_id: int) -> Any:
    actor = current_actor()
    row = webhooks.send_again(db(), actor, delivery_id)
    webhook_id, new_id = row.webhook_id, row.id
    flash(f"Delivery {delivery_id} queued again as delivery {new_id}.")
    return redirect(url_for("webhooks.history", webhook_id=webhook_id))
