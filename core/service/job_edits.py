"""Editing a job's or a sweep's options after submit: notes, tags, priority, retention.

One function per target for the API (PATCH), the CLI (`leukemia edit`) and the dashboard's edit
forms: the owner or an admin may edit (core.service.access), the change is a JobOptionsEdit (a field left
out stays), and the audit row naming the changed fields is written in the same transaction. The target's
row is locked for the edit, so edits of one job or sweep at once apply one after the other (the same tag
added twice at once is added once, the second edit changing nothing).
A sweep's priority is also its still-queued jobs' (the queue orders jobs, not sweeps); its notes
and tags stay on the sweep."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.common.errors import NotFound
from core.common.formats import human_bytes
from core.service import audit, jobs, retention
from core.service.access import Actor, require_owner
from core.service.job_options import JobOptionsEdit
from core.service.records import PRIORITIES, Job, JobStatus, Sweep
from core.service.settings import Settings

AUDIT_NOTES_CHARS = 200  # the audit row keeps the start of long notes, not all 10 000 characters


def edit_job(session: Session, actor: Actor, job_id: int, changes: JobOptionsEdit, settings: Settings) -> dict[str, Any]:
    """Apply a partial change to a job's options; returns the changed fields (name → new value); settings: the
    edge's (web app's, CLI's), whose RETENTION a job without its own policy follows.

    A new retention on a finished job applies now, through the worker's own step (retention.after_job):
    the files it no longer keeps are removed, the job's disk bytes measured again, and what was removed
    goes into the returned change and the audit row ("retention_applied"). A running or queued job's
    new policy applies when it ends, as before."""
    job = jobs.get_job(session, job_id, lock=True)  # edits of one job one after another: each sees the last's tags
    require_owner(actor, job.submitted_by, f"job {job_id}")
    changed = _apply(session, job, changes)
    if "retention" in changed and job.finished:
        outcome = retention.after_job(session, job_id, settings.retention)
        changed["retention_applied"] = {
            "removed": outcome.removed,
            "kept_for_children": outcome.kept_for_children,
            "freed_bytes": outcome.freed_bytes,
            "disk_bytes": outcome.disk_bytes,
        }
    if changed:
        audit.record(session, actor, "job.edit", "job", job_id, _audit_detail(changed))
    return changed


def edit_sweep(session: Session, actor: Actor, sweep_id: int, changes: JobOptionsEdit) -> dict[str, Any]:
    """Apply a partial change to a sweep's options; a new priority also goes to its still-queued jobs."""
    sweep = get_sweep(session, sweep_id, lock=True)
    require_owner(actor, sweep.submitted_by, f"sweep {sweep_id}")
    changed = _apply(session, sweep, changes)
    if "priority" in changed:
        queued = list(
            session.scalars(select(Job.id).where(Job.sweep_id == sweep_id, Job.status == JobStatus.queued).order_by(Job.id))
        )
        session.execute(
            update(Job)
            .where(Job.id.in_(queued), Job.status == JobStatus.queued)
            .values(priority=PRIORITIES[changed["priority"]])
            .execution_options(synchronize_session=False)
        )
        changed["queued_jobs"] = queued
    if "retention" in changed:  # stored on the sweep row; each job kept the policy it was submitted with
        changed["retention_applied"] = {"sweep_only": True}
    if changed:
        audit.record(session, actor, "sweep.edit", "sweep", sweep_id, _audit_detail(changed))
    return changed


def get_sweep(session: Session, sweep_id: int, *, lock: bool = False) -> Sweep:
    """The sweep, or NotFound naming the id; lock: its row locked (FOR UPDATE) until the transaction ends."""
    sweep = (
        session.get(Sweep, sweep_id, populate_existing=True, with_for_update=lock or None)
        if 1 <= sweep_id <= jobs.MAX_ID
        else None
    )
    if sweep is None:
        raise NotFound(f"sweep {sweep_id} not found")
    return sweep


def _apply(session: Session, target: Job | Sweep, changes: JobOptionsEdit) -> dict[str, Any]:
    before = jobs.options_of(session, target)
    after = changes.applied_to(before)
    changed = {name: value for name, value in after.model_dump().items() if getattr(before, name) != value}
    if changed:
        jobs.apply_options(session, target, after)
    return changed


def _audit_detail(changed: dict[str, Any]) -> dict[str, Any]:
    detail = dict(changed)
    if "description" in detail:
        notes = detail["description"]
        detail["description"] = notes if len(notes) <= AUDIT_NOTES_CHARS else notes[:AUDIT_NOTES_CHARS] + "…"
    return {"changed": detail}


def describe_changes(what: str, changed: dict[str, Any]) -> str:
    """One line for the CLI and the dashboard's flash: "job 7 edited: priority high, tags a, b"."""
    shown = {name: value for name, value in changed.items() if name not in ("queued_jobs", "retention_applied")}
    if not shown:
        return f"{what}: nothing changed"
    parts = []
    for name, value in shown.items():
        if name == "tags":
            parts.append("tags " + (", ".join(value) or "(none)"))
        elif name == "description":
            parts.append("notes " + ("changed" if value else "cleared"))
        elif name == "retention":
            parts.append(f"retention {value or 'global policy'} ({_retention_effect(changed.get('retention_applied'))})")
        else:
            parts.append(f"{name} {value}")
    queued = changed.get("queued_jobs")
    if queued:
        parts.append(f"({len(queued)} queued job(s) now {shown['priority']})")
    return f"{what} edited: " + ", ".join(parts)


def _retention_effect(applied: dict[str, Any] | None) -> str:
    """When a retention edit takes effect, and on a finished job what it did to the run folder."""
    if applied is None:
        return "applies when the job ends"
    if applied.get("sweep_only"):
        return "the sweep's own setting: its jobs keep theirs; edit a job to change its retention"
    if not applied["removed"]:
        done = "applied now: nothing to remove"
    else:
        done = f"applied now: removed {', '.join(applied['removed'])}, {human_bytes(applied['freed_bytes'])} freed"
    if applied["kept_for_children"]:
        done += f"; kept {', '.join(applied['kept_for_children'])} for a queued or running child job"
    return done
