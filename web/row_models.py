"""The API models (web.api.schemas) of rows, as the API and the live pages show them, and the compare page's ids.

The rows come from core.service, read in the session given (the request's, web.db); nothing here writes."""

from __future__ import annotations

from core.common.errors import UserInputError
from core.engine.progress import EpochRecord
from core.service import jobs as job_service
from core.service import users
from core.service.job_options import JobOptions
from core.service.records import EpochMetric, Job, Sweep
from core.service.sweep_stopping import describe_rule, parse_median_rule
from web.api import schemas
from web.db import Session
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
    names = users.user_names(session, {job.submitted_by for job in jobs})
    return [
        schemas.Job.model_validate(
            {
                **{name: getattr(job, name) for name in stored},
                **options[job.id].model_dump(),
                "queue_position": positions.get(job.id),
                "queue_served": job.queue in served,
                "submitted_by_name": names.get(job.submitted_by, "cli"),
            }
        )
        for job in jobs
    ]


def epoch_model(metric: EpochMetric) -> EpochRecord:
    """An epoch row as the EpochRecord it stores."""
    return EpochRecord.model_validate(metric, from_attributes=True)


def sweep_model(session: Session, sweep: Sweep) -> schemas.Sweep:
    job_ids = job_service.sweep_job_ids(session, sweep.id)
    derived = {"job_ids", *JobOptions.model_fields}
    fields = {name: getattr(sweep, name) for name in schemas.Sweep.model_fields if name not in derived}
    return schemas.Sweep.model_validate({**fields, **job_service.options_of(session, sweep).model_dump(), "job_ids": job_ids})


def sweep_rule_text(session: Session, sweep_id: int) -> str | None:
    """A sweep's median stopping rule in words (None: no such sweep or no rule)."""
    sweep = job_service.find_sweep(session, sweep_id)
    rule = parse_median_rule(sweep.early_stopping) if sweep is not None else None
    return None if rule is None else describe_rule(rule)


def parse_job_ids(text: str) -> list[int]:
    """`3,5,8` → [3, 5, 8] for the compare page (2 to MAX_COMPARED distinct ids)."""
    try:
        ids = list(dict.fromkeys(int(part) for part in text.replace(" ", "").split(",") if part))
    except ValueError:
        raise UserInputError("ids: give job ids separated by commas, e.g. 3,5", field="ids") from None
    if not 2 <= len(ids) <= MAX_COMPARED or not all(storable_id(i) for i in ids):
        raise UserInputError(f"ids: choose between 2 and {MAX_COMPARED} jobs to compare", field="ids")
    return ids
