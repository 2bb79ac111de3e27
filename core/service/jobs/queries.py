"""Reading jobs: one job, the filtered list, epochs, artifacts, tags and options, queue positions; sweeps and their
jobs; the jobs a form or page offers to choose from."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.common.errors import NotFound, UserInputError
from core.service.job_options import COLUMN_OPTIONS, JobOptions, check_tag
from core.service.jobs.lease import CLAIM_ORDER
from core.service.records import (
    JOB_KINDS,
    JOB_STATUSES,
    MAX_ID,
    MODEL_KINDS,
    PRIORITY_NAMES,
    Artifact,
    EpochMetric,
    Job,
    JobStatus,
    JobTag,
    Sweep,
    SweepTag,
)


def tags_of(session: Session, jobs: list[Job]) -> dict[int, list[str]]:
    """Each job's tags, sorted (one query for the whole list)."""
    found: dict[int, list[str]] = {job.id: [] for job in jobs}
    rows = session.execute(select(JobTag.job_id, JobTag.tag).where(JobTag.job_id.in_(list(found))).order_by(JobTag.tag))
    for job_id, tag in rows:
        found[job_id].append(tag)
    return found


def tag_filter(tag: str) -> str:
    """A tag to filter by, as stored (lower-cased), or a UserInputError naming the field `tag`."""
    try:
        return check_tag(tag.strip())
    except ValueError as error:
        raise UserInputError(f"tag: {error}", field="tag") from None


def sweep_tags(session: Session, sweep_id: int) -> list[str]:
    return list(session.scalars(select(SweepTag.tag).where(SweepTag.sweep_id == sweep_id).order_by(SweepTag.tag)))


def options_of(session: Session, target: Job | Sweep) -> JobOptions:
    """The options stored on a job or sweep, as the shape they were set with."""
    tags = tags_of(session, [target])[target.id] if isinstance(target, Job) else sweep_tags(session, target.id)
    return stored_options(target, tags)


def options_of_jobs(session: Session, jobs: list[Job]) -> dict[int, JobOptions]:
    """Each job's options (one query for the tags of the whole list)."""
    tags = tags_of(session, jobs)
    return {job.id: stored_options(job, tags[job.id]) for job in jobs}


def stored_options(target: Job | Sweep, tags: list[str]) -> JobOptions:
    """A row's options: its columns, its tags, and its extra_options (one no longer known is left out)."""
    extra = {
        name: value
        for name, value in (target.extra_options or {}).items()
        if name in JobOptions.model_fields and name not in COLUMN_OPTIONS
    }
    return JobOptions(
        priority=PRIORITY_NAMES[target.priority], description=target.description, tags=tags, retention=target.retention, **extra
    )


def get_job(session: Session, job_id: int, *, lock: bool = False) -> Job:
    """The job as the database has it now, or NotFound naming the id; lock: its row locked
    (FOR UPDATE) until the transaction ends, as a delete does."""
    job = session.get(Job, job_id, populate_existing=True, with_for_update=lock or None) if 1 <= job_id <= MAX_ID else None
    if job is None:
        raise NotFound(f"job {job_id} not found")
    return job


def find_job(session: Session, job_id: int) -> Job | None:
    """The job as the database has it now, or None (a caller to whom an unknown id is an error uses get_job)."""
    return session.get(Job, job_id, populate_existing=True) if 1 <= job_id <= MAX_ID else None


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    sweep_id: int | None = None,
    tag: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[Job], int]:
    """A page of jobs, newest first, and the total matching (served by the (status|kind|sweep, id) indexes
    and the job_tags tag index)."""
    if status is not None and status not in JOB_STATUSES:
        raise UserInputError(f"status: {status!r} is not one of {', '.join(JOB_STATUSES)}", field="status")
    if kind is not None and kind not in JOB_KINDS:
        raise UserInputError(f"kind: {kind!r} is not one of {', '.join(JOB_KINDS)}", field="kind")
    if page < 1 or not 1 <= per_page <= 1000:
        raise UserInputError("page: page must be >= 1 and per_page between 1 and 1000", field="page")
    conditions = []
    if status is not None:
        conditions.append(Job.status == status)
    if kind is not None:
        conditions.append(Job.kind == kind)
    if sweep_id is not None:
        if not 1 <= sweep_id <= MAX_ID:
            raise UserInputError(f"sweep_id: {sweep_id} is not a sweep id", field="sweep_id")
        conditions.append(Job.sweep_id == sweep_id)
    if tag is not None:
        conditions.append(Job.id.in_(select(JobTag.job_id).where(JobTag.tag == tag_filter(tag))))
    total = session.scalar(select(func.count(Job.id)).where(*conditions)) or 0
    query = select(Job).where(*conditions).order_by(Job.id.desc()).limit(per_page).offset((page - 1) * per_page)
    return list(session.scalars(query)), total


