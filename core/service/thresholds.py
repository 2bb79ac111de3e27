"""Who may write an operating threshold, chosen by an evaluate or predict job, into the checkpoint of the
model it scored, and the record of that write.

A checkpoint is its job's artifact: only the model's owner (who submitted its job) or an admin may change
it. The worker asks `may_record_threshold` before the run; a job that may gets a writer for the engine
(core.engine.report.resolve_threshold's write_threshold) that calls `record_audited`, and one that may
not still uses the threshold it chose and keeps it in its own results.

`record_audited` writes the audit row, the checkpoint and the refreshed artifact rows (size, sha256) in
one transaction, at the moment the threshold is chosen: a run that fails later (the test split, the
heat maps) leaves no unaudited change, and a checkpoint that cannot be written leaves no audit row."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from core.engine.report import record_threshold
from core.service import audit
from core.service.access import Actor, PermissionDenied, cli_actor, require_owner
from core.service.jobs import add_artifact, artifacts, get_job
from core.service.records import Job, User
from core.service.settings import get_settings

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
    file is written (core.engine.report.record_threshold, atomically), then the parent's checkpoint
    artifacts get their new size and sha256."""
    job = get_job(session, job_id)
    detail = {"checkpoint": str(checkpoint), "value": threshold["value"], "method": threshold["method"],
              "target_sensitivity": threshold["target_sensitivity"], "chosen_by_job": job_id}
    audit.record(session, submitter(session, job), AUDIT_ACTION, "job", job.parent_id, detail)
    session.flush()  # the row is in before the file changes: a failed insert changes nothing
    record_threshold(checkpoint, threshold)
    if job.parent_id is not None:
        root = get_settings().resolved_artifacts_dir
        for artifact in artifacts(session, job.parent_id):
            if artifact.kind == "checkpoint":
                add_artifact(session, job.parent_id, "checkpoint", root / artifact.path)
