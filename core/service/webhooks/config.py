"""Webhook configuration: the URLs admins register, the events each subscribes to, its secret, and
the reads of webhooks and their delivery history (admins only: a URL may carry credentials)."""

from __future__ import annotations

import secrets

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.common.errors import NotFound, UserInputError
from core.service import audit
from core.service.access import Actor, require_admin
from core.service.records import MAX_ID, WEBHOOK_EVENTS, Webhook, WebhookDelivery, utcnow
from core.service.settings import Settings
from core.service.webhooks.transport import check_url, redact_url

MANAGE = "manage webhooks"  # what a non-admin is refused


def check_events(events: list[str] | tuple[str, ...] | None) -> list[str]:
    """Subscribed events as stored (known names, no repeats, in WEBHOOK_EVENTS order)."""
    chosen = [str(event).strip() for event in events or []]
    unknown = [event for event in chosen if event not in WEBHOOK_EVENTS]
    if unknown or not chosen:
        raise UserInputError(
            f"events: give one or more of {', '.join(WEBHOOK_EVENTS)}" + (f" ({unknown[0]!r} is not one)" if unknown else ""),
            field="events",
        )
    return [event for event in WEBHOOK_EVENTS if event in chosen]


def check_secret(secret: str | None) -> str:
    """A given secret (16 to 128 printable characters), or a new random one."""
    if secret is None or secret == "":
        return secrets.token_hex(32)
    if not 16 <= len(secret) <= 128 or not secret.isprintable() or secret.strip() != secret:
        raise UserInputError("secret: give 16 to 128 printable characters, or leave it out to have one made", field="secret")
    return secret


def create_webhook(
    session: Session,
    url: str,
    events: list[str],
    *,
    settings: Settings,
    secret: str | None = None,
    created_by: int | None = None,
) -> Webhook:
    """A new enabled webhook; its secret (given or generated) is returned on the row once, to show once.
    settings: the caller's, whose WEBHOOK_ALLOWED_NETWORKS the URL's host is checked against."""
    webhook = Webhook(
        url=_checked_url(url, settings),
        events=check_events(events),
        secret=check_secret(secret),
        enabled=True,
        created_at=utcnow(),
        created_by=created_by,
    )
    session.add(webhook)
    session.flush()
    return webhook


def find_webhook(session: Session, webhook_id: int) -> Webhook | None:
    return session.get(Webhook, webhook_id, populate_existing=True) if 1 <= webhook_id <= MAX_ID else None


def get_webhook(session: Session, webhook_id: int) -> Webhook:
    webhook = find_webhook(session, webhook_id)
    if webhook is None:
        raise NotFound(f"webhook {webhook_id} not found", field="webhook_id")
    return webhook


def _checked_url(url: str, settings: Settings) -> str:
    return check_url(url, settings.webhook_allowed_network_list, settings.webhook_timeout_seconds)


def update_webhook(
    session: Session,
    webhook_id: int,
    *,
    settings: Settings,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
) -> Webhook:
    """Change what is given (url, events, enabled); pending deliveries keep their target webhook."""
    webhook = get_webhook(session, webhook_id)
    if url is not None:
        webhook.url = _checked_url(url, settings)
    if events is not None:
        webhook.events = check_events(events)
    if enabled is not None:
        webhook.enabled = bool(enabled)
    session.flush()
    return webhook


def delete_webhook(session: Session, webhook_id: int) -> None:
    """Remove a webhook and its delivery history."""
    session.delete(get_webhook(session, webhook_id))
    session.flush()


def list_webhooks(session: Session, actor: Actor) -> list[Webhook]:
    """Every webhook: for admins only (a URL may carry a receiver's credentials)."""
    require_admin(actor, MANAGE)
    return list(session.scalars(select(Webhook).order_by(Webhook.id)))


def delivery_counts(session: Session, actor: Actor) -> dict[int, dict[str, int]]:
    """Webhook id → {status: count} of its deliveries (admins only, as the webhooks)."""
    require_admin(actor, MANAGE)
    counts: dict[int, dict[str, int]] = {}
    rows = session.execute(
        select(WebhookDelivery.webhook_id, WebhookDelivery.status, func.count()).group_by(
            WebhookDelivery.webhook_id, WebhookDelivery.status
        )
    )
    for webhook_id, status, count in rows:
        counts.setdefault(webhook_id, {})[status] = count
    return counts


def deliveries(
    session: Session, actor: Actor, webhook_id: int, *, page: int = 1, per_page: int = 50
) -> tuple[list[WebhookDelivery], int]:
    """A webhook's deliveries, newest first, one page, and the total: admins only, refused before the lookup."""
    require_admin(actor, MANAGE)
    get_webhook(session, webhook_id)
    mine = WebhookDelivery.webhook_id == webhook_id
    total = session.scalar(select(func.count(WebhookDelivery.id)).where(mine)) or 0
    rows = session.scalars(
        select(WebhookDelivery).where(mine).order_by(WebhookDelivery.id.desc()).offset((page - 1) * per_page).limit(per_page)
    )
    return list(rows), total


def find_delivery(session: Session, delivery_id: int) -> WebhookDelivery | None:
    return session.get(WebhookDelivery, delivery_id, populate_existing=True) if 1 <= delivery_id <= MAX_ID else None


# --- admin actions: permission checked, change and audit row in one transaction ---------------------


def add(session: Session, actor: Actor, url: str, events: list[str], secret: str | None = None, *, settings: Settings) -> Webhook:
    """An admin adds a webhook (the secret is on the returned row: show it once); settings: the web app's or
    the CLI's, whose address policy the URL must pass."""
    require_admin(actor, MANAGE)
    webhook = create_webhook(session, url, events, settings=settings, secret=secret, created_by=actor.user_id)
    audit.record(
        session, actor, "webhook.create", "webhook", webhook.id, {"url": redact_url(webhook.url), "events": webhook.events}
    )
    return webhook


def change(
    session: Session,
    actor: Actor,
    webhook_id: int,
    *,
    url: str | None = None,
    events: list[str] | None = None,
    enabled: bool | None = None,
    settings: Settings,
) -> Webhook:
    require_admin(actor, MANAGE)
    webhook = update_webhook(session, webhook_id, settings=settings, url=url, events=events, enabled=enabled)
    given = {"url": None if url is None else redact_url(webhook.url), "events": events, "enabled": enabled}
    changed = {k: v for k, v in given.items() if v is not None}
    audit.record(session, actor, "webhook.update", "webhook", webhook_id, changed)
    return webhook


def remove(session: Session, actor: Actor, webhook_id: int) -> Webhook:
    """Remove a webhook and its deliveries; returns the row as it was (loaded before the delete)."""
    require_admin(actor, MANAGE)
    webhook = get_webhook(session, webhook_id)
    url = redact_url(webhook.url)
    delete_webhook(session, webhook_id)
    audit.record(session, actor, "webhook.delete", "webhook", webhook_id, {"url": url})
    return webhook
