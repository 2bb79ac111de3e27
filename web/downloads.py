"""Sending a recorded artifact's file, for the job page and the JSON API alike."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from flask import send_file

from core.common.errors import NotFound
from core.service import jobs as job_service
from core.service.db import get_sessionmaker

# The media type of each kind of file a job records (worker.tasks.classify_artifacts), by suffix; the OpenAPI
# document lists these. Guessing from the name would call a .pt checkpoint a SNES page table.
ARTIFACT_MEDIA_TYPES = {".csv": "text/csv", ".png": "image/png", ".zip": "application/zip", ".json": "application/json",
                        ".pt": "application/octet-stream"}
OTHER_FILES = "application/octet-stream"


def artifact_media_type(name: str) -> str:
    return ARTIFACT_MEDIA_TYPES.get(PurePath(name).suffix.lower(), OTHER_FILES)


def send_artifact(job_id: int, artifact_id: int) -> Any:
    """Send a recorded artifact's file by id; no path ever comes from the request."""
    with get_sessionmaker().begin() as session:
        artifact = job_service.get_artifact(session, job_id, artifact_id)
        path, name = job_service.recorded_file(artifact), artifact.name
    if path is None:
        raise NotFound(f"artifact {artifact_id}: its file is missing from the artifacts folder")
    return send_file(path, as_attachment=True, download_name=name, mimetype=artifact_media_type(name))
