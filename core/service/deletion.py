"""Deleting jobs, sweeps and cross-validations so that their storage is actually freed, and `gc` of old
finished jobs.

Deleting a job removes its run folder from the artifact store (a folder store: inside the folder, links
not followed; an s3:// store: every object under its run key) and any file recorded for it elsewhere in
the store, then its rows (epoch metrics, artifacts, tags);
finished children that named it as parent keep their own results (their parent_id becomes NULL). It is
refused for a queued or running job ("cancel it first"), while queued or running jobs depend on its
checkpoints (named), and for a cross-validation's fold job: a fold belongs to its cross-validation,
whose summary, out-of-fold results and ensembles read it: it goes with the whole cross-validation (its
folds and ensembles, once none is queued or running). The bytes reported are the bytes of the files
actually removed, and the audit row ("job.delete", "sweep.delete", "cross_validation.delete") carries them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import delete, or_, select, update
from sqlalchemy.orm import Session

from core.common.errors import NotFound, StateConflict, StorageError, UserInputError
from core.engine.run_folder.artifact_store import valid_key
from core.service import audit
from core.service.access import Actor, PermissionDenied, require_owner
from core.service.db import get_sessionmaker
from core.service.jobs import MAX_ID, artifacts, get_job
from core.service.records import (
    CANCELLABLE_STATUSES,
    FINISHED_STATUSES,
    Artifact,
    CrossValidation,
    EpochMetric,
    Job,
    JobStatus,
    JobTag,
    Sweep,
    SweepTag,
    User,
    utcnow,
)
from core.service.run_folders import artifact_store, job_run_key

AGE = re.compile(r"^\s*(\d{1,5})\s*([hdw])\s*$")
AGE_UNITS = {"h": "hours", "d": "days", "w": "weeks"}
GC_STATUSES = (JobStatus.failed, JobStatus.cancelled)  # gc's default: the runs nobody will look at again


@dataclass(frozen=True)
class Deletion:
    """What a delete removed: the job ids and the bytes of the files removed."""

    job_ids: list[int]
    freed_bytes: int
    sweep_id: int | None = None
    cv_id: int | None = None

    @property
    def what(self) -> str:
        """What went, as the CLI and the dashboard say it: "job 4", "sweep 2 (3 jobs)", "cross-validation 1 (1 job)"."""
        if self.sweep_id is None and self.cv_id is None:
            return f"job {self.job_ids[0]}"
        group = f"sweep {self.sweep_id}" if self.sweep_id is not None else f"cross-validation {self.cv_id}"
        count = len(self.job_ids)
        return f"{group} ({count} job{'' if count == 1 else 's'})"


def _ids(job_ids: list[int]) -> str:
    return ", ".join(str(job_id) for job_id in job_ids)


def _refuse_undeletable(session: Session, doomed: list[Job]) -> None:
    """A queued or running job, a cross-validation fold, or one whose checkpoints live jobs still need."""
    for job in doomed:
        if job.status in CANCELLABLE_STATUSES:
            raise StateConflict(f"job {job.id} is {job.status}: cancel it first")
        if job.cv_id is not None and job.cv_fold is not None:
            raise StateConflict(
                f"job {job.id} is fold {job.cv_fold} of cross-validation {job.cv_id}: a fold is kept "
                "with its cross-validation (its summary, out-of-fold results and ensembles read it); "
                f"delete cross-validation {job.cv_id} to free its folds"
            )
    _refuse_needed(session, doomed)


def _refuse_needed(session: Session, doomed: list[Job]) -> None:
    """Refuse while a queued or running job outside `doomed` reads one of their checkpoints."""
    ids = [job.id for job in doomed]
    dependents = [
        job
        for job in session.scalars(select(Job).where(Job.status.in_(CANCELLABLE_STATUSES)).order_by(Job.id))
        if job.id not in ids and _depends_on(job, doomed)
    ]
    if dependents:
        raise StateConflict(
            f"job {_ids(ids)}: queued or running job {_ids([j.id for j in dependents])} "
            "need its checkpoint; wait for them or cancel them first"
        )


def _in_run_folder(key: str, job: Job) -> bool:
    # By path components: a legacy folder jobs/1 is no prefix of jobs/12 or jobs/1-<run_key>.
    return key.startswith(job_run_key(job) + "/")


def _depends_on(job: Job, doomed: list[Job]) -> bool:
    """Does a live job read a checkpoint of one of these jobs (as its parent, or by a location in its run folder)?"""
    if job.parent_id in {d.id for d in doomed}:
        return True
    named = job.params.get("checkpoints") or []
    locations = [job.params.get("checkpoint") or "", *(named if isinstance(named, list) else [])]
    store = artifact_store()
    keys = [key for location in locations if isinstance(location, str) and location and (key := store.key_of(location))]
    return any(_in_run_folder(key, folder) for key in keys for folder in doomed)


def _files_elsewhere(session: Session, job: Job) -> list[str]:
    """Keys of files recorded for a job outside its run folder (older layouts)."""
    keys = [artifact.path for artifact in artifacts(session, job.id)]
    return [key for key in keys if valid_key(key) and not _in_run_folder(key, job)]


def job_bytes(session: Session, job: Job) -> int:
    """What deleting the job would free now: its run folder and its files elsewhere."""
    store = artifact_store()
    elsewhere = sum(store.size(key) or 0 for key in _files_elsewhere(session, job))
    return store.prefix_bytes(job_run_key(job)) + elsewhere


def _remove_job(session: Session, job: Job) -> int:
    """Remove a job's rows (flushed first, so a database refusal leaves its files), then its files."""
    store, prefix = artifact_store(), job_run_key(job)
    elsewhere = _files_elsewhere(session, job)
    session.execute(
        update(Job).where(Job.parent_id == job.id).values(parent_id=None).execution_options(synchronize_session=False)
    )
    for table in (EpochMetric, Artifact, JobTag):  # ON DELETE CASCADE too; explicit for any engine
        session.execute(delete(table).where(table.job_id == job.id))
    session.execute(delete(Job).where(Job.id == job.id).execution_options(synchronize_session=False))
    session.flush()
    try:
        freed = sum(store.delete(key) for key in elsewhere)
        return freed + store.delete_prefix(prefix)
    except OSError as error:  # the caller's transaction rolls back: the job stays, to be deleted again
        raise StorageError(
            f"job {job.id}: cannot remove {error.filename or store.location(prefix)}: "
            f"{error.strerror or error}; the job is kept (files already removed stay removed); "
            "fix this and delete it again"
        ) from None
    except StorageError as error:  # an object store that refused or could not be reached: the same
        raise StorageError(
            f"job {job.id}: {error}; the job is kept (files already removed stay removed); fix this and delete it again"
        ) from None


