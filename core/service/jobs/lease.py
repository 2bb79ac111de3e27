"""The worker's side of a job: the lease (one conditional UPDATE per claim, which is what makes a
twice-delivered message run once), heartbeats with progress, epochs recorded once, the outcome,
and the reaper's requeue of jobs whose worker was lost."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from core.engine.progress import EpochRecord
from core.service import webhooks
from core.service.records import (
    FINISHED_STATUSES,
    MAX_ID,
    PRIORITY_NAMES,
    EpochMetric,
    Job,
    JobStatus,
    WorkerRecord,
    utcnow,
)
from core.service.settings import get_settings

LATE_CANCEL = "cancel arrived after the last batch: the run had finished (its checkpoints are kept)"


PROGRESS_FIELDS = ("progress", "epoch", "epochs_total", "images_per_s", "eta_s", "log_tail", "best_valid_accuracy")


def _stale_cutoff():  # type: ignore[no-untyped-def]
    return get_settings().stale_cutoff(utcnow())


def _worker_lost():  # type: ignore[no-untyped-def]
    """A running job whose worker is gone: its heartbeat is stale, and no live worker row is the process
    that claimed it (one of that name, seen lately, registered before the job started; a worker
    restarted under the same name registers anew, after). The job's and the worker's heartbeats stop
    together when a process dies, but the job's last one may be a beat older: waiting for the worker's
    row to go stale as well lets the reaper report the lost worker with this job still running
    (core.service.webhooks.report_lost_workers) before requeueing it."""
    live_owner = exists().where(
        WorkerRecord.hostname == Job.worker_host,
        WorkerRecord.last_seen >= _stale_cutoff(),
        WorkerRecord.started_at <= Job.started_at,
    )
    return and_(Job.status == JobStatus.running, Job.heartbeat_at < _stale_cutoff(), ~live_owner)


# The order queued jobs of one queue start in: higher priority first, then oldest (by id) first.
CLAIM_ORDER = (Job.priority.desc(), Job.id.asc())


CLAIM_CANDIDATES = 20  # queued jobs tried per look at the queue (others may win some of them meanwhile)


def waiting():  # type: ignore[no-untyped-def]
    """Jobs a worker may start now: queued, and no cancel asked (claims; the queue depth metric)."""
    return and_(Job.status == JobStatus.queued, Job.cancel_requested.is_(False))


def _waiting_in(queue: str):  # type: ignore[no-untyped-def]
    """Jobs of this queue a worker may start now."""
    return and_(Job.queue == queue, waiting())


def _take_lease(session: Session, job_id: int, claimable: Any, *, owner: str, host: str) -> Job | None:
    """The one conditional UPDATE of a claim: the job becomes ours if it is still claimable."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.cancel_requested.is_(False), claimable)
        .values(
            status=JobStatus.running,
            attempts=Job.attempts + 1,
            lease_owner=owner,
            worker_host=host,
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def claim_job(session: Session, job_id: int, *, owner: str, host: str) -> Job | None:
    """Take the lease on this very job with one conditional UPDATE; None if it is not ours to run.

    Claimable: queued, or running with attempts left and its worker lost (see _worker_lost).
    A live lease, a finished job or a cancel request all make the claim fail."""
    claimable = or_(Job.status == JobStatus.queued, and_(_worker_lost(), Job.attempts < Job.max_attempts))
    return _take_lease(session, job_id, claimable, owner=owner, host=host)


def claim_next_job(session: Session, job_id: int, *, owner: str, host: str) -> Job | None:
    """What a worker does with a message naming job X: take the lease on the best queued job of X's
    queue (CLAIM_ORDER), which may be X or another; None if there is nothing to run.

    Every job that becomes queued sends its own message, so a queue never holds fewer messages
    than queued jobs, and whichever message comes first starts the job that should start first:
    priority works the same on Redis and on the embedded broker, and a priority changed while
    queued takes effect with no re-send. Each candidate is one conditional UPDATE (a job another
    worker won is skipped). With nothing queued, X itself is claimed if its worker died (a stale
    lease, see claim_job); a surplus message (a cancelled or twice-sent job) finds nothing."""
    queue = session.scalar(select(Job.queue).where(Job.id == job_id)) if 1 <= job_id <= MAX_ID else None
    if queue is None:
        return None
    while True:
        candidates = _next_candidates(session, queue)
        if not candidates:
            return claim_job(session, job_id, owner=owner, host=host)
        for candidate in candidates:
            job = _take_lease(session, candidate, Job.status == JobStatus.queued, owner=owner, host=host)
            if job is not None:
                return job


def _next_candidates(session: Session, queue: str) -> list[int]:
    """The first CLAIM_CANDIDATES queued jobs of a queue in CLAIM_ORDER. One query per priority,
    highest first, each an ordered range of the (queue, status, priority, id) index: ORDER BY
    priority DESC, id ASC in one query would sort every queued job of the queue."""
    found: list[int] = []
    for priority in sorted(PRIORITY_NAMES, reverse=True):
        found += session.scalars(
            select(Job.id)
            .where(_waiting_in(queue), Job.priority == priority)
            .order_by(Job.id)
            .limit(CLAIM_CANDIDATES - len(found))
        )
        if len(found) >= CLAIM_CANDIDATES:
            break
    return found


def running_job_of(session: Session, owner: str) -> int | None:
    """The running job this lease owner holds, if any."""
    return session.scalar(select(Job.id).where(Job.lease_owner == owner, Job.status == JobStatus.running).limit(1))


def heartbeat(session: Session, job_id: int, owner: str, **progress: Any) -> bool:
    """Refresh the lease and progress; False if the lease is no longer ours or a cancel was asked."""
    unknown = set(progress) - set(PROGRESS_FIELDS)
    if unknown:
        raise ValueError(f"heartbeat: unknown fields {sorted(unknown)}")
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.running)
        .values(heartbeat_at=utcnow(), **progress)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    cancel_requested = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return not cancel_requested


