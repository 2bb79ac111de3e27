"""Sending webhook deliveries: one claim (a lease) per delivery, the signed POST outside any
transaction, and the outcome recorded only while the lease is still this sender's."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from core.service.event_counts import count_event
from core.service.records import DeliveryStatus, Webhook, WebhookDelivery, utcnow
from core.service.settings import Settings
from core.service.webhooks.transport import Attempt, post, redact_url

log = logging.getLogger("leukemia.webhooks")

RETRY_CAP_SECONDS = 3600.0  # the back-off doubles up to this wait
# A lease outlasts the attempt's deadline by this much, to record the outcome in: a sender that
# holds a delivery for longer (stopped, or its database gone) lets another take it over.
LEASE_MARGIN_SECONDS = 30.0
USER_AGENT = "leukemia-webhooks/1"


def signature(secret: str, timestamp: int, body: str) -> str:
    """X-Leukemia-Signature: "t=<unix time>,v1=<hex HMAC-SHA256(secret, f'{t}.{body}')>"."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff_seconds(attempts: int, retry_seconds: float) -> float:
    """Wait after the attempts-th failed attempt: WEBHOOK_RETRY_SECONDS doubled per attempt, capped."""
    return min(retry_seconds * 2 ** max(attempts - 1, 0), RETRY_CAP_SECONDS)


def _due(now: datetime, due_by: datetime) -> Any:
    return and_(
        WebhookDelivery.status == DeliveryStatus.pending,
        WebhookDelivery.next_attempt_at <= due_by,
        or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
    )


def claim_next(session: Session, *, settings: Settings, due_by: datetime | None = None) -> tuple[int, datetime] | None:
    """Take the lease on the next due delivery of an enabled webhook, with one conditional UPDATE
    (a delivery another sender took meanwhile is skipped): its id and the lease, which the outcome
    is recorded against; None when nothing is due.

    One delivery per claim, taken just before it is sent: a lease taken for a batch would run out
    while the deliveries before it are sent, and another sender would send the rest again.
    `due_by` (a pass's start) leaves out what fell due later, such as a retry of this pass's own."""
    now = utcnow()
    due = _due(now, due_by or now)
    lease = now + timedelta(seconds=settings.webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
    candidates = session.scalars(
        select(WebhookDelivery.id)
        .join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
        .where(due, Webhook.enabled.is_(True))
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(10)
    )
    for delivery_id in list(candidates):
        result = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id, due)
            .values(lease_until=lease)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            return delivery_id, lease
    return None


def record_attempt(session: Session, delivery_id: int, lease: datetime, attempt: Attempt, *, settings: Settings) -> str | None:
    """Store an attempt's outcome (delivered, pending again after the back-off, or failed after the
    last) with one UPDATE conditional on the lease still being this sender's; None when it is not
    (it ran out and another sender took the delivery over: that one records its own attempt)."""
    row = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if row is None or row.lease_until != lease:
        return None
    now = utcnow()
    attempts = row.attempts + 1
    values: dict[str, Any] = {
        "attempts": attempts,
        "response_code": attempt.response_code,
        "last_error": attempt.error,
        "lease_until": None,
    }
    if attempt.delivered:
        values.update(status=DeliveryStatus.delivered, finished_at=now)
    elif attempts >= settings.webhook_max_attempts:
        values.update(status=DeliveryStatus.failed, finished_at=now)
    else:
        values.update(
            status=DeliveryStatus.pending,
            next_attempt_at=now + timedelta(seconds=backoff_seconds(attempts, settings.webhook_retry_seconds)),
        )
    result = session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.lease_until == lease)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    # An attempt retried later counts as "retried"; one that gave up, "failed" (the metrics' counter).
    outcome = "retried" if values["status"] == DeliveryStatus.pending else values["status"].value
    count_event(session, "webhook.attempt", outcome)
    return values["status"]


def deliver_due(settings: Settings, *, limit: int = 20) -> dict[str, int]:
    """One sender pass: up to `limit` times, claim the next delivery due when the pass began, POST it
    (outside any transaction) and record the outcome, so a pass sends a delivery at most once.
    Returns how many were delivered, retried later and failed. settings: the sender's (its deadlines,
    retries and the addresses it may reach), read by the process that runs it."""
    from core.service.db import get_sessionmaker

    timeout, allowed = settings.webhook_timeout_seconds, settings.webhook_allowed_network_list
    tally = {status.value: 0 for status in DeliveryStatus}
    started = utcnow()
    for _ in range(limit):
        with get_sessionmaker().begin() as session:
            claimed = claim_next(session, settings=settings, due_by=started)
            if claimed is None:
                break
            delivery_id, lease = claimed
            row = session.get(WebhookDelivery, delivery_id)
            webhook = session.get(Webhook, row.webhook_id)
            url, event, body = webhook.url, row.event, row.body
            headers = {
                "Content-Type": "application/json",
                "User-Agent": USER_AGENT,
                "X-Leukemia-Event": event,
                "X-Leukemia-Delivery": str(delivery_id),
                "X-Leukemia-Signature": signature(webhook.secret, int(time.time()), body),
            }
        attempt = post(url, headers, body.encode(), timeout, allowed)
        with get_sessionmaker().begin() as session:
            status = record_attempt(session, delivery_id, lease, attempt, settings=settings)
        if status is not None:
            tally[status.value] += 1
        if not attempt.delivered:
            log.warning("webhook delivery %s to %s: %s", delivery_id, redact_url(url), attempt.error)
    return tally
