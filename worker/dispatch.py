"""Submit, cancel and retry jobs: the row is committed first, then its id goes to the broker
(commit_then_send, the one path for every submission, retry and requeue).

A message is never sent for a row that is not committed, and a row whose message could not
be sent is marked failed (retry re-sends it) rather than left queued forever: its error, which every
user sees, says so without naming the broker's address; the log has the broker's own reason.
Each action names its actor: the role is checked (core.service.access) and the audit row written in the
transaction that makes the change."""

from __future__ import annotations

import logging
from typing import Callable

from sqlalchemy.orm import Session

from core.common.errors import BrokerUnavailable
from core.service import audit, jobs, submissions, webhooks
from core.service.access import Actor, require_owner
from core.service.db import get_sessionmaker
from core.service.jobs.request import AnyRequest, Origin
from core.service.records import JobStatus
from core.service.settings import Settings
from core.service.submissions import Queued
from worker.celery_app import send_run_job

log = logging.getLogger("leukemia.dispatch")


def send_job(job_id: int, queue: str) -> None:
    """Send the job id to its queue; an unreachable broker fails the (committed) job with a line for users,
    and the broker's own reason (its host and port) goes to the log, for the operator."""
    try:
        send_run_job(job_id, queue)
    except Exception as error:  # kombu raises OperationalError and friends; the user needs one line
        log.warning("could not send job %s to the broker: %s: %s", job_id, type(error).__name__, error)
        line = (
            f"could not send job {job_id} to the broker, which is unavailable; the job is marked failed: retry it "
            "when the broker is back (the service's log has the details)"
        )
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


def commit_then_send(change: Callable[[Session], Queued]) -> Queued:
    """Make a change in one transaction and commit it, then send each job it queued (send_jobs): every
    submission, retry and requeue goes through here, so no message is sent for a row not committed."""
    with get_sessionmaker().begin() as session:
        queued = change(session)
    send_jobs(queued.jobs)
    return queued


def submit(request: AnyRequest, *, actor: Actor, origin: Origin, settings: Settings) -> Queued:
    """Queue what a request asks for (core.service.submissions.submit: a job, a sweep, a cross-validation, a fold
    ensemble), commit it, then send each job's id; `.id` is the job's, sweep's or cross-validation's.
    settings: the edge's (the web app's, the CLI's)."""
    return commit_then_send(lambda session: submissions.submit(session, request, actor, origin, settings))


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


def retry_job(job_id: int, *, actor: Actor, settings: Settings) -> int:
    """Queue a failed or cancelled job again (it resumes from its last checkpoint) and re-send it."""

    def retry(session: Session) -> Queued:
        require_owner(actor, jobs.get_job(session, job_id).submitted_by, f"job {job_id}")
        job = jobs.retry_job(session, job_id, settings)
        audit.record(session, actor, "job.retry", "job", job_id)
        return Queued.of(job_id, [job])

    commit_then_send(retry)
    return job_id


def requeue_and_resend_lost_jobs() -> list[int]:
    """The reaper's step: workers silent too long are reported lost (a worker.lost webhook, once), and
    running jobs whose worker went silent are queued again and re-sent."""

    def requeue(session: Session) -> Queued:
        webhooks.report_lost_workers(session)
        return Queued.of(None, jobs.requeue_lost_jobs(session))

    return commit_then_send(requeue).job_ids


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
