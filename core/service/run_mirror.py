"""A run written on this node and stored as it goes, for an object store (an s3:// ARTIFACTS_URL): the
worker writes the run folder in its scratch folder (core.service.run_folders.job_run_folder) and this module
keeps the store's copy in step. A folder store needs none of it: the run folder is in the store already.

After each epoch the training loop has saved last.pt (and best.pt when the epoch is the best), the
metrics files, the plots and the event log. `snapshot` takes what changed since the last snapshot at once,
on the training thread: checkpoints by a hard link (the next epoch replaces last.pt by a rename, so the
link keeps this epoch's file intact), the small files by a copy (the event log grows in place). A single
background thread then stores the snapshot's files (last.pt last) and only then commits, in one
transaction, their artifact rows (size, sha256) and the epoch's EpochMetric row: the database never names
a checkpoint the store lacks, and the next epoch trains while the upload runs. At most one epoch is in
flight: the next epoch's record waits for the previous one's upload to end.

When a run resumes on another node (a takeover, a retry), `fetch_run` brings the run folder's stored
files into scratch first, last.pt checked against its recorded sha256, and `finish` stores whatever
changed before the outcome is recorded."""

from __future__ import annotations

import contextvars
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select

from core.common.errors import UserInputError
from core.engine.progress import EpochRecord
from core.engine.run_folder.artifact_store import ArtifactStore, sha256_of
from core.engine.run_folder.layout import LAST_CHECKPOINT, artifact_kind, classify_artifacts
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.records import Artifact, EpochMetric

log = logging.getLogger("leukemia.worker")
STAGING = ".staging"  # a dot folder in the run folder: no artifact, on the same filesystem for hard links


def signature(path: Path) -> tuple[int, int, int]:
    """What changes when a file is written anew (atomically replaced, or appended to)."""
    info = path.stat()
    return info.st_ino, info.st_mtime_ns, info.st_size


STALL_NOTED_S = 0.1  # a wait for the previous epoch's upload this long is logged
UPLOADER_NICENESS = 10  # the uploader yields the CPU to the training loop: it has a whole epoch to finish


def lower_priority() -> None:
    """Run this thread (the uploader) at a lower CPU priority than the training loop (Linux: per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), UPLOADER_NICENESS)
    except (AttributeError, OSError):  # no per-thread priority here: it runs at the process's
        pass


def store_order(name: str) -> tuple[bool, str]:
    """last.pt last: a stored last.pt of epoch N means every other file of epoch N is stored."""
    return name == LAST_CHECKPOINT, name


@dataclass(frozen=True)
class StoredFile:
    kind: str
    key: str
    size: int
    sha256: str


@dataclass(frozen=True)
class StagedFile:
    kind: str
    name: str
    path: Path  # the staged link or copy
    signature: tuple[int, int, int]  # of the run folder's file when it was staged


@dataclass(frozen=True)
class Snapshot:
    """One epoch's changed files, staged for the upload, last.pt last."""

    folder: Path
    files: list[StagedFile]


