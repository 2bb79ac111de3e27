"""What an artifact store is: the interface every store implements, and its keys.

A key is a relative POSIX path (`jobs/12-<run key>/best.pt`): the path an artifact row records. Missing
keys raise FileNotFoundError (naming the key); a store that cannot be reached or refuses is a
StorageError (one line)."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import IO

CHUNK = 1 << 20


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int


def check_key(key: str) -> str:
    """A key as the store takes it: relative, no `..`, no empty or dot-only parts (a bug otherwise, never
    user input: keys come from the job service, never from a request)."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts) or "\\" in key:
        raise ValueError(f"not an artifact key: {key!r}")
    return key


def valid_key(key: str) -> bool:
    try:
        check_key(key)
    except ValueError:
        return False
    return True


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore(ABC):
    """The few operations every file access goes through. Missing keys raise FileNotFoundError (naming the
    key); a store that cannot be reached or refuses is a StorageError (one line)."""

    url: str
    local_root: Path | None  # a folder store's folder: a worker writes its run there directly

    @abstractmethod
    def put(self, key: str, source: Path, *, waited_for: bool = False) -> None:
        """Store the local file `source` under key (replacing what was there); waited_for: someone waits for it
        (use every means to be quick), else it runs beside other work (use as little CPU at a time as it can)."""

    @abstractmethod
    def get(self, key: str, target: Path) -> None:
        """Write the stored file to the local path target (atomically)."""

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """The stored file for streaming reads; the caller closes it."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The stored file's size; None when it is not there."""

    @abstractmethod
    def list(self, prefix: str) -> list[StoredObject]:
        """Every file stored under the folder `prefix` (keys beginning `prefix/`), in key order."""

    @abstractmethod
    def delete(self, key: str) -> int:
        """Remove a stored file; the bytes it held (0 when it was not there)."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every file under the folder prefix; the bytes they held."""

    @abstractmethod
    def location(self, key: str) -> str:
        """Where a key is, as people and job parameters name it: a path, or the object's URL."""

    @abstractmethod
    def key_of(self, location: str) -> str | None:
        """The key of a location inside this store (location's inverse); None for anything else."""

    def presigned_url(self, key: str, filename: str, seconds: int) -> str | None:
        """A time-limited URL that downloads key as filename without credentials; None where there is none."""
        return None

    def exists(self, key: str) -> bool:
        return valid_key(key) and self.size(key) is not None

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as stream:
            return stream.read()

    def prefix_bytes(self, prefix: str) -> int:
        return sum(found.size for found in self.list(prefix))
