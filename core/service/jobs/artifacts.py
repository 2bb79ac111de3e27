"""A job's recorded files: artifact rows (key, size, sha256), reading what an artifact names from the
artifact store (core.service.run_folders.artifact_store), and the checkpoint of a job (a parent's, a
fold's) through the one resolver core.engine.run_folder.resolver.

An artifact row's `path` is the file's key in the store (`jobs/12-<run key>/best.pt`). A row names only
what the store holds: a worker stores a file before it records it. A file the rows name but the store
lacks is `MissingArtifact` (409, one line naming the job and the file), never a silent None."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common.cache_folder import max_bytes_of
from core.common.errors import NotFound, StateConflict, UserInputError
from core.engine.run_folder.artifact_store import fetch_verified, sha256_of, valid_key
from core.engine.run_folder.layout import ARTIFACT_KINDS
from core.engine.run_folder.resolver import checkpoint_names, resolve_checkpoint
from core.service import retention
from core.service.jobs.lease import _upsert
from core.service.jobs.queries import artifacts, get_job
from core.service.records import MAX_ID, Artifact, Job, utcnow
from core.service.run_folders import artifact_store, job_run_folder, job_run_key, local_root
from core.service.settings import get_settings


class MissingArtifact(StateConflict):
    """A file a job's rows name that the artifact store does not hold (removed by hand, a store that lost it)."""

    def __init__(self, artifact: Artifact) -> None:
        super().__init__(
            f"job {artifact.job_id}: its {artifact.name} is recorded but missing from the artifact store ({artifact.path})"
        )
        self.job_id, self.name = artifact.job_id, artifact.name


def record_artifact(session: Session, job_id: int, kind: str, key: str, size: int, sha256: str) -> None:
    """Record (or refresh) a stored file of the job: its key, size and sha256."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind {kind!r} is not one of {ARTIFACT_KINDS}")
    values = {
        "job_id": job_id,
        "kind": kind,
        "name": key.rsplit("/", 1)[-1],
        "path": key,
        "size_bytes": size,
        "sha256": sha256,
        "created_at": utcnow(),
    }
    _upsert(session, Artifact, values, ["job_id", "name"])


def add_artifact(session: Session, job_id: int, kind: str, path: Path) -> None:
    """Record a file of a local run folder (below core.service.run_folders.local_root) under its key, with its
    size and sha256: for a folder store the stored file itself; for an s3:// store the caller has stored it
    under that key first."""
    root = local_root().resolve()
    path = Path(path).resolve()
    key = path.relative_to(root).as_posix()  # ValueError for a file outside: a bug, never user input
    record_artifact(session, job_id, kind, key, path.stat().st_size, sha256_of(path))


def recorded_key(artifact: Artifact) -> str | None:
    """The artifact's key, or None for a recorded path that is no key (absolute, or climbing out with ..)."""
    return artifact.path if valid_key(artifact.path) else None


def open_recorded(artifact: Artifact) -> IO[bytes]:
    """The stored file of a recorded artifact, for streaming reads (the caller closes it); MissingArtifact
    when the store lacks it."""
    key = recorded_key(artifact)
    if key is None:  # a row naming no key (absolute, or climbing out with ..): nothing of the store's
        raise NotFound(f"job {artifact.job_id}: its {artifact.name} is recorded at a path outside the artifact store")
    try:
        return artifact_store().open(key)
    except FileNotFoundError:
        raise MissingArtifact(artifact) from None


def read_recorded(artifact: Artifact) -> bytes:
    """A recorded artifact's content (a results JSON, a CSV, a zip); MissingArtifact when the store lacks it."""
    with open_recorded(artifact) as stream:
        return stream.read()


def _cached_copy(key: str, sha256: str, holds: ExitStack | None) -> Path:
    """The stored file `key` in this node's cache, checked against sha256; held in holds while the caller reads it."""
    settings = get_settings()
    held = fetch_verified(artifact_store(), key, sha256, settings.resolved_cache_dir, max_bytes_of(settings.cache_max_gb))
    if holds is not None:
        holds.enter_context(held)
    else:
        held.close()
    return held.path


def recorded_file(artifact: Artifact | None) -> Path | None:
    """The one answer to "where on this node is this recorded artifact": for a folder store its file, only if
    the recorded path lies inside the folder and the file exists; for an s3:// store the copy in this node's
    cache, checked against its sha256. None for no row, or a file the store lacks."""
    if artifact is None or (key := recorded_key(artifact)) is None:
        return None
    store = artifact_store()
    if store.local_root is not None:
        root = store.local_root.resolve()
        path = (root / key).resolve()
        return path if path.is_relative_to(root) and path.is_file() else None
    try:
        return _cached_copy(key, artifact.sha256, None)
    except FileNotFoundError:
        return None


def named_artifact(session: Session, job_id: int, name: str) -> Artifact | None:
    """The job's artifact of that name (evaluation.json, oof.csv...), or None when it recorded none."""
    return session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name))