def delete_job(session: Session, job_id: int, *, actor: Actor) -> Deletion:
    """Delete a finished job, its files and rows (its owner or an admin); the caller commits."""
    job = get_job(session, job_id, lock=True)  # a child submitted meanwhile is seen below, or finds no parent
    require_owner(actor, job.submitted_by, f"job {job_id}")
    _refuse_undeletable(session, [job])
    kind, status = job.kind, job.status
    freed = _remove_job(session, job)
    audit.record(session, actor, "job.delete", "job", job_id, {"freed_bytes": freed, "kind": kind, "status": status})
    return Deletion([job_id], freed)


def delete_sweep(session: Session, sweep_id: int, *, actor: Actor) -> Deletion:
    """Delete a sweep whose jobs have all finished: every job as delete_job does, then the sweep."""
    sweep = session.get(Sweep, sweep_id) if 1 <= sweep_id <= MAX_ID else None
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    require_owner(actor, sweep.submitted_by, f"sweep {sweep_id}")
    members = list(session.scalars(select(Job).where(Job.sweep_id == sweep_id).order_by(Job.id).with_for_update()))
    unfinished = [job.id for job in members if job.status in CANCELLABLE_STATUSES]
    if unfinished:
        raise StateConflict(f"sweep {sweep_id}: job {_ids(unfinished)} still queued or running; cancel them first")
    _refuse_others_jobs(session, actor, members, f"sweep {sweep_id}")
    _refuse_undeletable(session, members)
    freed = sum(_remove_job(session, job) for job in members)
    session.execute(delete(SweepTag).where(SweepTag.sweep_id == sweep_id))
    session.execute(delete(Sweep).where(Sweep.id == sweep_id).execution_options(synchronize_session=False))
    ids = [job.id for job in members]
    audit.record(session, actor, "sweep.delete", "sweep", sweep_id, {"freed_bytes": freed, "jobs": ids})
    return Deletion(ids, freed, sweep_id)


def delete_cross_validation(session: Session, cv_id: int, *, actor: Actor) -> Deletion:
    """Delete a cross-validation whose jobs have all finished: every fold and ensemble job as delete_job
    does (files measured, then removed), then the cross-validation; its owner (who submitted the folds)
    or an admin."""
    # Its row FOR UPDATE: an ensemble being submitted (core.service.cv_jobs holds FOR KEY SHARE on it until
    # it commits) is waited for and then seen below as queued; one submitted after this finds no cross-validation.
    cv = session.get(CrossValidation, cv_id, with_for_update=True, populate_existing=True) if 1 <= cv_id <= MAX_ID else None
    if cv is None:
        raise NotFound(f"cross-validation {cv_id} not found", field="cv_id")
    members = list(session.scalars(select(Job).where(Job.cv_id == cv_id).order_by(Job.id).with_for_update()))
    folds = [job for job in members if job.cv_fold is not None]
    require_owner(actor, folds[0].submitted_by if folds else None, f"cross-validation {cv_id}")
    _refuse_others_jobs(session, actor, members, f"cross-validation {cv_id}")
    unfinished = [f"{job.id} ({_cv_role(job)}, {job.status})" for job in members if job.status in CANCELLABLE_STATUSES]
    if unfinished:
        raise StateConflict(
            f"cross-validation {cv_id} is still running: job {', '.join(unfinished)}; cancel them or wait for them first"
        )
    _refuse_needed(session, members)
    freed = sum(_remove_job(session, job) for job in members)
    session.execute(delete(CrossValidation).where(CrossValidation.id == cv_id).execution_options(synchronize_session=False))
    ids = [job.id for job in members]
    audit.record(
        session, actor, "cross_validation.delete", "cross_validation", cv_id, {"freed_bytes": freed, "jobs": ids, "name": cv.name}
    )
    return Deletion(ids, freed, cv_id=cv_id)


