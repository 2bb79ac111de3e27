"""Sending a recorded artifact's file, for the job page and the JSON API alike: the file itself from a folder
store, a stream from an object store (or, with ARTIFACTS_PRESIGNED_DOWNLOADS, a redirect to a presigned URL
of the object, so the bytes bypass the web host). A file the job recorded but the store lacks is a 409
naming the job and the file (core.service.jobs.MissingArtifact)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from flask import redirect, send_file

from core.common.errors import NotFound
from core.service import jobs as job_service
from core.service.run_folders import artifact_store
from web.db import db
from web.settings import app_settings

# The media type of each kind of file a job records (core.engine.run_folder.layout.classify_artifacts), by suffix; the OpenAPI
# document lists these. Guessing from the name would call a .pt checkpoint a SNES page table.
ARTIFACT_MEDIA_TYPES = {
    ".csv": "text/csv",
    ".png": "image/png",
    ".zip": "application/zip",
    ".json": "application/json",
    ".pt": "application/octet-stream",
}
OTHER_FILES = "application/octet-stream"
PRESIGNED_SECONDS = 300  # a presigned download link works this long: enough to start the download, not to share it


def artifact_media_type(name: str) -> str:
    return ARTIFACT_MEDIA_TYPES.get(PurePath(name).suffix.lower(), OTHER_FILES)


def send_artifact(job_id: int, artifact_id: int) -> Any:
    """Send a recorded artifact's file by id; no path ever comes from the request."""
    artifact = job_service.get_artifact(db(), job_id, artifact_id)
    name, store = artifact.name, artifact_store()
    if job_service.recorded_key(artifact) is None:  # a row naming no key (absolute, or climbing out with ..)
        raise NotFound(f"artifact {artifact_id}: its recorded path lies outside the artifact store")
    if store.local_root is not None:
        path = job_service.recorded_file(artifact)
        if path is None:
            raise job_service.MissingArtifact(artifact)
        return send_file(path, as_attachment=True, download_name=name, mimetype=artifact_media_type(name))
    size = store.size(artifact.path)
    if size is None:
        raise job_service.MissingArtifact(artifact)
    if app_settings().artifacts_presigned_downloads:
        return redirect(store.presigned_url(artifact.path, name, PRESIGNED_SECONDS), code=302)
    response = send_file(
        job_service.open_recorded(artifact), as_attachment=True, download_name=name, mimetype=artifact_media_type(name)
    )
    response.content_length = size  # streamed as it arrives: a 134 MB checkpoint never sits in the web's memory
    return response
