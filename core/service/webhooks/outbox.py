"""Webhook events as outbox rows: one pending delivery per subscribed webhook, written in the
transaction of the change that makes the event (a rolled-back change announces nothing)."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session

from core.common.errors import NotFound
from core.service import audit
from core.service.access import Actor, require_admin
from core.service.event_counts import count_event
from core.service.records import (
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
from core.service.webhooks.config import MANAGE, find_delivery, get_webhook
from core.service.webhooks.transport import redact_url

log = logging.getLogger("leukemia.webhooks")

TEST_EVENT = "webhook.test"  # sent to one webhook on request; no subscription needed


def _body(event: str, payload: dict[str, Any]) -> str:
    return json.dumps({"event": event, "time": utcnow().isoformat() + "Z", **payload}, separators=(",", ":"))


def _pending(webhook_id: int, event: str, body: str) -> WebhookDelivery:
    now = utcnow()
    return WebhookDelivery(
        webhook_id=webhook_id,
        event=event,
        body=body,
        status=DeliveryStatus.pending,
        attempts=0,
        next_attempt_at=now,
        created_at=now,
    )


def enqueue_event(session: Session, event: str, payload: dict[str, Any]) -> list[WebhookDelivery]:
    """One pending delivery per enabled webhook subscribed to the event, in the caller's transaction."""
    if event not in WEBHOOK_EVENTS:
        raise ValueError(f"enqueue_event: {event!r} is not one of {WEBHOOK_EVENTS}")
    hooks = [
        hook
        for hook in session.scalars(select(Webhook).where(Webhook.enabled.is_(True)).order_by(Webhook.id))
        if event in (hook.events or [])
    ]
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
    return {
        "job": {
            "id": job.id,
            "kind": job.kind,
            "status": job.status,
            "error": job.error,
            "queue": job.queue,
            "sweep_id": job.sweep_id,
            "submitted_by_name": name,
            "attempts": job.attempts,
            "best_valid_accuracy": job.best_valid_accuracy,
            "stopped_epoch": job.stopped_epoch,
            "stop_reason": job.stop_reason,
            "worker_host": job.worker_host,
            "finished_at": job.finished_at.isoformat() + "Z" if job.finished_at else None,
            "url": f"{public_url}/jobs/{job.id}" if public_url else None,
        }
    }


def job_ended(session: Session, job_id: int) -> None:
    """Count and announce a job that has just ended (job.succeeded / job.failed / job.cancelled), in
    the transaction of the change; the announcement costs one query when no webhook is enabled."""
    job = session.get(Job, job_id, populate_existing=True)
    event = f"job.{job.status}" if job is not None else ""
    if event not in WEBHOOK_EVENTS:
        return
    count_event(session, event, job.kind)
    if session.scalar(select(Webhook.id).where(Webhook.enabled.is_(True)).limit(1)) is not None:
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
    worker.lost. The mark is one conditional UPDATE, so two reapers report a loss once. Their jobs
    are still running then: the reaper requeues a job only once its worker is lost
    (core.service.jobs.requeue_lost_jobs), after this report, so the report names them."""
    cutoff = get_settings().stale_cutoff(utcnow())
    silent = and_(WorkerRecord.last_seen < cutoff, WorkerRecord.lost_at.is_(None))
    reported = []
    for worker in list(session.scalars(select(WorkerRecord).where(silent))):
        marked = session.execute(
            update(WorkerRecord)
            .where(WorkerRecord.id == worker.id, silent)
            .values(lost_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        if marked.rowcount == 1:
            _announce_lost(session, worker)
            reported.append(worker.hostname)
    return reported


def report_replaced_worker(session: Session, hostname: str) -> bool:
    """A worker starting under the name of one whose row is still there, not reported lost: that one
    ended without unregistering (killed, crashed; compose restarts a container under its old name).
    Report it lost now, with the jobs it was running, before the new worker's row replaces it."""
    worker = session.scalar(select(WorkerRecord).where(WorkerRecord.hostname == hostname, WorkerRecord.lost_at.is_(None)))
    if worker is None:
        return False
    _announce_lost(session, worker)
    return True


def _announce_lost(session: Session, worker: WorkerRecord) -> None:
    """Count a lost worker and announce it (worker.lost) with the jobs it was running."""
    running = list(
        session.scalars(
            select(Job.id)
            .where(Job.worker_host == worker.hostname, Job.status == JobStatus.running, Job.started_at >= worker.started_at)
            .order_by(Job.id)
        )
    )
    enqueue_event(
        session,
        "worker.lost",
        {
            "worker": {
                "hostname": worker.hostname,
                "queues": worker.queue_names,
                "gpu": worker.gpu,
                "pid": worker.pid,
                "last_seen": worker.last_seen.isoformat() + "Z",
                "running_job_ids": running,
            }
        },
    )
    count_event(session, "worker.lost")
    log.warning("worker %s lost: last seen %s, running jobs %s", worker.hostname, worker.last_seen, running)


def lost_workers(session: Session, *, within_hours: float | None = None, limit: int = 50) -> list[WorkerRecord]:
    """Workers reported lost and not seen since, newest loss first (those lost within the last
    `within_hours` only, when given: a worker name that never comes back stays in the table)."""
    lost = [WorkerRecord.lost_at.is_not(None)]
    if within_hours is not None:
        lost.append(WorkerRecord.lost_at >= utcnow() - timedelta(hours=within_hours))
    return list(session.scalars(select(WorkerRecord).where(*lost).order_by(WorkerRecord.lost_at.desc()).limit(limit)))


# --- admin actions: permission checked, queued delivery and audit row in one transaction ------------


def send_test(session: Session, actor: Actor, webhook_id: int) -> WebhookDelivery:
    require_admin(actor, MANAGE)
    row = queue_test_delivery(session, webhook_id)
    audit.record(session, actor, "webhook.test", "webhook", webhook_id, {"delivery_id": row.id})
    return row


def send_again(session: Session, actor: Actor, delivery_id: int) -> WebhookDelivery:
    require_admin(actor, MANAGE)
    row = redeliver(session, delivery_id)
    audit.record(
        session, actor, "webhook.redeliver", "webhook", row.webhook_id, {"delivery_id": delivery_id, "new_delivery_id": row.id}
    )
    return row
