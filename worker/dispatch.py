"""Submit, cancel and retry jobs: the row is committed first, then its id goes to the broker.

A message is never sent for a row that is not committed, and a row whose message could not
be sent is marked failed (retry re-sends it) rather than left queued forever: its error, which every
user sees, says so without naming the broker's address; the log has the broker's own reason.
Each action names its actor: the role is checked (core.service.access) and the audit row written in the
transaction that makes the change."""

from __future__ import annotations

import logging
from typing import Any

from core.common.errors import BrokerUnavailable
from core.service import audit, jobs, webhooks
from core.service.access import Actor, require_owner, require_submit
from core.service.db import get_sessionmaker
from core.service.job_options import JobOptions
from core.service.records import JobStatus
from core.service.sweep_stopping import MedianStopRule
from worker.celery_app import send_run_job

log = logging.getLogger("leukemia.dispatch")

def send_job(job_id: int, queue: str) -> None:
    """Send the job id to its queue; an unreachable broker fails the (committed) job with a line for users,
    and the broker's own reason (its host and port) goes to the log, for the operator."""
    try:
        send_run_job(job_id, queue)
    except Exception as error:  # kombu raises OperationalError and friends; the user needs one line
        log.warning("could not send job %s to the broker: %s: %s", job_id, type(error).__name__, error)
        line = (f"could not send job {job_id} to the broker, which is unavailable; the job is marked failed: retry it "
                "when the broker is back (the service's log has the details)")
        with get_sessionmaker().begin() as session:
            jobs.fail_unsent_job(session, job_id, line)
        raise BrokerUnavailable(line, job_id=job_id) from None


def send_jobs(targets: list[tuple[int, str]]) -> None:
    """Send each (job id, queue): one failed send fails that job only; the first failure is raised at the end."""
    first_failure: BrokerUnavailable | None = None
    for job_id, queue in targets:
        try:
            send_job(job_id, queue)
        except BrokerUnavailable as failure:
            first_failure = first_failure or failure
    if first_failure is not None:
        raise first_failure


def submit_job(
    kind: str,
    params: dict[str, Any],
    *,
    parent_id: int | None = None,
    queue: str | None = None,
    max_attempts: int | None = None,
    strict: bool = False,
    origin: str = "cli",
    actor: Actor,
    options: JobOptions | None = None,
) -> int:
    """Create and commit a queued job, then send its id; returns the job id (strict: see core.service.jobs.create_job;
    origin: core.service.records.JOB_ORIGINS)."""
    require_submit(actor)
    with get_sessionmaker().begin() as session:
        job = jobs.create_job(session, kind, params, parent_id=parent_id, queue=queue, max_attempts=max_attempts,
                              strict=strict, origin=origin, submitted_by=actor.user_id, options=options)
        audit.record(session, actor, "job.submit", "job", job.id, {"kind": kind})
        job_id, job_queue = job.id, job.queue
    send_job(job_id, job_queue)
    return job_id


def submit_sweep(
    kind: str,
    base_params: dict[str, Any],
    grid: dict[str, list[Any]],
    *,
    name: str | None = None,
    parent_id: int | None = None,
    queue: str | None = None,
    strict: bool = False,
    origin: str = "cli",
    actor: Actor,
    options: JobOptions | None = None,
    early_stopping: MedianStopRule | None = None,
) -> tuple[int, list[int]]:
    """Create a sweep with one job per grid point (all validated first), then send each id."""
    require_submit(actor)
    with get_sessionmaker().begin() as session:
        sweep, swept = jobs.create_sweep(session, kind, base_params, grid, name=name, parent_id=parent_id, queue=queue,
                                         strict=strict, origin=origin, submitted_by=actor.user_id, options=options,
                                         early_stopping=early_stopping)  # fmt: skip
        audit.record(session, actor, "sweep.submit", "sweep", sweep.id,
                     {"kind": kind, "jobs": len(swept), "early_stopping": sweep.early_stopping})  # fmt: skip
        sweep_id, targets = sweep.id, [(job.id, job.queue) for job in swept]
    send_jobs(targets)
    return sweep_id, [job_id for job_id, _ in targets]


