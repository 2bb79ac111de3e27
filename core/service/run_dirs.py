"""Where a job's run folder is: ARTIFACTS_DIR/jobs/<id>-<run_key> (core.engine.run_folder says why
the run key is in the name, and stamps and resolves the folder)."""

from __future__ import annotations

from pathlib import Path

from core.service.settings import get_settings


def job_run_dir(job_id: int, run_key: str) -> Path:
    """The run folder of a job row: ARTIFACTS_DIR/jobs/<id>-<run_key>."""
    return get_settings().resolved_artifacts_dir / "jobs" / f"{job_id}-{run_key}"
