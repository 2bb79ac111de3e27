"""Read helpers over the ORM records the dashboard needs, and the API models (web.api.schemas) of rows.

Writes go through core.service (jobs, data folders) / worker.dispatch; nothing here writes."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.common.errors import UserInputError
from core.engine.progress import EpochRecord
from core.service import jobs as job_service
from core.service.job_options import JobOptions
from core.service.records import MODEL_KINDS, Artifact, EpochMetric, Job, Sweep, SweepTag, User
from core.service.sweep_stopping import describe_rule, parse_median_rule
from web.api import schemas
from web.inputs import storable_id

MAX_COMPARED = 8


# --- jobs ---------------------------------------------------------------------------------


def job_models(session: Session, jobs: list[Job]) -> list[schemas.Job]:
    """Jobs as the API and the live pages see them: with their options, their queue position and whether a live
    worker serves their queue."""
    served = job_service.live_queues(session)
    derived = {"queue_position", "queue_served", "submitted_by_name", *JobOptions.model_fields}
    stored = schemas.Job.model_fields.keys() - derived  # the row's own attributes
    options = job_service.options_of_jobs(session, jobs)
    positions = job_service.queue_positions(session, jobs)
    names = user_names(session, {job.submitted_by for job in jobs})
    return [schemas.Job.model_validate({**{name: getattr(job, name) for name in stored},
                                        **options[job.id].model_dump(),
                                        "queue_position": positions.get(job.id),
                                        "queue_served": job.queue in served,
                                        "submitted_by_name": names.get(job.submitted_by, "cli")})
            for job in jobs]


def user_names(session: Session, user_ids: set[int | None]) -> dict[int | None, str]:
    """User id → name for the given ids (None, the CLI, is left out)."""
    wanted = [user_id for user_id in user_ids if user_id is not None]
    if not wanted:
        return {}
    return {user_id: name for user_id, name in session.execute(select(User.id, User.username).where(User.id.in_(wanted)))}


def epoch_model(metric: EpochMetric) -> EpochRecord:
    """An epoch row as the EpochRecord it stores."""
    return EpochRecord.model_validate(metric, from_attributes=True)


def sweep_model(session: Session, sweep: Sweep) -> schemas.Sweep:
    job_ids = list(session.scalars(select(Job.id).where(Job.sweep_id == sweep.id).order_by(Job.id)))
    derived = {"job_ids", *JobOptions.model_fields}
    fields = {name: getattr(sweep, name) for name in schemas.Sweep.model_fields if name not in derived}
    return schemas.Sweep.model_validate({**fields, **job_service.options_of(session, sweep).model_dump(),
                                         "job_ids": job_ids})


def sweep_rule_text(session: Session, sweep_id: int) -> str | None:
    """A sweep's median stopping rule in words (None: no such sweep or no rule)."""
    sweep = find_sweep(session, sweep_id)
    rule = parse_median_rule(sweep.early_stopping) if sweep is not None else None
    return None if rule is None else describe_rule(rule)


def find_job(session: Session, job_id: int) -> Job | None:
    """The job as the database has it now, or None (the caller answers 404)."""
    return session.get(Job, job_id, populate_existing=True) if storable_id(job_id) else None


def find_sweep(session: Session, sweep_id: int) -> Sweep | None:
    return session.get(Sweep, sweep_id) if storable_id(sweep_id) else None


def model_jobs(session: Session, limit: int = 200) -> list[Job]:
    """Train/finetune jobs that have a checkpoint to start from (succeeded, or stopped with one saved)."""
    with_checkpoint = select(Artifact.job_id).where(Artifact.kind == "checkpoint")
    query = (select(Job).where(Job.kind.in_(MODEL_KINDS), Job.id.in_(with_checkpoint))
             .order_by(Job.id.desc()).limit(limit))
    return list(session.scalars(query))


def child_jobs(session: Session, job_id: int, limit: int = 200) -> list[Job]:
    """The jobs started from this job's checkpoint (parent_id): its evaluations, predictions and finetunes, oldest first."""
    return list(session.scalars(select(Job).where(Job.parent_id == job_id).order_by(Job.id).limit(limit)))


def recent_jobs(session: Session, limit: int = 200) -> list[Job]:
    """The newest jobs, for the compare picker: training runs (curves) and evaluate jobs (ROC curves)."""
    kinds = (*MODEL_KINDS, "evaluate")
    return list(session.scalars(select(Job).where(Job.kind.in_(kinds)).order_by(Job.id.desc()).limit(limit)))


def list_sweeps(session: Session, page: int, per_page: int, tag: str | None = None) -> tuple[list[Sweep], int]:
    conditions = []
    if tag is not None:
        conditions.append(Sweep.id.in_(select(SweepTag.sweep_id).where(SweepTag.tag == job_service.tag_filter(tag))))
    total = session.scalar(select(func.count(Sweep.id)).where(*conditions)) or 0
    query = select(Sweep).where(*conditions).order_by(Sweep.id.desc()).limit(per_page).offset((page - 1) * per_page)
    return list(session.scalars(query)), total


def parse_job_ids(text: str) -> list[int]:
    """`3,5,8` → [3, 5, 8] for the compare page (2 to MAX_COMPARED distinct ids)."""
    try:
        ids = list(dict.fromkeys(int(part) for part in text.replace(" ", "").split(",") if part))
    except ValueError:
        raise UserInputError("ids: give job ids separated by commas, e.g. 3,5", field="ids") from None
    if not 2 <= len(ids) <= MAX_COMPARED or not all(storable_id(i) for i in ids):
        raise UserInputError(f"ids: choose between 2 and {MAX_COMPARED} jobs to compare", field="ids")
    return ids