class RunMirror:
    """Keeps the artifact store's copy of one job's run folder in step with the local one."""

    def __init__(self, store: ArtifactStore, run_folder: Path, prefix: str, job_id: int) -> None:
        self.store, self.run_folder, self.prefix, self.job_id = store, Path(run_folder), prefix, job_id
        self._staged: dict[str, tuple[int, int, int]] = {}  # name → signature of the file as last staged or fetched
        # name → (signature, what the store holds): only once the store has it, for the outcome's rows
        self._stored: dict[str, tuple[tuple[int, int, int], StoredFile]] = {}
        self._uploader = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"store-job-{job_id}", initializer=lower_priority)
        self._in_flight: Future | None = None
        self.stopped = threading.Event()  # the lease was lost: this attempt stores and records nothing more

    # --- a resumed run ---------------------------------------------------------------------

    def fetch_run(self) -> list[str]:
        """Bring the run folder's stored files into the (empty) local run folder; the names fetched. Their
        last.pt is checked against its recorded sha256 (check_last)."""
        fetched = []
        for item in self.store.list(self.prefix):
            name = item.key[len(self.prefix) + 1 :]
            if "/" in name or artifact_kind(Path(name)) is None:
                continue
            path = self.run_folder / name
            self.store.get(item.key, path)
            self._staged[name] = signature(path)
            self._stored[name] = (signature(path), StoredFile(artifact_kind(path), item.key, item.size, sha256_of(path)))
            fetched.append(name)
        if LAST_CHECKPOINT in fetched:
            try:
                self.check_last()
            except UserInputError:
                self._stored.clear()  # nothing of a run whose last.pt is not what was recorded is recorded again
                raise
        return fetched

    def check_last(self) -> None:
        """The fetched last.pt is the recorded one, or the next epoch's: an attempt stores an epoch's files
        before it records them, so one that stopped in between leaves a last.pt one epoch past its rows (it
        resumes from it, as a run on one host resumes from a last.pt saved before its epoch was recorded).
        Anything else is not what the job wrote: one line naming the job and the file."""
        path = self.run_folder / LAST_CHECKPOINT
        key = f"{self.prefix}/{LAST_CHECKPOINT}"
        with get_sessionmaker().begin() as session:
            recorded = session.scalar(select(Artifact.sha256).where(Artifact.job_id == self.job_id, Artifact.path == key))
            recorded_epochs = session.scalar(select(func.max(EpochMetric.epoch)).where(EpochMetric.job_id == self.job_id)) or 0
        if recorded == sha256_of(path):
            return
        from core.engine.model.checkpoint import load_checkpoint  # torch: only for the unrecorded last epoch

        epoch = int(load_checkpoint(path)["epoch"])
        if epoch != recorded_epochs + 1:
            raise UserInputError(
                f"job {self.job_id}: {key} in the artifact store does not match its recorded sha256 "
                f"(it holds epoch {epoch}, the job recorded {recorded_epochs}); it was changed or "
                "damaged after it was stored"
            )
        log.info(
            "job %s: the stored last.pt holds epoch %s, stored by the previous attempt just before it stopped "
            "and not recorded yet; resuming from it",
            self.job_id,
            epoch,
        )

    # --- epochs ----------------------------------------------------------------------------

    def _changed(self) -> list[tuple[str, Path]]:
        found = [
            (kind, path) for kind, path in classify_artifacts(self.run_folder) if self._staged.get(path.name) != signature(path)
        ]
        return sorted(found, key=lambda pair: store_order(pair[1].name))

    def snapshot(self) -> Snapshot:
        """Stage the files changed since the last snapshot (on the training thread, before the next epoch
        writes): a hard link of each checkpoint, a copy of each small file."""
        folder = self.run_folder / STAGING / uuid.uuid4().hex
        folder.mkdir(parents=True)
        files = []
        for kind, path in self._changed():
            staged = folder / path.name
            if path.suffix == ".pt":
                os.link(path, staged)
            else:
                shutil.copyfile(path, staged)
            self._staged[path.name] = signature(path)
            files.append(StagedFile(kind, path.name, staged, self._staged[path.name]))
        return Snapshot(folder, files)

    def record_epoch(
        self, snapshot: Snapshot | None, record: EpochRecord, recorded: Callable[[EpochRecord], None], *, last: bool = False
    ) -> None:
        """In the background: store the snapshot's files, then commit their artifact rows and the epoch's row
        together; then recorded(record). Waits first for the previous epoch's upload (one in flight). The run's
        last epoch is waited for at once (nothing trains beside it): its files go up with parts in parallel."""
        started = time.perf_counter()
        self.wait()
        waited = time.perf_counter() - started
        if waited >= STALL_NOTED_S:  # the store is slower than an epoch: training waited for it
            log.info(
                "job %s: epoch %s waited %.1f s for the previous epoch's files to be stored", self.job_id, record.epoch, waited
            )
        context = contextvars.copy_context()  # the job's log context: its lines carry the job id (core.service.logs)
        self._in_flight = self._uploader.submit(context.run, self._store_and_record, snapshot, record, recorded, last)

    def _store_and_record(
        self, snapshot: Snapshot | None, record: EpochRecord, recorded: Callable[[EpochRecord], None], waited_for: bool
    ) -> None:
        try:
            if self.stopped.is_set():
                return
            stored = [
                self._store(staged.kind, staged.name, staged.path, staged.signature, waited_for=waited_for)
                for staged in (snapshot.files if snapshot else [])
            ]
            if self.stopped.is_set():
                return
            with get_sessionmaker().begin() as session:
                for item in stored:
                    jobs.record_artifact(session, self.job_id, item.kind, item.key, item.size, item.sha256)
                jobs.record_epoch(session, self.job_id, record)
            recorded(record)
        finally:
            if snapshot is not None:
                shutil.rmtree(snapshot.folder, ignore_errors=True)

    def _store(
        self, kind: str, name: str, path: Path, staged_as: tuple[int, int, int], *, waited_for: bool = False
    ) -> StoredFile:
        key = f"{self.prefix}/{name}"
        self.store.put(key, path, waited_for=waited_for)
        stored = StoredFile(kind, key, path.stat().st_size, sha256_of(path))
        self._stored[name] = (staged_as, stored)
        return stored

    def wait(self) -> None:
        """Until the epoch in flight is stored and recorded; its failure (the store, the database) raised here."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def failure(self) -> BaseException | None:
        """The failure of an upload that has ended, if it failed (polled by the training loop)."""
        in_flight = self._in_flight
        return in_flight.exception() if in_flight is not None and in_flight.done() else None

    # --- the end of an attempt -------------------------------------------------------------

    def finish(self) -> None:
        """Wait for the epoch in flight, then store every file changed since (the outcome's files: plots,
        predictions, evaluation reports), before the outcome and the rows of every file are recorded."""
        try:
            self.wait()
        finally:
            self._uploader.shutdown(wait=True)
        shutil.rmtree(self.run_folder / STAGING, ignore_errors=True)
        for kind, path in self._changed():  # the worker records every file's row with the outcome
            self._staged[path.name] = signature(path)
            self._store(kind, path.name, path, self._staged[path.name], waited_for=True)

    def stored_files(self) -> list[StoredFile]:
        """The run folder's files the store holds as they are now (their hashes known from storing them):
        the rows to record with the outcome."""
        found = []
        for _kind, path in classify_artifacts(self.run_folder):
            stored = self._stored.get(path.name)
            if stored is not None and stored[0] == signature(path):
                found.append(stored[1])
        return found

    def abandon(self) -> None:
        """The lease is another worker's: store and record nothing more; drop what is staged."""
        self.stopped.set()
        self._uploader.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.run_folder / STAGING, ignore_errors=True)
