"""Where a job's files live once written: an artifact store, addressed by one URL (ARTIFACTS_URL).

- a folder (a plain path or `file:///path`; the default is ARTIFACTS_DIR): `folder.FolderStore`.
  Workers write their run folders straight into it.
- `s3://bucket/prefix`: `s3.S3Store`, any S3-compatible server (AWS S3, MinIO, Ceph RGW, `rclone serve
  s3`; ARTIFACTS_S3_ENDPOINT_URL names one that is not AWS), through boto3 with the standard AWS
  credential chain. Workers write a run into a per-node scratch folder and store its files as they go
  (core.service.run_mirror).

One small interface (`base.ArtifactStore`: put, get to a local path, open for reading, size, list and
delete by prefix, location and key_of, a presigned URL), chosen by the URL's scheme (`open_store`).
Callers never build paths into the store: they name keys, the relative paths artifact rows record. The
store holds no database code; the job service decides the keys and records the rows. `fetch_verified`
brings a stored file into a node's cache as `<sha256>.pt` (core.common.cache_folder) and checks it against
the recorded hash."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from core.common import cache_folder
from core.common.atomic import atomic_path
from core.common.errors import UserInputError
from core.engine.run_folder.artifact_store.base import ArtifactStore, StoredObject, check_key, sha256_of, valid_key
from core.engine.run_folder.artifact_store.folder import FolderStore, folder_bytes, inside, remove_file, remove_folder

__all__ = [
    "ArtifactStore",
    "FolderStore",
    "StoredObject",
    "check_key",
    "fetch_verified",
    "folder_bytes",
    "inside",
    "open_store",
    "remove_file",
    "remove_folder",
    "sha256_of",
    "store_kind",
    "valid_key",
]


def store_kind(url: str) -> str:
    """ "s3" or "folder" for a store URL; ValueError saying what is wrong with any other."""
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ValueError(f"{url!r} names no bucket: use s3://bucket or s3://bucket/prefix")
        return "s3"
    if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
        raise ValueError(f"{url!r}: a file:// URL names a folder of this host (file:///path)")
    if parsed.scheme not in ("", "file") and len(parsed.scheme) > 1:  # a Windows drive letter is no scheme
        raise ValueError(f"{url!r}: use a folder, file:///path or s3://bucket/prefix")
    return "folder"


def open_store(url: str, *, endpoint_url: str = "") -> ArtifactStore:
    """The store a URL names: s3://bucket/prefix, file:///path, or a plain folder path."""
    try:
        kind = store_kind(url)
    except ValueError as error:
        raise UserInputError(f"ARTIFACTS_URL: {error}") from None
    if kind == "s3":
        from core.engine.run_folder.artifact_store.s3 import S3Store  # boto3: only where an s3:// store is used

        return S3Store(url, endpoint_url)
    parsed = urlparse(url)
    return FolderStore(Path(parsed.path) if parsed.scheme == "file" else Path(url).expanduser())


# --- a node's cache of stored files -----------------------------------------------------------


def fetch_verified(store: ArtifactStore, key: str, sha256: str, cache_dir: Path, max_bytes: int | None) -> cache_folder.Hold:
    """Hold the stored file `key` in this node's cache, as cache_dir/checkpoints/<sha256>.pt: fetched once,
    checked against the recorded sha256, then reused by later jobs on this node while the cap keeps it.
    A file whose content is not the recorded one is never cached: UserInputError naming the key."""
    entry = Path(cache_dir) / "checkpoints" / f"{sha256}{PurePosixPath(key).suffix}"
    while True:
        held = cache_folder.hold(entry)
        if held is not None:
            return held
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry) as temporary:
            store.get(key, temporary)
            found = sha256_of(temporary)
            if found != sha256:
                raise UserInputError(
                    f"{key} in the artifact store does not match its recorded sha256 ({found[:12]}… "
                    f"instead of {sha256[:12]}…): it was changed or damaged after it was recorded"
                )
        held = cache_folder.hold(entry)
        if held is not None:
            cache_folder.evict(Path(cache_dir), max_bytes, keep=entry)
            return held
