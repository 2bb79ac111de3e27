"""Where a job's files are: its run key, the folder `jobs/<id>-<run_key>` in the artifact store
(core.engine.run_folder.resolver says why the run key is in the name, and stamps and resolves the folder), or
`jobs/<id>` for a job run before run keys (jobs.legacy_run_dir, set by migration 0007 from where its
files were recorded); and its local run folder on this node: that folder of the artifacts folder itself
(a folder store, ARTIFACTS_DIR), or of this node's scratch folder (an s3:// store, SCRATCH_DIR), from
which the worker stores the files. Every caller (parent checkpoints, the worker, delete, disk use,
retention, the web's reads) asks this module."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Protocol

from core.engine.run_folder.artifact_store import ArtifactStore, open_store
from core.service.settings import get_settings


class RunFolderOwner(Protocol):
    """A job row, or the worker's plain copy of one: what names its run folder."""

    id: int
    run_key: str
    legacy_run_dir: bool


@lru_cache(maxsize=4)
def _store(url: str, endpoint_url: str) -> ArtifactStore:
    return open_store(url, endpoint_url=endpoint_url)


def artifact_store() -> ArtifactStore:
    """The artifact store the settings name (ARTIFACTS_URL, else the ARTIFACTS_DIR folder); one per process."""
    settings = get_settings()
    return _store(settings.resolved_artifacts_url, settings.artifacts_s3_endpoint_url.strip())


def local_root() -> Path:
    """Where this node writes runs: the artifacts folder of a folder store, else SCRATCH_DIR."""
    return artifact_store().local_root or get_settings().resolved_scratch_dir


def job_run_key(job: RunFolderOwner) -> str:
    """The run folder's key in the store: jobs/<id>-<run_key>, or jobs/<id> for a legacy job."""
    return f"jobs/{job.id}" if job.legacy_run_dir else f"jobs/{job.id}-{job.run_key}"


def job_run_folder(job: RunFolderOwner) -> Path:
    """The job's local run folder on this node (for a folder store: ARTIFACTS_DIR/jobs/<id>-<run_key>)."""
    return local_root() / job_run_key(job)