def _upsert(session: Session, model: type, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT … ON CONFLICT (keys) DO UPDATE, for PostgreSQL and SQLite alike."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise RuntimeError(f"unsupported database dialect {dialect}")
    statement = insert(model).values(**values)
    changed = {k: statement.excluded[k] for k in values if k not in keys}
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed))


def record_epoch(session: Session, job_id: int, record: EpochRecord) -> None:
    """Upsert one epoch's metrics (re-reporting an epoch after a resume changes nothing)."""
    _upsert(session, EpochMetric, {"job_id": job_id, **record.model_dump()}, ["job_id", "epoch"])
    accuracy = record.valid_accuracy
    if accuracy is not None:
        session.execute(
            update(Job)
            .where(Job.id == job_id, or_(Job.best_valid_accuracy.is_(None), Job.best_valid_accuracy < accuracy))
            .values(best_valid_accuracy=accuracy)
            .execution_options(synchronize_session=False)
        )


def finish_job(session: Session, job_id: int, owner: str, status: str, error: str | None = None) -> bool:
    """End a job we hold the lease on; False if the lease was lost (another worker took it over).

    "succeeded" becomes "cancelled" (error LATE_CANCEL) when a cancel was requested meanwhile."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"finish_job: {status!r} is not a finished status")
    ours = and_(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.running)
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": _one_line(error), "eta_s": None}
    if status == JobStatus.succeeded:
        # The run polls for a cancel before each batch; one that came during the last batch (or
        # while the outcome was being recorded) still wins, and the row says why.
        late_cancel = session.execute(
            update(Job)
            .where(ours, Job.cancel_requested.is_(True))
            .values({**values, "status": JobStatus.cancelled, "error": LATE_CANCEL, "progress": 1.0})
            .execution_options(synchronize_session=False)
        )
        if late_cancel.rowcount == 1:
            webhooks.job_ended(session, job_id)
            return True
        values["progress"] = 1.0
    result = session.execute(update(Job).where(ours).values(**values).execution_options(synchronize_session=False))
    if result.rowcount == 1:
        webhooks.job_ended(session, job_id)
    return result.rowcount == 1


def record_early_stop(session: Session, job_id: int, owner: str, epoch: int, reason: str) -> bool:
    """Note that the run ended early, at `epoch`, and why (patience or the sweep's median rule);
    written with the outcome, while we hold the lease."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.running)
        .values(stopped_epoch=epoch, stop_reason=_one_line(reason))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def note_attempt(session: Session, job_id: int, owner: str, note: str) -> bool:
    """Record how this attempt started (a takeover's resume, or its start over at epoch 1), while we hold the lease."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.running)
        .values(attempt_note=_one_line(note))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release_job(session: Session, job_id: int, owner: str) -> str | None:
    """Hand a running job back to its queue (its worker is shutting down); the attempt is not counted.

    A job whose cancel arrived meanwhile ends cancelled instead. Returns the new status, or None
    if the lease was no longer ours."""
    ours = and_(Job.id == job_id, Job.lease_owner == owner, Job.status == JobStatus.running)
    outcomes = [
        (Job.cancel_requested.is_(True), {"status": JobStatus.cancelled, "finished_at": utcnow()}),
        (Job.cancel_requested.is_(False), {"status": JobStatus.queued, "attempts": Job.attempts - 1}),
    ]
    for condition, values in outcomes:
        result = session.execute(
            update(Job)
            .where(ours, condition)
            .values(lease_owner=None, heartbeat_at=None, eta_s=None, **values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            if values["status"] == JobStatus.cancelled:
                webhooks.job_ended(session, job_id)
            return values["status"]
    return None


def _one_line(text: str | None, limit: int = 1000) -> str | None:
    if text is None:
        return None
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def queued_jobs(session: Session, queues: list[str]) -> list[tuple[int, str]]:
    """(id, queue) of the jobs waiting in these queues, oldest first (one message each; which job a
    message starts is decided when it arrives, see claim_next_job)."""
    rows = session.execute(
        select(Job.id, Job.queue)
        .where(Job.status == JobStatus.queued, Job.cancel_requested.is_(False), Job.queue.in_(queues))
        .order_by(Job.id)
    )
    return [(job_id, queue) for job_id, queue in rows]


def requeue_lost_jobs(session: Session) -> list[Job]:
    """Running jobs whose worker stopped heartbeating: queued again (to re-send) or failed 'worker lost'.

    Each change is conditional on the job still being stale, so two reapers never both requeue a job."""
    stale = _worker_lost()
    lost_ids = list(session.scalars(select(Job.id).where(stale)))
    requeued = []
    for job_id in lost_ids:
        this_stale = and_(Job.id == job_id, stale)
        outcomes = [
            (Job.cancel_requested.is_(True), {"status": JobStatus.cancelled, "finished_at": utcnow()}),
            (Job.attempts < Job.max_attempts, {"status": JobStatus.queued, "lease_owner": None}),
            (Job.attempts >= Job.max_attempts, {"status": JobStatus.failed, "error": "worker lost", "finished_at": utcnow()}),
        ]
        for condition, values in outcomes:
            result = session.execute(
                update(Job).where(this_stale, condition).values(**values).execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                if values["status"] == JobStatus.queued:
                    requeued.append(session.get(Job, job_id, populate_existing=True))
                else:
                    webhooks.job_ended(session, job_id)
                break
    return requeued
