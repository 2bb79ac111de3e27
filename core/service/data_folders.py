"""Data folders: a folder of images registered by path, which must lie under a data root (the DATA_ROOTS of
the settings the caller was given) both as written and after symlinks, with core.engine.data.check's report on it. Registering
is a member's or admin's write (core.service.access), audited in the caller's transaction.

`path_under_roots` / `folder_under_roots` hold a typed path, or a file the web reads from a folder (a
thumbnail), under a data root; the API, the data-folders page and the results' folder lookup call this
module (`register_data_folder`, `list_data_folders`, `registered_folder_by_path`)."""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.common.errors import StateConflict, UserInputError
from core.common.text import check_printable
from core.engine.data.data_roots import inside_roots, require_inside_data_roots
from core.service import audit
from core.service.access import Actor, require_submit
from core.service.db import unique_or_conflict
from core.service.records import MAX_ID, DataFolder, utcnow


def list_data_folders(session: Session) -> list[DataFolder]:
    return list(session.scalars(select(DataFolder).order_by(DataFolder.name)))


def find_data_folder(session: Session, folder_id: int) -> DataFolder | None:
    return session.get(DataFolder, folder_id) if 1 <= folder_id <= MAX_ID else None


def registered_folder_by_path(session: Session, path: str) -> DataFolder | None:
    return session.scalar(select(DataFolder).where(DataFolder.path == path))


def folder_under_roots(raw: str, roots: list[Path]) -> Path:
    """The real folder a typed path names, if it lies under a data root both as written and after symlinks."""
    return path_under_roots(raw, roots, folder=True)


def path_under_roots(raw: str, roots: list[Path], *, folder: bool) -> Path:
    """The real path of an existing folder (folder) or file, if it lies under a data root both as written and
    after symlinks; else one line naming the field path. Registration asks it of the folder typed, the web of
    each file it reads from a folder (a thumbnail), so a link placed after registration leads nowhere."""
    text = check_printable(raw.strip(), "path")
    if not text:
        raise UserInputError("path: give the absolute path of a data folder", field="path")
    written = Path(text).expanduser()
    if not written.is_absolute():
        raise UserInputError(f"path: {text!r} is not absolute", field="path")
    lexical = Path(os.path.normpath(written))
    allowed = ", ".join(str(root) for root in roots)
    if not inside_roots(lexical, roots):
        raise UserInputError(f"path: {lexical} is not under a data root ({allowed})", field="path")
    try:
        resolved = lexical.resolve()
    except (OSError, RuntimeError) as error:  # a symlink loop (RuntimeError before Python 3.13)
        raise UserInputError(f"path: {lexical} cannot be resolved: {_reason(error)}", field="path") from None
    if not inside_roots(resolved, roots):
        raise UserInputError(
            f"path: {lexical} leads (through a symlink) to {resolved}, outside the data roots ({allowed})", field="path"
        )
    try:
        exists = resolved.is_dir() if folder else resolved.is_file()
    except OSError as error:  # a component over 255 bytes
        raise UserInputError(f"path: {lexical} cannot be read: {_reason(error)}", field="path") from None
    if not exists:
        raise UserInputError(f"path: {lexical} is not an existing {'folder' if folder else 'file'}", field="path")
    return resolved


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or "symlink loop"


def _report_dict(report: Any) -> dict[str, Any]:
    """A check report as JSON-safe data, whatever its class (pydantic model, dataclass or dict)."""
    if hasattr(report, "to_dict"):
        return _json_safe(report.to_dict())
    if hasattr(report, "model_dump"):
        return report.model_dump(mode="json")
    if is_dataclass(report):
        return _json_safe(asdict(report))
    return _json_safe(dict(report))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def check_report(path: Path) -> dict[str, Any]:
    """core.engine.data.check's report on a folder; a folder the check refuses is recorded with that one line."""
    from core.engine.data.check import check_folder

    try:
        return _report_dict(check_folder(path))
    except UserInputError as error:
        return {"ok": False, "error": str(error)}


def register_data_folder(session: Session, name: str, path: str, *, actor: Actor, roots: list[Path]) -> DataFolder:
    """Record a data folder (under one of `roots`, the caller's DATA_ROOTS) with its check report; a known path
    is re-checked. Members and admins register (core.service.access); the registration is audited."""
    require_submit(actor)
    folder_path = folder_under_roots(path, roots)
    # Before the check reads a byte: it decodes every image, and a link out of the roots is any file at all.
    require_inside_data_roots(folder_path, roots, field="path")
    name = check_printable((name or folder_path.name).strip(), "name")
    if not 1 <= len(name) <= 200:
        raise UserInputError("name: give a name of 1 to 200 characters", field="name")
    report = check_report(folder_path)
    existing = registered_folder_by_path(session, str(folder_path))
    clash = session.scalar(select(DataFolder).where(DataFolder.name == name))
    taken = f"name: a data folder named {name!r} is already registered"
    if clash is not None and clash is not existing:
        raise StateConflict(taken, field="name")
    folder = existing or DataFolder(path=str(folder_path))
    with unique_or_conflict(session, taken, field="name"):  # registered by another request since the check
        folder.name, folder.report, folder.registered_at = name, report, utcnow()
        session.add(folder)
    audit.record(session, actor, "data_folder.register", "data_folder", folder.id, {"name": name, "path": folder.path})
    return folder
