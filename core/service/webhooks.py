"""Webhooks: admin-configured URLs that receive signed JSON when a job ends or a worker is lost.

An event is an outbox row per subscribed webhook (webhook_deliveries), written in the transaction
of the status change that makes it: a rolled-back change announces nothing, a committed one is
never forgotten. A sender (`deliver_due`: a thread of every worker, or `leukemia webhooks deliver`)
takes one due delivery at a time with one conditional UPDATE (a lease longer than an attempt can
last), so two senders never send one delivery, POSTs the stored body signed with the webhook's
secret (core.service.webhook_http: checked addresses, a total deadline), and retries with doubling
back-off. A disabled webhook's deliveries wait until it is enabled again. Delivery runs beside
the jobs, never inside them: a slow or failing receiver holds up no job."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from core.common.errors import NotFound, UserInputError
from core.service import audit
from core.service.access import Actor, require_admin
from core.service.records import (
    MAX_ID,
    WEBHOOK_EVENTS,
    DeliveryStatus,
    Job,
    JobStatus,
    User,
    Webhook,
    WebhookDelivery,
    WorkerRecord,
    utcnow,
)
from core.service.settings import get_settings
from core.service.webhook_http import Attempt, check_url, post, redact_url

log = logging.getLogger("leukemia.webhooks")

TEST_EVENT = "webhook.test"  # sent to one webhook on request; no subscription needed
RETRY_CAP_SECONDS = 3600.0  # the back-off doubles up to this wait
# A lease outlasts the attempt's deadline by this much, to record the outcome in: a sender that
# holds a delivery for longer (stopped, or its database gone) lets another take it over.
LEASE_MARGIN_SECONDS = 30.0
USER_AGENT = "leukemia-webhooks/1"
MANAGE = "manage webhooks"  # what a non-admin is refused


# --- configuration ------------------------------------------------------------------------------


def check_events(events: list[str] | tuple[str, ...] | None) -> list[str]:
    """Subscribed events as stored (known names, no repeats, in WEBHOOK_EVENTS order)."""
    chosen = [str(event).strip() for event in events or []]
    unknown = [event for event in chosen if event not in WEBHOOK_EVENTS]
    if unknown or not chosen:
        raise UserInputError(f"events: give one or more of {', '.join(WEBHOOK_EVENTS)}"
                             + (f" ({unknown[0]!r} is not one)" if unknown else ""), field="events")
    return [event for event in WEBHOOK_EVENTS if event in chosen]


def check_secret(secret: str | None) -> str:
    """A given secret (16 to 128 printable characters), or a new random one."""
    if secret is None or secret == "":
        return secrets.token_hex(32)
    if not 16 <= len(secret) <= 128 or not secret.isprintable() or secret.strip() != secret:
        raise UserInputError("secret: give 16 to 128 printable characters, or leave it out to have one made",
                             field="secret")
    return secret


def create_webhook(session: Session, url: str, events: list[str], *, secret: str | None = None,
                   created_by: int | None = None) -> Webhook:
    """A new enabled webhook; its secret (given or generated) is returned on the row once, to show once."""
    webhook = Webhook(url=check_url(url), events=check_events(events), secret=check_secret(secret), enabled=True,
                      created_at=utcnow(), created_by=created_by)
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


def update_webhook(session: Session, webhook_id: int, *, url: str | None = None, events: list[str] | None = None,
                   enabled: bool | None = None) -> Webhook:
    """Change what is given (url, events, enabled); pending deliveries keep their target webhook."""
    webhook = get_webhook(session, webhook_id)
    if url is not None:
        webhook.url = check_url(url)
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
    rows = session.execute(select(WebhookDelivery.webhook_id, WebhookDelivery.status, func.count())
                           .group_by(WebhookDelivery.webhook_id, WebhookDelivery.status))
    for webhook_id, status, count in rows:
        counts.setdefault(webhook_id, {})[status] = count
    return counts


def deliveries(session: Session, actor: Actor, webhook_id: int, *, page: int = 1, per_page: int = 50
               ) -> tuple[list[WebhookDelivery], int]:
    """A webhook's deliveries, newest first, one page, and the total: admins only, refused before the lookup."""
    require_admin(actor, MANAGE)
    get_webhook(session, webhook_id)
    mine = WebhookDelivery.webhook_id == webhook_id
    total = session.scalar(select(func.count(WebhookDelivery.id)).where(mine)) or 0
    rows = session.scalars(select(WebhookDelivery).where(mine).order_by(WebhookDelivery.id.desc())
                           .offset((page - 1) * per_page).limit(per_page))
    return list(rows), total