def model_jobs(session: Session, limit: int = 200) -> list[Job]:
    """Train/finetune jobs that have a checkpoint to start from (succeeded, or stopped with one saved), newest first."""
    with_checkpoint = select(Artifact.job_id).where(Artifact.kind == "checkpoint")
    query = select(Job).where(Job.kind.in_(MODEL_KINDS), Job.id.in_(with_checkpoint)).order_by(Job.id.desc()).limit(limit)
    return list(session.scalars(query))


def child_jobs(session: Session, job_id: int, limit: int = 200) -> list[Job]:
    """The jobs started from this job's checkpoint (parent_id): its evaluations, predictions and finetunes, oldest first."""
    return list(session.scalars(select(Job).where(Job.parent_id == job_id).order_by(Job.id).limit(limit)))


def recent_jobs(session: Session, limit: int = 200) -> list[Job]:
    """The newest jobs that can be compared: training runs (curves) and evaluate jobs (ROC curves)."""
    kinds = (*MODEL_KINDS, "evaluate")
    return list(session.scalars(select(Job).where(Job.kind.in_(kinds)).order_by(Job.id.desc()).limit(limit)))


def find_sweep(session: Session, sweep_id: int) -> Sweep | None:
    """The sweep, or None (a caller to whom an unknown id is an error uses job_edits.get_sweep)."""
    return session.get(Sweep, sweep_id) if 1 <= sweep_id <= MAX_ID else None


def sweep_job_ids(session: Session, sweep_id: int) -> list[int]:
    """The ids of a sweep's jobs, in order."""
    return list(session.scalars(select(Job.id).where(Job.sweep_id == sweep_id).order_by(Job.id)))


def list_sweeps(session: Session, page: int, per_page: int, tag: str | None = None) -> tuple[list[Sweep], int]:
    """A page of sweeps, newest first, and the total matching."""
    conditions = []
    if tag is not None:
        conditions.append(Sweep.id.in_(select(SweepTag.sweep_id).where(SweepTag.tag == tag_filter(tag))))
    total = session.scalar(select(func.count(Sweep.id)).where(*conditions)) or 0
    query = select(Sweep).where(*conditions).order_by(Sweep.id.desc()).limit(per_page).offset((page - 1) * per_page)
    return list(session.scalars(query)), total


def epoch_metrics(session: Session, job_id: int) -> list[EpochMetric]:
    """The job's epoch rows, in epoch order."""
    return list(session.scalars(select(EpochMetric).where(EpochMetric.job_id == job_id).order_by(EpochMetric.epoch)))


def artifacts(session: Session, job_id: int) -> list[Artifact]:
    """The job's recorded files, by name."""
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def queue_positions(session: Session, listed: list[Job]) -> dict[int, int]:
    """1-based place of each queued job of a page among the queued jobs of its queue, in the order
    they start (CLAIM_ORDER: higher priority first, then oldest); jobs not queued are left out.
    One query for the whole page: the queued jobs of its queues numbered once (a window)."""
    queued = [job for job in listed if job.status == JobStatus.queued]
    if not queued:
        return {}
    place = func.row_number().over(partition_by=Job.queue, order_by=CLAIM_ORDER)
    ranked = (
        select(Job.id.label("id"), place.label("place"))
        .where(Job.status == JobStatus.queued, Job.cancel_requested.is_(False), Job.queue.in_(sorted({j.queue for j in queued})))
        .subquery()
    )
    rows = session.execute(select(ranked.c.id, ranked.c.place).where(ranked.c.id.in_([job.id for job in queued])))
    return {job_id: place for job_id, place in rows}


def queue_position(session: Session, job: Job) -> int | None:
    """queue_positions of one job; None unless queued."""
    return queue_positions(session, [job]).get(job.id)
