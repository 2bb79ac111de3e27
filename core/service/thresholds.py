"""Who may write an operating threshold, chosen by an evaluate or predict job, into the checkpoint of the
model it scored, and the record of that write.

A checkpoint is its job's artifact: only the model's owner (who submitted its job) or an admin may change
it. The worker asks `may_record_threshold` before the run; a job that may gets a writer for the engine
(core.engine.evaluation.threshold.resolve_threshold's write_threshold) that calls `record_audited`, and one that may
not still uses the threshold it chose and keeps it in its own results.

`record_audited` writes the audit row, the checkpoint and the refreshed artifact rows (size, sha256) in
one transaction, at the moment the threshold is chosen: a run that fails later (the test split, the
heat maps) leaves no unaudited change, and a checkpoint that cannot be written leaves no audit row. With
an s3:// store the job read a copy from its node's cache (named by the stored file's sha256, so never
changed in place): the threshold goes into a fresh copy, which is stored under the checkpoint's key."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.engine.evaluation.threshold import record_threshold
from core.engine.run_folder.artifact_store import sha256_of
from core.service import audit
from core.service.access import Actor, PermissionDenied, cli_actor, require_owner
from core.service.jobs import add_artifact, artifacts, get_job
from core.service.jobs.artifacts import record_artifact
from core.service.records import Artifact, Job, User
from core.service.run_folders import artifact_store, local_root

AUDIT_ACTION = "job.threshold"  # target: the job whose checkpoint now records a threshold


def submitter(session: Session, job: Job) -> Actor:
    """Who a queued job acts as: its submitter with their role now; a job submitted from the command
    line acts as the CLI, an admin."""
    if job.submitted_by is None:
        return cli_actor()
    user = session.get(User, job.submitted_by)
    return Actor(user.id, user.username, "viewer" if user.disabled else user.role)  # disabled: may change nothing


def may_record_threshold(session: Session, job_id: int) -> bool:
    """May this evaluate or predict job write a threshold it chooses into its model's checkpoint? Only
    when its submitter owns the parent job (or a checkpoint path given at the command line) or is an admin."""
    job = get_job(session, job_id)
    owner = session.get(Job, job.parent_id).submitted_by if job.parent_id is not None else None
    try:
        require_owner(submitter(session, job), owner, f"job {job.parent_id}")
    except PermissionDenied:
        return False
    return True


def record_audited(session: Session, job_id: int, checkpoint: Path, threshold: dict[str, Any]) -> None:
    """Write `threshold` ({value, method, target_sensitivity, chosen_on}) into the checkpoint of this
    job's model, in the caller's transaction: the audit row says who changed which model, then the
    file is written (core.engine.evaluation.threshold.record_threshold, atomically), then the parent's checkpoint
    artifacts get their new size and sha256."""
    job = get_job(session, job_id)
    stored = _stored_copy_of(session, job, checkpoint)
    where = artifact_store().location(stored.path) if stored is not None else str(checkpoint)
    detail = {
        "checkpoint": where,
        "value": threshold["value"],
        "method": threshold["method"],
        "target_sensitivity": threshold["target_sensitivity"],
        "chosen_by_job": job_id,
    }
    audit.record(session, submitter(session, job), AUDIT_ACTION, "job", job.parent_id, detail)
    session.flush()  # the row is in before the file changes: a failed insert changes nothing
    if stored is not None:
        _store_with_threshold(session, stored, checkpoint, threshold)
        return
    record_threshold(checkpoint, threshold)
    if job.parent_id is not None:
        root = local_root()
        for artifact in artifacts(session, job.parent_id):
            if artifact.kind == "checkpoint":
                add_artifact(session, job.parent_id, "checkpoint", root / artifact.path)


def _stored_copy_of(session: Session, job: Job, checkpoint: Path) -> Artifact | None:
    """With an s3:// store, the recorded checkpoint (the parent's, else any job's) that this cached copy is; else None."""
    if artifact_store().local_root is not None:
        return None
    query = select(Artifact).where(Artifact.kind == "checkpoint", Artifact.sha256 == sha256_of(checkpoint))
    if job.parent_id is not None:
        query = query.where(Artifact.job_id == job.parent_id)
    return session.scalars(query.order_by(Artifact.id)).first()


def _store_with_threshold(session: Session, stored: Artifact, cached: Path, threshold: dict[str, Any]) -> None:
    """Write the threshold into a copy of the cached checkpoint, store it under its key, record its new hash."""
    scratch = local_root()  # an s3:// store's: this node's SCRATCH_DIR
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix=".threshold-") as folder:
        edited = Path(folder) / stored.name
        shutil.copyfile(cached, edited)
        record_threshold(edited, threshold)
        artifact_store().put(stored.path, edited, waited_for=True)
        record_artifact(session, stored.job_id, "checkpoint", stored.path, edited.stat().st_size, sha256_of(edited))
