"""Data folders (registered under a data root, with their check report) and the artifacts volume's use."""

from __future__ import annotations

from typing import Any

from core.service import data_folders
from core.service.disk import disk_summary
from web.api import schemas
from web.api.blueprint import answer, bp
from web.auth import current_actor
from web.db import db
from web.inputs import json_body
from web.openapi import operation
from web.settings import app_settings


@operation(bp, "get", "/disk", operation_id="getDiskUse", tag="disk", responses={200: schemas.DiskUse})
def disk_use() -> Any:
    """Disk use: the jobs' run folders in total, and free/total space of the artifacts volume"""
    summary = disk_summary(db())
    volume = summary.volume
    return answer(
        schemas.DiskUse(
            jobs_bytes=summary.jobs_bytes,
            measured_jobs=summary.measured_jobs,
            unmeasured_jobs=summary.unmeasured_jobs,
            store=summary.store_url,
            free_bytes=volume.free_bytes if volume else None,
            total_bytes=volume.total_bytes if volume else None,
            retention=app_settings().retention,
        )
    )


@operation(
    bp,
    "post",
    "/data-folders",
    operation_id="registerDataFolder",
    tag="data folders",
    body=schemas.DataFolderRegistration,
    responses={201: schemas.DataFolder},
    errors=(400, 403, 409, 413),
)
def register_data_folder() -> Any:
    """Register a data folder under a data root (and check it)"""
    registration = json_body(schemas.DataFolderRegistration)
    folder = data_folders.register_data_folder(
        db(), registration.name or "", registration.path, actor=current_actor(), roots=app_settings().data_root_paths
    )
    return answer(schemas.DataFolder.model_validate(folder), 201)


@operation(
    bp, "get", "/data-folders", operation_id="listDataFolders", tag="data folders", responses={200: schemas.DataFolderList}
)
def list_data_folders() -> Any:
    """Registered data folders"""
    folders = [schemas.DataFolder.model_validate(f) for f in data_folders.list_data_folders(db())]
    return answer(schemas.DataFolderList(data_folders=folders))
