"""An artifact store in an S3 bucket (core.engine.run_folder.artifact_store.base says what a store does): AWS S3 or any
S3-compatible server (MinIO, Ceph RGW, `rclone serve s3`), through boto3 with the standard AWS credential
chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, ~/.aws/credentials and config, AWS_PROFILE, instance
and container roles); ARTIFACTS_S3_ENDPOINT_URL names a server that is not AWS."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlparse

import boto3
from boto3.exceptions import S3TransferFailedError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.common.atomic import atomic_path
from core.common.errors import StorageError, UserInputError
from core.engine.run_folder.artifact_store.base import ArtifactStore, StoredObject, check_key, valid_key


class S3Store(ArtifactStore):
    """An S3 bucket (and a prefix in it) through boto3: multipart uploads and parallel ranged downloads
    by its transfer manager, streaming reads, list and batch delete by prefix."""

    PART_BYTES = 64 * 1024 * 1024  # parts of a multipart transfer: a resnet18 last.pt (134 MB) is 3, a resnet50's 5

    def __init__(self, url: str, endpoint_url: str = "") -> None:
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise UserInputError(f"ARTIFACTS_URL: {url!r} is not s3://bucket or s3://bucket/prefix")
        self.bucket, self.base = parsed.netloc, parsed.path.strip("/")
        self.url = f"s3://{self.bucket}" + (f"/{self.base}" if self.base else "")
        self.local_root = None
        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            signature_version="s3v4",  # presigned URLs too: the older signature is refused by newer regions
            # S3-compatible servers (MinIO, Ceph, rclone) take path-style addresses; AWS takes both.
            s3={"addressing_style": "path"} if endpoint_url else {},
            # Checksums only where S3 requires them: older S3-compatible servers refuse the newer default ones.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        self.client = boto3.session.Session().client("s3", endpoint_url=endpoint_url or None, config=config)
        # Uploads run in the caller's thread, part after part: a worker stores an epoch's files from one background
        # thread of low priority (core.service.run_mirror), which more threads would only take CPU from training;
        # an upload someone waits for (the run's last epoch, a threshold) goes in parallel, as downloads do.
        self.upload = TransferConfig(multipart_threshold=self.PART_BYTES, multipart_chunksize=self.PART_BYTES, use_threads=False)
        # Downloads (a parent's checkpoint, a run taken over) are waited for: parts in parallel, 4 at a time.
        self.download = TransferConfig(
            multipart_threshold=self.PART_BYTES, multipart_chunksize=self.PART_BYTES, max_concurrency=4
        )

    def _name(self, key: str) -> str:
        return f"{self.base}/{check_key(key)}" if self.base else check_key(key)

    def _failed(self, doing: str, key: str, error: Exception) -> Exception:
        """A boto3 error as this store's: FileNotFoundError for a missing key, else StorageError (one line)."""
        if isinstance(error, ClientError):
            code = str(error.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                return FileNotFoundError(f"{key}: not in the artifact store {self.url}")
            reason = f"{code} {error.response.get('Error', {}).get('Message', '')}".strip()
        else:
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        return StorageError(f"artifact store {self.url}: cannot {doing} {key}: {reason}")

    def _call(self, doing: str, key: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except (BotoCoreError, ClientError, S3UploadFailedError, S3TransferFailedError) as error:
            raise self._failed(doing, key, error) from None

    def put(self, key: str, source: Path, *, waited_for: bool = False) -> None:
        config = self.download if waited_for else self.upload  # parts in parallel, or one after another in this thread
        self._call("store", key, self.client.upload_file, str(source), self.bucket, self._name(key), Config=config)

    def get(self, key: str, target: Path) -> None:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(target)) as temporary:
            self._call(
                "fetch", key, self.client.download_file, self.bucket, self._name(key), str(temporary), Config=self.download
            )

    def open(self, key: str) -> IO[bytes]:
        return self._call("read", key, self.client.get_object, Bucket=self.bucket, Key=self._name(key))["Body"]

    def size(self, key: str) -> int | None:
        try:
            return int(
                self._call("look up", key, self.client.head_object, Bucket=self.bucket, Key=self._name(key))["ContentLength"]
            )
        except FileNotFoundError:
            return None

    def list(self, prefix: str) -> list[StoredObject]:
        folder = self._name(prefix) + "/"
        skip = len(self.base) + 1 if self.base else 0
        found = []
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=folder)
        for page in self._call("list", prefix, list, pages):
            found += [StoredObject(item["Key"][skip:], int(item["Size"])) for item in page.get("Contents", [])]
        return sorted(found, key=lambda found: found.key)

    def delete(self, key: str) -> int:
        size = self.size(key)
        if size is None:
            return 0
        self._call("remove", key, self.client.delete_object, Bucket=self.bucket, Key=self._name(key))
        return size

    def delete_prefix(self, prefix: str) -> int:
        found = self.list(prefix)
        for start in range(0, len(found), 1000):  # DeleteObjects takes at most 1000 keys
            batch = [{"Key": self._name(item.key)} for item in found[start : start + 1000]]
            answer = self._call(
                "remove", prefix, self.client.delete_objects, Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
            )
            if answer.get("Errors"):
                error = answer["Errors"][0]
                raise StorageError(
                    f"artifact store {self.url}: cannot remove {error.get('Key')}: {error.get('Code')} "
                    f"{error.get('Message', '')}".strip()
                )
        return sum(item.size for item in found)

    def location(self, key: str) -> str:
        return f"{self.url}/{check_key(key)}"

    def key_of(self, location: str) -> str | None:
        if not location.startswith(self.url + "/"):
            return None
        key = location[len(self.url) + 1 :]
        return key if valid_key(key) else None

    def presigned_url(self, key: str, filename: str, seconds: int) -> str | None:
        disposition = f"attachment; filename*=UTF-8''{quote(filename)}"
        return self._call(
            "sign",
            key,
            self.client.generate_presigned_url,
            "get_object",
            ExpiresIn=seconds,
            Params={"Bucket": self.bucket, "Key": self._name(key), "ResponseContentDisposition": disposition},
        )