def submit_cross_validation(
    base_params: dict[str, Any], *, folds: int | None = None, release_folds: bool = False, name: str | None = None,
    queue: str | None = None, strict: bool = False, origin: str = "cli", actor: Actor,
) -> tuple[int, list[int]]:
    """Create a cross-validation with one training job per fold (all validated first), then send each id."""
    from core.service.cv_jobs import create_cross_validation

    require_submit(actor)
    with get_sessionmaker().begin() as session:
        cv, fold_jobs = create_cross_validation(session, base_params, folds=folds, release_folds=release_folds,
                                                name=name, queue=queue, strict=strict, origin=origin,
                                                submitted_by=actor.user_id)
        audit.record(session, actor, "cv.submit", "cross_validation", cv.id, {"folds": len(fold_jobs)})
        cv_id, targets = cv.id, [(job.id, job.queue) for job in fold_jobs]
    send_jobs(targets)
    return cv_id, [job_id for job_id, _ in targets]


def submit_ensemble(
    cv_id: int, kind: str, split: str, *, tta: bool = False, queue: str | None = None, origin: str = "cli",
    actor: Actor,
) -> int:
    """Create and send the evaluate or predict job averaging a finished cross-validation's fold models."""
    from core.service.cv_jobs import create_ensemble_job

    require_submit(actor)
    with get_sessionmaker().begin() as session:
        job = create_ensemble_job(session, cv_id, kind, split, tta=tta, queue=queue, origin=origin,  # type: ignore[arg-type]
                                  submitted_by=actor.user_id)
        audit.record(session, actor, "job.submit", "job", job.id, {"kind": kind, "cv_id": cv_id})
        job_id, job_queue = job.id, job.queue
    send_job(job_id, job_queue)
    return job_id


def cancel_job(job_id: int, *, actor: Actor) -> str:
    """Cancel a job: a queued one at once, a running one at its next batch. Returns its status now.
    A running job already asked to stop is answered as before and audited once (its row is locked, so two
    cancels at once see each other)."""
    with get_sessionmaker().begin() as session:
        job = jobs.get_job(session, job_id, lock=True)
        require_owner(actor, job.submitted_by, f"job {job_id}")
        if job.status == JobStatus.running and job.cancel_requested:
            return job.status
        status = jobs.request_cancel(session, job_id).status
        audit.record(session, actor, "job.cancel", "job", job_id, {"status": status})
        return status


def retry_job(job_id: int, *, actor: Actor) -> int:
    """Queue a failed or cancelled job again (it resumes from its last checkpoint) and re-send it."""
    with get_sessionmaker().begin() as session:
        require_owner(actor, jobs.get_job(session, job_id).submitted_by, f"job {job_id}")
        job = jobs.retry_job(session, job_id)
        audit.record(session, actor, "job.retry", "job", job_id)
        job_queue = job.queue
    send_job(job_id, job_queue)
    return job_id


def requeue_and_resend_lost_jobs() -> list[int]:
    """The reaper's step: workers silent too long are reported lost (a worker.lost webhook, once), and
    running jobs whose worker went silent are queued again and re-sent."""
    with get_sessionmaker().begin() as session:
        webhooks.report_lost_workers(session)
        requeued = [(job.id, job.queue) for job in jobs.requeue_lost_jobs(session)]
    send_jobs(requeued)
    return [job_id for job_id, _ in requeued]


def resend_waiting_jobs(queues: list[str]) -> list[int]:
    """At worker start: send every queued job of these queues again.

    A killed worker can take a message with it before claiming the row (the embedded broker
    deletes a message on delivery; Redis hides an unacknowledged one for its visibility
    timeout, an hour). A second message is harmless: only one claim can win."""
    with get_sessionmaker().begin() as session:
        waiting = jobs.queued_jobs(session, queues)
    for job_id, queue in waiting:
        send_run_job(job_id, queue)
    return [job_id for job_id, _ in waiting]

