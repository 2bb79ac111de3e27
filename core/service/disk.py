"""Disk use of run folders: measure one, remove files from one (counting the bytes actually
removed), the jobs' recorded total, and the artifacts volume's free and total space. No torch here.

Every removal stays inside the artifacts dir and never follows a symbolic link: a link found in a
run folder is removed as a link, what it points to is left alone."""

from __future__ import annotations

import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.service.records import FINISHED_STATUSES, Job
from core.service.run_dirs import job_run_dir
from core.service.settings import get_settings


@dataclass(frozen=True)
class VolumeUsage:
    """The artifacts volume: its free and total bytes (shutil.disk_usage)."""

    path: Path
    free_bytes: int
    total_bytes: int


def artifacts_root() -> Path:
    return get_settings().resolved_artifacts_dir


def inside_artifacts(path: Path) -> bool:
    """Is path (its folder resolved, the last name itself not followed) inside the artifacts dir?"""
    root = artifacts_root().resolve()
    try:
        candidate = Path(path).parent.resolve() / Path(path).name
    except OSError:
        return False
    return candidate != root and candidate.is_relative_to(root)


def folder_bytes(folder: Path) -> int:
    """The bytes of the regular files under folder, links not followed (0 for a missing folder)."""
    total = 0
    if not Path(folder).is_dir() or Path(folder).is_symlink():
        return 0
    for top, _dirs, files in os.walk(folder, followlinks=False):
        for name in files:
            try:
                info = os.lstat(os.path.join(top, name))
            except FileNotFoundError:  # removed meanwhile
                continue
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
    return total


def remove_file(path: Path) -> int:
    """Remove one file (or link) inside the artifacts dir; the bytes it held (0 for a link or a missing file)."""
    path = Path(path)
    if not inside_artifacts(path):
        raise ValueError(f"remove_file: {path} is outside the artifacts dir")  # a bug, never user input
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"remove_file: {path} is a folder")
    path.unlink(missing_ok=True)
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def remove_folder(folder: Path) -> int:
    """Remove a folder inside the artifacts dir and everything under it, links not followed (a link
    named folder is removed as a link); the bytes of the regular files removed."""
    folder = Path(folder)
    if not inside_artifacts(folder):
        raise ValueError(f"remove_folder: {folder} is outside the artifacts dir")  # a bug, never user input
    if folder.is_symlink():
        folder.unlink()
        return 0
    if not folder.is_dir():
        return 0
    freed = 0
    for top, dirs, files in os.walk(folder, topdown=False, followlinks=False):
        for name in files:
            freed += remove_file(Path(top) / name)
        for name in dirs:
            entry = Path(top) / name
            if entry.is_symlink():  # os.walk lists a link to a folder among dirs, and does not enter it
                entry.unlink()
            else:
                entry.rmdir()
    folder.rmdir()
    return freed


def volume_usage() -> VolumeUsage:
    """Free and total space of the volume holding the artifacts dir (its nearest existing folder)."""
    path = artifacts_root()
    probe = path
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    return VolumeUsage(path=path, free_bytes=usage.free, total_bytes=usage.total)


@dataclass(frozen=True)
class DiskSummary:
    """The jobs' run folders as last measured (jobs.disk_bytes) and the artifacts volume."""

    jobs_bytes: int
    measured_jobs: int
    unmeasured_jobs: int  # queued or running
    volume: VolumeUsage


def measure(session: Session, job: Job) -> int:
    """Record and return the size of a job's run folder (jobs.disk_bytes)."""
    job.disk_bytes = folder_bytes(job_run_dir(job))
    session.flush()
    return job.disk_bytes


def disk_summary(session: Session) -> DiskSummary:
    """Total of jobs.disk_bytes, how many jobs have one, and the volume's free/total space.

    A finished job without a size ended before sizes were recorded (an upgraded database's older
    jobs): its run folder is measured now, once, so the total counts it."""
    for job in session.scalars(select(Job).where(Job.disk_bytes.is_(None), Job.status.in_(FINISHED_STATUSES))):
        measure(session, job)
    total, measured, jobs = session.execute(
        select(func.coalesce(func.sum(Job.disk_bytes), 0), func.count(Job.disk_bytes), func.count(Job.id))).one()
    return DiskSummary(int(total), int(measured), int(jobs) - int(measured), volume_usage())
