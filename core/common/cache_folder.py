"""A per-node cache folder with a size cap: the decoded-image caches (core.engine.inputs.cache) and the parent
checkpoints fetched from the artifact store (core.engine.run_folder.artifact_store.fetch_verified) live in one, so
one setting (CACHE_MAX_GB) bounds what a node keeps.

An entry is a regular file under the folder whose name does not start with a dot (temporaries and lock
files do). A reader holds an entry while it reads it (`hold`): a shared flock on the entry's lock file
`.<name>.lock` beside it, taken before the entry is opened and released when the hold is closed (or the
process ends, even by kill -9, so no stale marker is left). Eviction removes the least recently used
entries (by mtime, which a hold refreshes) until the folder fits its cap, and only takes an entry whose
lock it can take exclusively at once: a file a running job reads is never removed."""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

GB = 1000**3


def lock_path(entry: Path) -> Path:
    return entry.with_name(f".{entry.name}.lock")


class Hold:
    """A shared lock on one cache entry: while it is open, no eviction removes the entry."""

    def __init__(self, entry: Path, descriptor: int) -> None:
        self.path = entry
        self._descriptor: int | None = descriptor

    def close(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None

    def __enter__(self) -> Hold:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # a hold dropped without close (a cache object garbage-collected)
        self.close()


def _locked(entry: Path, operation: int) -> int | None:
    """An open descriptor of entry's lock file holding `operation`'s flock, or None when the lock is taken
    (LOCK_NB) or the lock file was replaced meanwhile by an eviction (the caller then looks again)."""
    path = lock_path(entry)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, operation)
        # An evictor unlinks the lock file while it holds it: a lock on an unlinked inode protects nothing.
        if os.fstat(descriptor).st_ino != os.stat(path).st_ino:
            os.close(descriptor)
            return None
    except (BlockingIOError, FileNotFoundError):
        os.close(descriptor)
        return None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def hold(entry: Path) -> Hold | None:
    """Hold an existing entry (its mtime refreshed: just used); None when it is not there."""
    if not entry.is_file():  # nothing to hold, and no lock file (nor folder) made for it
        return None
    while True:
        descriptor = _locked(entry, fcntl.LOCK_SH)
        if descriptor is None:
            continue  # the lock file was replaced: take the new one
        try:
            os.utime(entry)
        except FileNotFoundError:  # not cached (or evicted): its lock file goes too
            lock_path(entry).unlink(missing_ok=True)
            os.close(descriptor)
            return None
        return Hold(entry, descriptor)


def remove_unless_held(entry: Path) -> bool:
    """Remove an entry (a superseded version) unless a reader holds it; True when it was removed."""
    descriptor = _locked(entry, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if descriptor is None:
        return False
    try:
        entry.unlink(missing_ok=True)
        lock_path(entry).unlink(missing_ok=True)
    finally:
        os.close(descriptor)
    return True


@dataclass(frozen=True)
class Eviction:
    removed: list[str]
    freed_bytes: int
    kept_in_use: list[str]


def entries(root: Path) -> list[Path]:
    """The cache's entries: regular files below root whose names do not start with a dot."""
    found = []
    for top, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = [name for name in dirs if not name.startswith(".")]
        found += [Path(top) / name for name in files if not name.startswith(".")]
    return [path for path in found if path.is_file() and not path.is_symlink()]


def evict(root: Path, max_bytes: int | None, *, keep: Path | None = None) -> Eviction:
    """Remove least recently used entries until root holds at most max_bytes (None or 0: no cap); an entry
    in use (held) and `keep` (the one just added) stay even if the folder is then still over its cap."""
    if not max_bytes or not Path(root).is_dir():
        return Eviction([], 0, [])
    found = []
    for path in entries(Path(root)):
        try:
            info = path.stat()
        except FileNotFoundError:
            continue
        found.append((info.st_mtime, info.st_size, path))
    total = sum(size for _, size, _ in found)
    removed, in_use, freed = [], [], 0
    for _, size, path in sorted(found):
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        if not remove_unless_held(path):
            in_use.append(path.name)
            continue
        total -= size
        freed += size
        removed.append(path.name)
    if removed:
        log.info(
            "cache %s over its cap of %.1f GB: removed %s (%d bytes)%s",
            root,
            max_bytes / GB,
            ", ".join(removed),
            freed,
            f"; in use, kept: {', '.join(in_use)}" if in_use else "",
        )
    return Eviction(removed, freed, in_use)


def max_bytes_of(gigabytes: float) -> int | None:
    """CACHE_MAX_GB as bytes; None for 0 (no cap)."""
    return int(gigabytes * GB) if gigabytes > 0 else None
