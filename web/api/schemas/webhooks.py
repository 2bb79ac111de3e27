"""The models of webhooks (admin) and their deliveries."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

from core.service.records import DELIVERY_STATUSES, WEBHOOK_EVENTS
from core.service.webhooks import redact_url
from web.api.schemas.common import JsonRequest, Paged, Row, UtcTime

WebhookEvent = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]


# The document's reading of what core's url and secret checks take, in their plain form (the url check also
# takes IPv6 hosts, user@, a query; the secret check any printable characters without surrounding spaces).
WEBHOOK_URL = {
    "maxLength": 2000,
    "pattern": r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?"
    r"(:[1-9][0-9]{0,3})?(/[!-~]*)?$",
}


WEBHOOK_SECRET = {"minLength": 16, "maxLength": 128, "pattern": r"^[!-~]([ -~]*[!-~])?$"}


class WebhookCreation(JsonRequest):
    """POST /api/webhooks."""

    url: str = Field(description="an http:// or https:// address that accepts POSTed JSON", json_schema_extra=WEBHOOK_URL)
    events: list[WebhookEvent] = Field(
        default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1, description="default: all of them"
    )
    secret: str | None = Field(
        None, description="the signing secret, 16-128 characters; default: a generated one", json_schema_extra=WEBHOOK_SECRET
    )


class WebhookChange(JsonRequest):
    """PATCH /api/webhooks/{webhook_id}: the fields given are changed."""

    url: str | None = Field(None, json_schema_extra=WEBHOOK_URL)
    events: list[WebhookEvent] | None = Field(None, min_length=1)
    enabled: bool | None = None


class Webhook(Row):
    id: int
    url: str = Field(description="the receiver's address; a user:password@ in it is shown as ***@")
    events: list[str]
    enabled: bool
    created_at: UtcTime
    created_by: int | None = Field(description="the admin's user id; null: the CLI")

    @field_validator("url")
    @classmethod
    def _redacted(cls, url: str) -> str:
        return redact_url(url)


class WebhookCreated(Webhook):
    """The new webhook and its signing secret, shown this once."""

    secret: str


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class WebhookDelivery(Row):
    id: int
    webhook_id: int
    event: str = Field(description="one of the webhook events, or webhook.test")
    status: Literal[DELIVERY_STATUSES]  # type: ignore[valid-type]
    attempts: int
    response_code: int | None = Field(description="the receiver's HTTP status at the last attempt; null: no answer")
    last_error: str | None
    next_attempt_at: UtcTime | None = Field(description="when a pending delivery is tried next")
    created_at: UtcTime
    finished_at: UtcTime | None
    body: str = Field(description="the exact JSON sent and signed")


class WebhookDeliveryPage(Paged):
    deliveries: list[WebhookDelivery]
