"""Retention: which checkpoints a training run keeps once it has finished, and its epoch checkpoints.

Policies (core.service.job_options.RETENTION; a job's own, else the default policy its caller passes: the
RETENTION setting of the worker, web app or CLI at hand):
- `all`: keep what the run wrote (best.pt, last.pt), the default.
- `best`: after a job *succeeds*, best.pt only: last.pt (and any epoch checkpoints) removed. A
  failed or cancelled job keeps last.pt, which its retry resumes from.
- `last-N`: while it trains, the run also writes a slim checkpoint per epoch (epoch_XXX.pt, no
  optimizer state, through TrainingObserver.on_checkpoint) and keeps only the N newest, besides best.pt
  and last.pt.

A checkpoint that a queued or running child job (parent_id) will read is never removed. The worker
applies the policy right after it records the outcome (`after_job`), to what the artifact store holds
under the job's run key, then measures jobs.disk_bytes there. docs/queue.md, "Retention and disk"."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.engine.run_folder.artifact_store import StoredObject, remove_file
from core.engine.run_folder.layout import BEST_CHECKPOINT, LAST_CHECKPOINT
from core.service.disk import measure
from core.service.job_options import check_retention
from core.service.records import CANCELLABLE_STATUSES, MODEL_KINDS, Artifact, Job, JobStatus
from core.service.run_folders import artifact_store, job_run_key, local_root

log = logging.getLogger("leukemia.retention")
EPOCH_CHECKPOINT = re.compile(r"^epoch_(\d{3,})\.pt$")


def epoch_checkpoint_name(epoch: int) -> str:
    return f"epoch_{epoch:03d}.pt"


def policy_of(job: Job, default_policy: str) -> str:
    """The policy that applies to a job: its own, else default_policy (the caller's RETENTION setting)."""
    return check_retention(job.retention or None) or default_policy


def epochs_kept(policy: str) -> int | None:
    """N of a `last-N` policy; None for the others (no epoch checkpoints written)."""
    return int(policy.split("-", 1)[1]) if policy.startswith("last-") else None


def epoch_checkpoints(run_folder: Path) -> list[tuple[int, Path]]:
    """The local run folder's epoch_XXX.pt files, oldest epoch first."""
    if not Path(run_folder).is_dir():
        return []
    found = [
        (int(match.group(1)), path)
        for path in Path(run_folder).iterdir()
        if (match := EPOCH_CHECKPOINT.match(path.name)) and path.is_file()
    ]
    return sorted(found)


def stored_epoch_checkpoints(stored: list[StoredObject]) -> list[StoredObject]:
    """The epoch_XXX.pt files of a run folder's stored files, oldest epoch first."""
    found = [(int(match.group(1)), item) for item in stored if (match := EPOCH_CHECKPOINT.match(item.key.rsplit("/", 1)[-1]))]
    return [item for _epoch, item in sorted(found, key=lambda pair: pair[0])]


def save_epoch_checkpoint(run_folder: Path, checkpoint: dict[str, Any], keep: int) -> list[str]:
    """Write epoch_XXX.pt (slim: no resume state) and remove all but the `keep` newest; the removed names
    (an s3:// store's copies go when the worker next stores the run folder: core.service.run_mirror)."""
    from core.engine.model.checkpoint import save_checkpoint, without_resume_state  # torch: only where a run writes

    save_checkpoint(without_resume_state(checkpoint), Path(run_folder) / epoch_checkpoint_name(int(checkpoint["epoch"])))
    removed = []
    for _epoch, path in epoch_checkpoints(run_folder)[:-keep]:
        remove_file(local_root(), path)
        removed.append(path.name)
    return removed


def keep_epochs_for(session: Session, job_id: int, default_policy: str) -> int | None:
    """How many epoch checkpoints a running job keeps now (read each epoch: an edit of its policy counts)."""
    job = session.get(Job, job_id)
    return None if job is None else epochs_kept(policy_of(job, default_policy))


def needed_by_children(session: Session, job_id: int) -> set[str]:
    """The checkpoint files of a job that its queued or running children (parent_id) will read."""
    choices = session.scalars(select(Job.params).where(Job.parent_id == job_id, Job.status.in_(CANCELLABLE_STATUSES)))
    return {f"{(params or {}).get('checkpoint_choice') or 'best'}.pt" for params in choices}


def last_removed(job: Job, default_policy: str) -> bool:
    """Did the `best` policy remove this job's last.pt (so nothing can start from "last")?"""
    return (
        job.kind in MODEL_KINDS
        and job.status == JobStatus.succeeded
        and policy_of(job, default_policy) == "best"
        and not artifact_store().exists(f"{job_run_key(job)}/{LAST_CHECKPOINT}")
    )


def missing_checkpoint_message(job: Job, choice: str, default_policy: str) -> str:
    """Why a job has no <choice>.pt: its retention removed last.pt, or it is simply not there."""
    if choice == "last" and last_removed(job, default_policy):
        return (
            f"parent: job {job.id} kept best.pt only (retention best), so nothing can resume or start from "
            "its last checkpoint; use checkpoint_choice best"
        )
    return absent_checkpoint_message(job, choice)


def absent_checkpoint_message(job: Job, choice: str) -> str:
    """A job's <choice>.pt is not in the store. What a child's worker or an ensemble meets: a checkpoint that a
    queued or running child reads is never removed (needed_by_children), so retention is not the reason."""
    where = "on disk" if artifact_store().local_root is not None else "in the artifact store"
    return f"parent: job {job.id} has no {choice}.pt checkpoint {where}"


@dataclass
class RetentionOutcome:
    """What applying a policy did to one run folder."""

    policy: str
    removed: list[str] = field(default_factory=list)
    kept_for_children: list[str] = field(default_factory=list)
    freed_bytes: int = 0
    disk_bytes: int = 0


def after_job(session: Session, job_id: int, default_policy: str) -> RetentionOutcome:
    """Apply the job's policy (its own, else default_policy) to its finished run folder in the artifact store,
    drop the artifact rows of removed files, and record the folder's size (jobs.disk_bytes)."""
    job = session.get(Job, job_id, populate_existing=True)
    if job is None:
        raise ValueError(f"after_job: job {job_id} not found")
    policy = policy_of(job, default_policy)
    outcome = RetentionOutcome(policy)
    store, prefix = artifact_store(), job_run_key(job)
    if job.kind in MODEL_KINDS and job.finished:
        stored = store.list(prefix)
        names = {item.key.rsplit("/", 1)[-1] for item in stored}
        doomed: list[StoredObject] = []
        if policy == "best" and job.status == JobStatus.succeeded and BEST_CHECKPOINT in names:
            doomed = [item for item in stored if item.key == f"{prefix}/{LAST_CHECKPOINT}"]
            doomed += stored_epoch_checkpoints(stored)
        elif (keep := epochs_kept(policy)) is not None:
            doomed = stored_epoch_checkpoints(stored)[:-keep]
        needed = needed_by_children(session, job.id)
        for item in doomed:
            name = item.key.rsplit("/", 1)[-1]
            if name in needed:
                outcome.kept_for_children.append(name)
            else:
                outcome.freed_bytes += store.delete(item.key)
                outcome.removed.append(name)
        _forget_missing_checkpoints(session, job.id)
    outcome.disk_bytes = measure(session, job)
    return outcome


def _forget_missing_checkpoints(session: Session, job_id: int) -> None:
    """Artifact rows of checkpoints the store no longer holds (removed now, or pruned during a resumed run)."""
    store = artifact_store()
    rows = session.scalars(select(Artifact).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint"))
    gone = [artifact.id for artifact in rows if not store.exists(artifact.path)]
    if gone:
        session.execute(delete(Artifact).where(Artifact.id.in_(gone)))