def _cv_role(job: Job) -> str:
    return "ensemble" if job.cv_fold is None else f"fold {job.cv_fold}"


def _refuse_others_jobs(session: Session, actor: Actor, members: list[Job], group: str) -> None:
    """A job of the group that someone else submitted (an ensemble queued from another user's folds) is theirs:
    the group's owner may not delete it, so the group waits for it (a 409 saying whose it is and what frees the
    group); an admin deletes everything."""
    if actor.is_admin:
        return
    for job in members:
        if job.submitted_by == actor.user_id:
            continue
        owner = session.get(User, job.submitted_by) if job.submitted_by is not None else None
        what = f"job {job.id}" + (f" ({_cv_role(job)})" if job.cv_id is not None else "")
        if owner is None:  # the CLI's (the operator's) or a deleted user's
            raise StateConflict(
                f"{group}: {what} was not submitted by you; an admin can delete job {job.id}, then {group} can be deleted"
            )
        raise StateConflict(
            f"{group}: {what} was submitted by {owner.username}; {owner.username} or an admin can delete "
            f"job {job.id}, then {group} can be deleted"
        )


# --- gc ---------------------------------------------------------------------------------------


def parse_age(text: str) -> timedelta:
    """'12h', '30d', '2w' → a timedelta; anything else names the option."""
    match = AGE.match(text or "")
    if not match:
        raise UserInputError(f"older_than: {text!r} is not an age; use a number and h, d or w (12h, 30d, 2w)", field="older_than")
    return timedelta(**{AGE_UNITS[match.group(2)]: int(match.group(1))})


def parse_statuses(text: str | None) -> list[str]:
    """'failed,cancelled' → the statuses; only finished ones (a live job is never collected)."""
    statuses = [s.strip() for s in (text or "").split(",") if s.strip()] or list(GC_STATUSES)
    wrong = [s for s in statuses if s not in FINISHED_STATUSES]
    if wrong:
        raise UserInputError(
            f"status: {', '.join(wrong)} is not a finished status; choose among {', '.join(FINISHED_STATUSES)}", field="status"
        )
    return sorted(set(statuses), key=FINISHED_STATUSES.index)


@dataclass
class Collected:
    """One job gc looked at: the bytes it freed (or would free), or why it was skipped."""

    job_id: int
    status: str
    kind: str
    finished_at: object
    bytes: int = 0
    skipped: str | None = None


@dataclass
class GcReport:
    dry_run: bool
    jobs: list[Collected] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(entry.bytes for entry in self.jobs if entry.skipped is None)


def collect_garbage(older_than: timedelta, statuses: list[str], *, dry_run: bool, actor: Actor) -> GcReport:
    """Delete (or, dry_run, list) jobs with these statuses that finished longer ago than older_than,
    each in its own transaction through delete_job; a job that may not go is reported, not fatal."""
    cutoff = utcnow() - older_than
    with get_sessionmaker().begin() as session:
        ended = or_(Job.finished_at < cutoff, Job.finished_at.is_(None) & (Job.created_at < cutoff))
        found = [
            (job.id, job.status, job.kind, job.finished_at)
            for job in session.scalars(select(Job).where(Job.status.in_(statuses), ended).order_by(Job.id))
        ]
    report = GcReport(dry_run)
    for job_id, status, kind, finished_at in found:
        entry = Collected(job_id, status, kind, finished_at)
        try:
            with get_sessionmaker().begin() as session:
                if dry_run:
                    job = get_job(session, job_id)
                    require_owner(actor, job.submitted_by, f"job {job_id}")
                    _refuse_undeletable(session, [job])
                    entry.bytes = job_bytes(session, job)
                else:
                    entry.bytes = delete_job(session, job_id, actor=actor).freed_bytes
        except (UserInputError, StateConflict, PermissionDenied, StorageError) as refusal:
            entry.skipped = str(refusal)
        report.jobs.append(entry)
    return report
