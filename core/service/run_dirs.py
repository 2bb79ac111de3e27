"""Where a job's run folder is: ARTIFACTS_DIR/jobs/<id>-<run_key> (core.engine.run_folder says why
the run key is in the name, and stamps and resolves the folder), or ARTIFACTS_DIR/jobs/<id> for a
job run before run keys (jobs.legacy_run_dir, set by migration 0007 from where its files were recorded)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from core.service.settings import get_settings


class RunFolderOwner(Protocol):
    """A job row, or the worker's plain copy of one: what names its run folder."""

    id: int
    run_key: str
    legacy_run_dir: bool


def job_run_dir(job: RunFolderOwner) -> Path:
    """The run folder of a job: ARTIFACTS_DIR/jobs/<id>-<run_key>, or jobs/<id> for a legacy job."""
    name = str(job.id) if job.legacy_run_dir else f"{job.id}-{job.run_key}"
    return get_settings().resolved_artifacts_dir / "jobs" / name
