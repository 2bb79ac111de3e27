"""An artifact store that is a folder (ARTIFACTS_DIR by default): keys are paths below it. Workers write
their run folders straight into it, so storing a file there is a no-op; several hosts share it only as a
shared filesystem (NFS). Reads follow links only where they stay inside the folder; removals stay inside
it and never follow a link (a link found in a run folder is removed as a link)."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import IO

from core.common.atomic import atomic_path
from core.engine.run_folder.artifact_store.base import ArtifactStore, StoredObject, check_key, valid_key


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


def inside(root: Path, path: Path) -> bool:
    """Is path (its folder resolved, the last name itself not followed) inside root (not root itself)?"""
    root = Path(root).resolve()
    try:
        candidate = Path(path).parent.resolve() / Path(path).name
    except OSError:
        return False
    return candidate != root and candidate.is_relative_to(root)


def remove_file(root: Path, path: Path) -> int:
    """Remove one file (or link) inside root; the bytes it held (0 for a link or a missing file)."""
    path = Path(path)
    if not inside(root, path):
        raise ValueError(f"remove_file: {path} is outside {root}")  # a bug, never user input
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return 0
    if stat.S_ISDIR(info.st_mode):
        raise ValueError(f"remove_file: {path} is a folder")
    path.unlink(missing_ok=True)
    return info.st_size if stat.S_ISREG(info.st_mode) else 0


def remove_folder(root: Path, folder: Path) -> int:
    """Remove a folder inside root and everything under it, links not followed (a link named folder is
    removed as a link); the bytes of the regular files removed."""
    folder = Path(folder)
    if not inside(root, folder):
        raise ValueError(f"remove_folder: {folder} is outside {root}")  # a bug, never user input
    if folder.is_symlink():
        folder.unlink()
        return 0
    if not folder.is_dir():
        return 0
    freed = 0
    for top, dirs, files in os.walk(folder, topdown=False, followlinks=False):
        for name in files:
            freed += remove_file(root, Path(top) / name)
        for name in dirs:
            entry = Path(top) / name
            if entry.is_symlink():  # os.walk lists a link to a folder among dirs, and does not enter it
                entry.unlink()
            else:
                entry.rmdir()
    folder.rmdir()
    return freed


class FolderStore(ArtifactStore):
    """A folder: keys are paths below it. Reads follow links only where they stay inside the folder;
    removals never follow a link (a link is removed as a link)."""

    def __init__(self, root: Path) -> None:
        self.local_root = Path(root)
        self.url = str(root)

    def _path(self, key: str) -> Path:
        return self.local_root / check_key(key)

    def _file(self, key: str) -> Path:
        """The file a key names, only if it resolves inside the folder; else FileNotFoundError."""
        root = self.local_root.resolve()
        path = self._path(key).resolve()
        if not (path.is_relative_to(root) and path.is_file()):
            raise FileNotFoundError(f"{key}: not in the artifacts folder {self.local_root}")
        return path

    def put(self, key: str, source: Path, *, waited_for: bool = False) -> None:
        target = self._path(key)
        if target.exists() and os.path.samefile(source, target):
            return  # written in place: a folder store's run folders are the store
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            shutil.copyfile(source, temporary)

    def get(self, key: str, target: Path) -> None:
        source = self._file(key)
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(target)) as temporary:
            shutil.copyfile(source, temporary)

    def open(self, key: str) -> IO[bytes]:
        return self._file(key).open("rb")

    def size(self, key: str) -> int | None:
        try:
            return self._file(key).stat().st_size
        except (FileNotFoundError, ValueError):
            return None

    def list(self, prefix: str) -> list[StoredObject]:
        folder = self._path(prefix)
        if not folder.is_dir() or folder.is_symlink():
            return []
        found = []
        for top, _dirs, files in os.walk(folder, followlinks=False):
            for name in files:
                path = Path(top) / name
                try:
                    info = os.lstat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    found.append(StoredObject(path.relative_to(self.local_root).as_posix(), info.st_size))
        return sorted(found, key=lambda found: found.key)

    def delete(self, key: str) -> int:
        path = self._path(key)  # a key whose folder is a link leading out of the store is never followed
        return remove_file(self.local_root, path) if inside(self.local_root, path) else 0

    def delete_prefix(self, prefix: str) -> int:
        return remove_folder(self.local_root, self._path(prefix))

    def prefix_bytes(self, prefix: str) -> int:
        return folder_bytes(self._path(prefix))

    def location(self, key: str) -> str:
        return str(self._path(key))

    def key_of(self, location: str) -> str | None:
        path = Path(location)  # by path components: a legacy jobs/1 is no prefix of jobs/12
        if not path.is_absolute() or not path.is_relative_to(self.local_root) or path == self.local_root:
            return None
        key = path.relative_to(self.local_root).as_posix()
        return key if valid_key(key) else None
