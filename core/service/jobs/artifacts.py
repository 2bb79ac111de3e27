"""A job's recorded files: artifact rows (with their SHA-256), the file an artifact names, and the
checkpoint of a job (a parent's, a fold's) through the one resolver core.engine.run_folder."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common.errors import NotFound, UserInputError
from core.engine.run_files import ARTIFACT_KINDS
from core.engine.run_folder import checkpoint_names, resolve_checkpoint
from core.service import retention
from core.service.jobs.lease import _upsert
from core.service.jobs.queries import artifacts, get_job
from core.service.records import MAX_ID, Artifact, Job, utcnow
from core.service.run_dirs import job_run_dir
from core.service.settings import get_settings


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def add_artifact(session: Session, job_id: int, kind: str, path: Path) -> None:
    """Record (or refresh) a file the job produced, with its size and sha256; the path must lie in artifacts_dir."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind {kind!r} is not one of {ARTIFACT_KINDS}")
    root = get_settings().resolved_artifacts_dir.resolve()
    path = Path(path).resolve()
    relative = path.relative_to(root)  # ValueError for a file outside: a bug, never user input
    values = {
        "job_id": job_id,
        "kind": kind,
        "name": path.name,
        "path": relative.as_posix(),
        "size_bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "created_at": utcnow(),
    }
    _upsert(session, Artifact, values, ["job_id", "name"])


def recorded_file(artifact: Artifact | None) -> Path | None:
    """The one answer to "where is this recorded artifact": its file, only if the recorded path lies
    inside the artifacts dir and the file exists (a row whose file was removed gives None)."""
    if artifact is None:
        return None
    root = get_settings().resolved_artifacts_dir.resolve()
    relative = PurePosixPath(artifact.path)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def named_artifact_file(session: Session, job_id: int, name: str) -> Path | None:
    """The file of a job's artifact of that name (evaluation.json, oof.csv...), or None."""
    return recorded_file(session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)))


def artifact_path(session: Session, job_id: int, name: str | None = None) -> tuple[Artifact, Path]:
    """A recorded artifact of a job and its absolute path (default: its best checkpoint, else its only file)."""
    recorded = artifacts(session, get_job(session, job_id).id)
    if not recorded:
        raise UserInputError(f"job {job_id} has no recorded artifacts")
    if name is None:
        by_name = {a.name: a for a in recorded}
        preferred = [by_name[n] for n in checkpoint_names("best") if n in by_name]
        chosen = preferred[0] if preferred else (recorded[0] if len(recorded) == 1 else None)
        if chosen is None:
            raise UserInputError(
                f"artifact: job {job_id} has several; name one of {', '.join(by_name)}", field="artifact"
            )
    else:
        chosen = next((a for a in recorded if a.name == name), None)
        if chosen is None:
            raise UserInputError(
                f"artifact: job {job_id} has no artifact {name!r}; it has {', '.join(a.name for a in recorded)}", field="artifact"
            )
    path = recorded_file(chosen)
    if path is None:
        raise UserInputError(
            f"artifact: {chosen.path} is recorded for job {job_id} but missing on disk", field="artifact"
        )
    return chosen, path


def job_checkpoint(session: Session, job_id: int, choice: str = "best") -> Path:
    """A job's best.pt or last.pt (a parent's model, a cross-validation fold's), resolved in its run folder."""
    job = session.get(Job, job_id) if 1 <= job_id <= MAX_ID else None
    if job is None:
        raise UserInputError(f"parent: job {job_id} not found", field="parent_id")
    try:
        return resolve_checkpoint(job_run_dir(job), choice)
    except UserInputError:
        raise UserInputError(retention.missing_checkpoint_message(job, choice), field="parent_id") from None


def get_artifact(session: Session, job_id: int, artifact_id: int) -> Artifact:
    """A recorded artifact of that job, or NotFound naming both ids."""
    artifact = session.get(Artifact, artifact_id) if 1 <= artifact_id <= MAX_ID else None
    if artifact is None or artifact.job_id != job_id:
        raise NotFound(f"artifact {artifact_id} of job {job_id} not found")
    return artifact
