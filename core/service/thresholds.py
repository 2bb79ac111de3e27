"""Who may write an operating threshold, chosen by an evaluate or predict job, into the checkpoint of the
model it scored, and the record of that write.

A checkpoint is its job's artifact: only the model's owner (who submitted its job) or an admin may change
it. The worker asks `may_record_threshold` before the run and passes the answer to the engine
(core.report.resolve_threshold's record_in_checkpoint); a job that may not still uses the threshold it
chose and keeps it in its own results. After a write, `threshold_recorded` refreshes the parent's
checkpoint artifacts (size, sha256) and writes the audit row, in one transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

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


def threshold_recorded(session: Session, job_id: int, threshold: dict[str, Any]) -> None:
    """After the engine wrote `threshold` (core.results.Threshold) into the checkpoint it names: the parent's
    checkpoint artifacts get their new size and sha256, and the audit log says who changed which model."""
    job = get_job(session, job_id)
    if job.parent_id is not None:
        root = get_settings().resolved_artifacts_dir
        for artifact in artifacts(session, job.parent_id):
            if artifact.kind == "checkpoint":
                add_artifact(session, job.parent_id, "checkpoint", root / artifact.path)
    detail = {"checkpoint": threshold["recorded_in"], "value": threshold["value"], "method": threshold["method"],
              "target_sensitivity": threshold["target_sensitivity"], "chosen_by_job": job_id}
    audit.record(session, submitter(session, job), AUDIT_ACTION, "job", job.parent_id, detail)
