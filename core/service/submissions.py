"""The one way work enters the queue: `submit(session, request, actor, origin, settings)` takes a request whole
(core.service.jobs.request: a job, a sweep, a cross-validation, a fold ensemble), checks that the actor
may submit, makes the rows and writes the audit row, in the caller's transaction. The caller commits,
then sends each queued job's id (worker.dispatch.submit; `Queued` says which)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.service import audit, jobs
from core.service.access import Actor, require_submit
from core.service.cv_jobs import create_cross_validation, create_ensemble_job
from core.service.jobs.request import AnyRequest, CrossValidationRequest, EnsembleRequest, JobRequest, Origin, SweepRequest
from core.service.records import Job
from core.service.settings import Settings


@dataclass(frozen=True)
class Queued:
    """What one transaction queued, to send once it commits: `id`, the job's, sweep's or cross-validation's
    (None where nothing was asked for by id: the reaper's requeue), and each job's (id, queue)."""

    id: int | None
    jobs: list[tuple[int, str]]

    @classmethod
    def of(cls, id: int | None, queued: list[Job]) -> Queued:
        return cls(id, [(job.id, job.queue) for job in queued])

    @property
    def job_ids(self) -> list[int]:
        return [job_id for job_id, _ in self.jobs]


def submit(session: Session, request: AnyRequest, actor: Actor, origin: Origin, settings: Settings) -> Queued:
    """Check the actor may submit, make the rows the request asks for and audit it; the caller commits, then sends.
    settings: the edge's (the web app's, the CLI's): its caps, max_attempts and RETENTION."""
    require_submit(actor)
    user = actor.user_id
    if isinstance(request, SweepRequest):
        sweep, swept = jobs.create_sweep(session, request, submitted_by=user, origin=origin, settings=settings)
        audit.record(
            session,
            actor,
            "sweep.submit",
            "sweep",
            sweep.id,
            {"kind": request.kind, "jobs": len(swept), "early_stopping": sweep.early_stopping},
        )
        return Queued.of(sweep.id, swept)
    if isinstance(request, CrossValidationRequest):
        cv, folds = create_cross_validation(session, request, submitted_by=user, origin=origin, settings=settings)
        audit.record(session, actor, "cv.submit", "cross_validation", cv.id, {"folds": len(folds)})
        return Queued.of(cv.id, folds)
    if isinstance(request, EnsembleRequest):
        job = create_ensemble_job(session, request, submitted_by=user, origin=origin, settings=settings)
        audit.record(session, actor, "job.submit", "job", job.id, {"kind": request.kind, "cv_id": request.cv_id})
        return Queued.of(job.id, [job])
    if isinstance(request, JobRequest):
        job = jobs.create_job(session, request, submitted_by=user, origin=origin, settings=settings)
        audit.record(session, actor, "job.submit", "job", job.id, {"kind": request.kind})
        return Queued.of(job.id, [job])
    raise TypeError(f"submit: {type(request).__name__} is not a submit request")
