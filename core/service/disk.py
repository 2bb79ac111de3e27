"""Disk use of run folders, counted in the artifact store: a job's stored files (jobs.disk_bytes), the
jobs' recorded total, and for a folder store the artifacts volume's free and total space (an object
store has no volume to measure). No torch here.

Removals go through the store (core.engine.run_folder.artifact_store): a folder store stays inside its folder and
never follows a symbolic link (a link found in a run folder is removed as a link, what it points to is
left alone)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.engine.run_folder.artifact_store import folder_bytes  # noqa: F401  (re-exported: a run folder's size on disk)
from core.service.records import FINISHED_STATUSES, Job
from core.service.run_folders import artifact_store, job_run_key


@dataclass(frozen=True)
class VolumeUsage:
    """The artifacts volume: its free and total bytes (shutil.disk_usage)."""

    path: Path
    free_bytes: int
    total_bytes: int


def volume_usage() -> VolumeUsage | None:
    """Free and total space of the volume holding a folder store (its nearest existing folder); None for an
    object store, whose space is the provider's."""
    path = artifact_store().local_root
    if path is None:
        return None
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return VolumeUsage(path=path, free_bytes=usage.free, total_bytes=usage.total)


@dataclass(frozen=True)
class DiskSummary:
    """The jobs' stored files as last measured (jobs.disk_bytes), the store, and a folder store's volume."""

    jobs_bytes: int
    measured_jobs: int
    unmeasured_jobs: int  # queued or running
    volume: VolumeUsage | None
    store_url: str


def measure(session: Session, job: Job) -> int:
    """Record and return the bytes the store holds under a job's run key (jobs.disk_bytes)."""
    job.disk_bytes = artifact_store().prefix_bytes(job_run_key(job))
    session.flush()
    return job.disk_bytes


def disk_summary(session: Session) -> DiskSummary:
    """Total of jobs.disk_bytes, how many jobs have one, and the volume's free/total space.

    A finished job without a size ended before sizes were recorded (an upgraded database's older
    jobs): its run folder is measured now, once, so the total counts it."""
    for job in session.scalars(select(Job).where(Job.disk_bytes.is_(None), Job.status.in_(FINISHED_STATUSES))):
        measure(session, job)
    total, measured, jobs = session.execute(
        select(func.coalesce(func.sum(Job.disk_bytes), 0), func.count(Job.disk_bytes), func.count(Job.id))
    ).one()
    return DiskSummary(int(total), int(measured), int(jobs) - int(measured), volume_usage(), artifact_store().url)