def find_delivery(session: Session, delivery_id: int) -> WebhookDelivery | None:
    return session.get(WebhookDelivery, delivery_id, populate_existing=True) if 1 <= delivery_id <= MAX_ID else None


# --- events: outbox rows, in the caller's transaction ---------------------------------------------


def _body(event: str, payload: dict[str, Any]) -> str:
    return json.dumps({"event": event, "time": utcnow().isoformat() + "Z", **payload}, separators=(",", ":"))


def _pending(webhook_id: int, event: str, body: str) -> WebhookDelivery:
    now = utcnow()
    return WebhookDelivery(webhook_id=webhook_id, event=event, body=body, status="pending", attempts=0,
                           next_attempt_at=now, created_at=now)


def enqueue_event(session: Session, event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """One pending delivery per enabled webhook subscribed to the event, in the caller's transaction."""
    if event not in WEBHOOK_EVENTS:
        raise ValueError(f"enqueue_event: {event!r} is not one of {WEBHOOK_EVENTS}")
    hooks = [hook for hook in session.scalars(select(Webhook).where(Webhook.enabled.is_(True)).order_by(Webhook.id))
             if event in (hook.events or [])]
    if not hooks:
        return []
    body = _body(event, payload)
    rows = [_pending(hook.id, event, body) for hook in hooks]
    session.add_all(rows)
    session.flush()
    return rows


def job_payload(session: Session, job: Job) -> dict[str, Any]:
    """What a job event says about the job (its page's url when PUBLIC_URL is set)."""
    name = "cli"
    if job.submitted_by is not None:
        name = session.scalar(select(User.username).where(User.id == job.submitted_by)) or "cli"
    public_url = get_settings().public_url.rstrip("/")
    return {"job": {
        "id": job.id, "kind": job.kind, "status": job.status, "error": job.error, "queue": job.queue,
        "sweep_id": job.sweep_id, "submitted_by_name": name, "attempts": job.attempts,
        "best_valid_accuracy": job.best_valid_accuracy, "stopped_epoch": job.stopped_epoch,
        "stop_reason": job.stop_reason, "worker_host": job.worker_host,
        "finished_at": job.finished_at.isoformat() + "Z" if job.finished_at else None,
        "url": f"{public_url}/jobs/{job.id}" if public_url else None,
    }}


def job_ended(session: Session, job_id: int) -> None:
    """Announce a job that has just ended (job.succeeded / job.failed / job.cancelled), in the
    transaction of the change; costs one query when no webhook is enabled."""
    if session.scalar(select(Webhook.id).where(Webhook.enabled.is_(True)).limit(1)) is None:
        return
    job = session.get(Job, job_id, populate_existing=True)
    event = f"job.{job.status}" if job is not None else ""
    if event in WEBHOOK_EVENTS:
        enqueue_event(session, event, job_payload(session, job))


def queue_test_delivery(session: Session, webhook_id: int) -> WebhookDelivery:
    """A webhook.test delivery to this webhook alone (subscribed or not), to check the receiver; a
    disabled webhook's waits, like its other deliveries, until it is enabled."""
    webhook = get_webhook(session, webhook_id)
    row = _pending(webhook.id, TEST_EVENT, _body(TEST_EVENT, {"webhook": {"id": webhook.id, "url": redact_url(webhook.url)}}))
    session.add(row)
    session.flush()
    return row


def redeliver(session: Session, delivery_id: int) -> WebhookDelivery:
    """Send a delivery's body again as a new delivery (the old one keeps its history)."""
    old = find_delivery(session, delivery_id)
    if old is None:
        raise NotFound(f"delivery {delivery_id} not found", field="delivery_id")
    row = _pending(old.webhook_id, old.event, old.body)
    session.add(row)
    session.flush()
    return row


def report_lost_workers(session: Session) -> list[str]:
    """Workers silent for STALE_AFTER_SECONDS and not yet reported: mark lost_at and announce
    worker.lost. The mark is one conditional UPDATE, so two reapers report a loss once."""
    cutoff = utcnow() - timedelta(seconds=get_settings().stale_after_seconds)
    silent = and_(WorkerRecord.last_seen < cutoff, WorkerRecord.lost_at.is_(None))
    reported = []
    for worker in list(session.scalars(select(WorkerRecord).where(silent))):
        marked = session.execute(update(WorkerRecord).where(WorkerRecord.id == worker.id, silent)
                                 .values(lost_at=utcnow()).execution_options(synchronize_session=False))
        if marked.rowcount != 1:
            continue
        running = list(session.scalars(select(Job.id).where(Job.worker_host == worker.hostname,
                                                            Job.status == JobStatus.running).order_by(Job.id)))
        enqueue_event(session, "worker.lost", {"worker": {
            "hostname": worker.hostname, "queues": worker.queue_names, "gpu": worker.gpu, "pid": worker.pid,
            "last_seen": worker.last_seen.isoformat() + "Z", "running_job_ids": running}})
        reported.append(worker.hostname)
        log.warning("worker %s lost: last seen %s, running jobs %s", worker.hostname, worker.last_seen, running)
    return reported


def lost_workers(session: Session, *, within_hours: float | None = None, limit: int = 50) -> list[WorkerRecord]:
    """Workers reported lost and not seen since, newest loss first (those lost within the last
    `within_hours` only, when given: a worker name that never comes back stays in the table)."""
    lost = [WorkerRecord.lost_at.is_not(None)]
    if within_hours is not None:
        lost.append(WorkerRecord.lost_at >= utcnow() - timedelta(hours=within_hours))
    return list(session.scalars(select(WorkerRecord).where(*lost).order_by(WorkerRecord.lost_at.desc()).limit(limit)))


# --- admin actions: permission checked, change and audit row in one transaction ---------------------


def add(session: Session, actor: Actor, url: str, events: list[str], secret: str | None = None) -> Webhook:
    """An admin adds a webhook (the secret is on the returned row: show it once)."""
    require_admin(actor, MANAGE)
    webhook = create_webhook(session, url, events, secret=secret, created_by=actor.user_id)
    audit.record(session, actor, "webhook.create", "webhook", webhook.id, {"url": redact_url(webhook.url), "events": webhook.events})
    return webhook


def change(session: Session, actor: Actor, webhook_id: int, *, url: str | None = None,
           events: list[str] | None = None, enabled: bool | None = None) -> Webhook:
    require_admin(actor, MANAGE)
    webhook = update_webhook(session, webhook_id, url=url, events=events, enabled=enabled)
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


def send_test(session: Session, actor: Actor, webhook_id: int) -> WebhookDelivery:
    require_admin(actor, MANAGE)
    row = queue_test_delivery(session, webhook_id)
    audit.record(session, actor, "webhook.test", "webhook", webhook_id, {"delivery_id": row.id})
    return row


def send_again(session: Session, actor: Actor, delivery_id: int) -> WebhookDelivery:
    require_admin(actor, MANAGE)
    row = redeliver(session, delivery_id)
    audit.record(session, actor, "webhook.redeliver", "webhook", row.webhook_id,
                 {"delivery_id": delivery_id, "new_delivery_id": row.id})
    return row


# --- sending --------------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: str) -> str:
    """X-Leukemia-Signature: "t=<unix time>,v1=<hex HMAC-SHA256(secret, f'{t}.{body}')>"."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def backoff_seconds(attempts: int) -> float:
    """Wait after the attempts-th failed attempt: WEBHOOK_RETRY_SECONDS doubled per attempt, capped."""
    return min(get_settings().webhook_retry_seconds * 2 ** max(attempts - 1, 0), RETRY_CAP_SECONDS)


def _due(now: datetime, due_by: datetime) -> Any:
    return and_(WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at <= due_by,
                or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now))


def claim_next(session: Session, *, due_by: datetime | None = None) -> tuple[int, datetime] | None:
    """Take the lease on the next due delivery of an enabled webhook, with one conditional UPDATE
    (a delivery another sender took meanwhile is skipped): its id and the lease, which the outcome
    is recorded against; None when nothing is due.

    One delivery per claim, taken just before it is sent: a lease taken for a batch would run out
    while the deliveries before it are sent, and another sender would send the rest again.
    `due_by` (a pass's start) leaves out what fell due later, such as a retry of this pass's own."""
    now = utcnow()
    due = _due(now, due_by or now)
    lease = now + timedelta(seconds=get_settings().webhook_timeout_seconds + LEASE_MARGIN_SECONDS)
    candidates = session.scalars(select(WebhookDelivery.id).join(Webhook, Webhook.id == WebhookDelivery.webhook_id)
                                 .where(due, Webhook.enabled.is_(True))
                                 .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(10))
    for delivery_id in list(candidates):
        result = session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, due)
                                 .values(lease_until=lease).execution_options(synchronize_session=False))
        if result.rowcount == 1:
            return delivery_id, lease
    return None


def record_attempt(session: Session, delivery_id: int, lease: datetime, attempt: Attempt) -> str | None:
    """Store an attempt's outcome (delivered, pending again after the back-off, or failed after the
    last) with one UPDATE conditional on the lease still being this sender's; None when it is not
    (it ran out and another sender took the delivery over: that one records its own attempt)."""
    row = session.get(WebhookDelivery, delivery_id, populate_existing=True)
    if row is None or row.lease_until != lease:
        return None
    now = utcnow()
    attempts = row.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "response_code": attempt.response_code,
                              "last_error": attempt.error, "lease_until": None}
    if attempt.delivered:
        values.update(status="delivered", finished_at=now)
    elif attempts >= get_settings().webhook_max_attempts:
        values.update(status=DeliveryStatus.failed, finished_at=now)
    else:
        values.update(status="pending", next_attempt_at=now + timedelta(seconds=backoff_seconds(attempts)))
    result = session.execute(update(WebhookDelivery)
                             .where(WebhookDelivery.id == delivery_id, WebhookDelivery.lease_until == lease)
                             .values(**values).execution_options(synchronize_session=False))
    return values["status"] if result.rowcount == 1 else None


def deliver_due(*, limit: int = 20) -> dict[str, int]:
    """One sender pass: up to `limit` times, claim the next delivery due when the pass began, POST it
    (outside any transaction) and record the outcome, so a pass sends a delivery at most once.
    Returns how many were delivered, retried later and failed."""
    from core.service.db import get_sessionmaker

    timeout = get_settings().webhook_timeout_seconds
    tally = {"delivered": 0, "pending": 0, "failed": 0}
    started = utcnow()
    for _ in range(limit):
        with get_sessionmaker().begin() as session:
            claimed = claim_next(session, due_by=started)
            if claimed is None:
                break
            delivery_id, lease = claimed
            row = session.get(WebhookDelivery, delivery_id)
            webhook = session.get(Webhook, row.webhook_id)
            url, event, body = webhook.url, row.event, row.body
            headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, "X-Leukemia-Event": event,
                       "X-Leukemia-Delivery": str(delivery_id),
                       "X-Leukemia-Signature": signature(webhook.secret, int(time.time()), body)}
        attempt = post(url, headers, body.encode(), timeout)
        with get_sessionmaker().begin() as session:
            status = record_attempt(session, delivery_id, lease, attempt)
        if status is not None:
            tally[status] += 1
        if not attempt.delivered:
            log.warning("webhook delivery %s to %s: %s", delivery_id, redact_url(url), attempt.error)
    return tally
