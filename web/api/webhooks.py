"""The JSON API of webhooks (admins only): add, list, change, remove, test, and each webhook's
delivery history with redelivery. Declared on the API blueprint, so the token check and the
OpenAPI document cover them; the writes are core.service.webhooks' audited admin actions."""

from __future__ import annotations

from typing import Any

from core.service import webhooks
from web.api import schemas
from web.api.blueprint import answer, bp
from web.auth import current_actor
from web.db import db
from web.inputs import json_body, query_model
from web.openapi import operation
from web.settings import app_settings


@operation(
    bp, "get", "/webhooks", operation_id="listWebhooks", tag="webhooks", responses={200: schemas.WebhookList}, errors=(403,)
)
def list_webhooks() -> Any:
    """Webhooks (admins)"""
    actor = current_actor()
    rows = [schemas.Webhook.model_validate(w) for w in webhooks.list_webhooks(db(), actor)]
    return answer(schemas.WebhookList(webhooks=rows))


@operation(
    bp,
    "post",
    "/webhooks",
    operation_id="createWebhook",
    tag="webhooks",
    body=schemas.WebhookCreation,
    responses={201: schemas.WebhookCreated},
    errors=(400, 403, 413),
)
def create_webhook() -> Any:
    """Add a webhook; the answer carries its signing secret, this once"""
    creation = json_body(schemas.WebhookCreation)
    webhook = webhooks.add(db(), current_actor(), creation.url, list(creation.events), creation.secret, settings=app_settings())
    return answer(schemas.WebhookCreated.model_validate(webhook), 201)


@operation(
    bp,
    "patch",
    "/webhooks/<int:webhook_id>",
    operation_id="updateWebhook",
    tag="webhooks",
    body=schemas.WebhookChange,
    responses={200: schemas.Webhook},
    errors=(400, 403, 404, 413),
)
def update_webhook(webhook_id: int) -> Any:
    """Change a webhook's url, events or enabled"""
    change = json_body(schemas.WebhookChange)
    actor = current_actor()
    webhook = webhooks.change(
        db(),
        actor,
        webhook_id,
        url=change.url,
        events=None if change.events is None else list(change.events),
        enabled=change.enabled,
        settings=app_settings(),
    )
    return answer(schemas.Webhook.model_validate(webhook))


@operation(
    bp,
    "delete",
    "/webhooks/<int:webhook_id>",
    operation_id="deleteWebhook",
    tag="webhooks",
    responses={200: schemas.Webhook},
    errors=(403, 404),
)
def delete_webhook(webhook_id: int) -> Any:
    """Remove a webhook and its delivery history; answers the webhook as it was"""
    actor = current_actor()
    removed = schemas.Webhook.model_validate(webhooks.remove(db(), actor, webhook_id))
    return answer(removed)


@operation(
    bp,
    "get",
    "/webhooks/<int:webhook_id>/deliveries",
    operation_id="listWebhookDeliveries",
    tag="webhooks",
    query=schemas.PageQuery,
    responses={200: schemas.WebhookDeliveryPage},
    errors=(400, 403, 404),
)
def list_deliveries(webhook_id: int) -> Any:
    """A webhook's deliveries, newest first: status, response code, attempts, times, error"""
    actor = current_actor()
    query = query_model(schemas.PageQuery)
    rows, total = webhooks.deliveries(db(), actor, webhook_id, page=query.page, per_page=query.per_page)
    items = [schemas.WebhookDelivery.model_validate(d) for d in rows]
    return answer(schemas.WebhookDeliveryPage(deliveries=items, total=total, page=query.page, per_page=query.per_page))


@operation(
    bp,
    "post",
    "/webhooks/<int:webhook_id>/test",
    operation_id="testWebhook",
    tag="webhooks",
    responses={201: schemas.WebhookDelivery},
    errors=(403, 404),
)
def ping_webhook(webhook_id: int) -> Any:
    """Queue a webhook.test delivery to this webhook (workers send it within seconds)"""
    actor = current_actor()
    return answer(schemas.WebhookDelivery.model_validate(webhooks.send_test(db(), actor, webhook_id)), 201)


@operation(
    bp,
    "post",
    "/webhooks/deliveries/<int:delivery_id>/redeliver",
    operation_id="redeliverWebhookDelivery",
    tag="webhooks",
    responses={201: schemas.WebhookDelivery},
    errors=(403, 404),
)
def redeliver(delivery_id: int) -> Any:
    """Send a delivery's body again, as a new delivery"""
    actor = current_actor()
    return answer(schemas.WebhookDelivery.model_validate(webhooks.send_again(db(), actor, delivery_id)), 201)
