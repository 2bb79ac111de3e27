"""The user's side of a job: cancel, retry, and failing a job whose message could not be sent."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.common.errors import StateConflict
from core.service import webhooks
from core.service.jobs.lease import _one_line
from core.service.jobs.queries import get_job
from core.service.jobs.submit import NEEDS_CHECKPOINT, _check_parent
from core.service.records import (
    RETRYABLE_STATUSES,
    Job,
    JobStatus,
    utcnow,
)
from core.service.settings import Settings


def fail_unsent_job(session: Session, job_id: int, reason: str) -> bool:
    """A queued job whose message could not be sent: failed with the reason (retry re-sends it),
    rather than left queued forever. False if it was no longer queued (a worker had it already)."""
    failed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.failed, error=_one_line(reason), finished_at=utcnow())
    )
    if failed.rowcount == 1:
        webhooks.job_ended(session, job_id)
    return failed.rowcount == 1


def request_cancel(session: Session, job_id: int) -> Job:
    """Queued → cancelled now; running → cancel_requested (its worker stops at the next batch)."""
    get_job(session, job_id)
    cancelled_now = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if cancelled_now.rowcount == 1:
        webhooks.job_ended(session, job_id)
    else:
        asked = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running)
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        if asked.rowcount != 1:
            job = session.get(Job, job_id, populate_existing=True)
            raise StateConflict(f"job {job_id} is already {job.status}; nothing to cancel")
    return session.get(Job, job_id, populate_existing=True)


def retry_job(session: Session, job_id: int, settings: Settings) -> Job:
    """Failed/cancelled → queued again with attempts reset; the worker resumes from its last checkpoint.
    A job that reads its parent's model is refused when the parent is gone (deleted) or unusable, as at submit
    (settings: the caller's, whose RETENTION tells whether the parent's last.pt was removed on purpose)."""
    _require_model_to_retry(session, get_job(session, job_id), settings.retention)
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(RETRYABLE_STATUSES))
        .values(
            status=JobStatus.queued,
            attempts=0,
            cancel_requested=False,
            error=None,
            finished_at=None,
            lease_owner=None,
            heartbeat_at=None,
            eta_s=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        job = session.get(Job, job_id, populate_existing=True)
        raise StateConflict(f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried")
    return session.get(Job, job_id, populate_existing=True)


def _require_model_to_retry(session: Session, job: Job, default_policy: str) -> None:
    """A finetune, evaluate or predict job runs on its parent's checkpoint (or a path): deleting the parent
    cleared parent_id, so such a retry would only fail in the worker; a parent still there is checked
    (and locked against a delete) as at submit."""
    if job.parent_id is not None:
        _check_parent(session, job.kind, job.parent_id, job.params, default_policy)
    elif job.kind in NEEDS_CHECKPOINT and not (job.params.get("checkpoint") or job.params.get("checkpoints")):
        raise StateConflict(
            f"job {job.id}: its parent job was deleted, so there is no model to {job.kind}; "
            f"submit a new {job.kind} job from another model"
        )