def named_artifact_file(session: Session, job_id: int, name: str) -> Path | None:
    """The file on this node of a job's artifact of that name (recorded_file), or None."""
    return recorded_file(named_artifact(session, job_id, name))


def artifact_path(session: Session, job_id: int, name: str | None = None) -> tuple[Artifact, Path]:
    """A recorded artifact of a job and its file on this node (default: its best checkpoint, else its only file)."""
    recorded = artifacts(session, get_job(session, job_id).id)
    if not recorded:
        raise UserInputError(f"job {job_id} has no recorded artifacts")
    if name is None:
        by_name = {a.name: a for a in recorded}
        preferred = [by_name[n] for n in checkpoint_names("best") if n in by_name]
        chosen = preferred[0] if preferred else (recorded[0] if len(recorded) == 1 else None)
        if chosen is None:
            raise UserInputError(f"artifact: job {job_id} has several; name one of {', '.join(by_name)}", field="artifact")
    else:
        chosen = next((a for a in recorded if a.name == name), None)
        if chosen is None:
            raise UserInputError(
                f"artifact: job {job_id} has no artifact {name!r}; it has {', '.join(a.name for a in recorded)}", field="artifact"
            )
    path = recorded_file(chosen)
    if path is None:
        raise UserInputError(
            f"artifact: {chosen.path} is recorded for job {job_id} but missing from the artifact store", field="artifact"
        )
    return chosen, path


def _checkpoint_job(session: Session, job_id: int) -> Job:
    job = session.get(Job, job_id) if 1 <= job_id <= MAX_ID else None
    if job is None:
        raise UserInputError(f"parent: job {job_id} not found", field="parent_id")
    return job


def _stored_checkpoint(session: Session, job: Job, choice: str) -> Artifact:
    """The artifact row of a job's <choice>.pt in an s3:// store, present in the store; else the parent's one line."""
    key = f"{job_run_key(job)}/{checkpoint_names(choice)[0]}"
    row = session.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.path == key))
    if row is None or not artifact_store().exists(key):
        raise UserInputError(retention.absent_checkpoint_message(job, choice), field="parent_id")
    return row


def checkpoint_location(session: Session, job_id: int, choice: str = "best") -> str:
    """Where a job's best.pt or last.pt is, as a job's `checkpoint` parameter names it (a cross-validation's
    ensemble): its path in a folder store, its s3:// URL in an object store; checked present."""
    job = _checkpoint_job(session, job_id)
    store = artifact_store()
    if store.local_root is not None:
        return str(job_checkpoint(session, job_id, choice))
    return store.location(_stored_checkpoint(session, job, choice).path)


def job_checkpoint(session: Session, job_id: int, choice: str = "best", *, holds: ExitStack | None = None) -> Path:
    """A job's best.pt or last.pt (a parent's model, a cross-validation fold's) as a file on this node: in its
    run folder (a folder store), or fetched into this node's cache and checked against its recorded sha256
    (an s3:// store; held in `holds` while the caller reads it)."""
    job = _checkpoint_job(session, job_id)
    if artifact_store().local_root is not None:
        try:
            return resolve_checkpoint(job_run_folder(job), choice)
        except UserInputError:
            raise UserInputError(retention.absent_checkpoint_message(job, choice), field="parent_id") from None
    row = _stored_checkpoint(session, job, choice)
    try:
        return _cached_copy(row.path, row.sha256, holds)
    except FileNotFoundError:  # removed between the look and the fetch
        raise UserInputError(retention.absent_checkpoint_message(job, choice), field="parent_id") from None


def local_checkpoint(session: Session, location: str, choice: str, holds: ExitStack) -> str:
    """A `checkpoint` parameter as a file on this node: an s3:// URL of this store (a recorded checkpoint,
    or a run folder's <choice>.pt) fetched into this node's cache and checked; a path, as it is."""
    store = artifact_store()
    key = store.key_of(location) if store.local_root is None else None
    if key is None:
        return location
    keys = [key, f"{key}/{checkpoint_names(choice)[0]}"]
    rows = {row.path: row for row in session.scalars(select(Artifact).where(Artifact.path.in_(keys)))}
    row = next((rows[candidate] for candidate in keys if candidate in rows), None)
    if row is None:
        raise UserInputError(f"checkpoint: {location} is not a recorded checkpoint of the artifact store", field="checkpoint")
    try:
        return str(_cached_copy(row.path, row.sha256, holds))
    except FileNotFoundError:
        raise MissingArtifact(row) from None


def get_artifact(session: Session, job_id: int, artifact_id: int) -> Artifact:
    """A recorded artifact of that job, or NotFound naming both ids."""
    artifact = session.get(Artifact, artifact_id) if 1 <= artifact_id <= MAX_ID else None
    if artifact is None or artifact.job_id != job_id:
        raise NotFound(f"artifact {artifact_id} of job {job_id} not found")
    return artifact
