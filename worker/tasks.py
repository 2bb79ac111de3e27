"""The one thin task: job id in, lease claimed, one core function run, outcome recorded.

A heartbeat thread keeps the lease fresh, flushes progress and sees cancel requests; the
observer writes one EpochMetric per epoch (both in worker.job_progress). With an object store (an s3:// ARTIFACTS_URL) the run is
written in this node's scratch folder and stored as it goes (core.service.run_mirror): each epoch's
files before its row, every other file before the outcome. A UserInputError fails the job with its one line;
any other exception is a bug: the job fails with a one-line summary and the traceback is logged.
The worker process stays healthy either way and takes the next job.

The task is declared here (`shared_task` named `leukemia.run_job`, for whichever app the worker makes).
`run_next_job(job_id)` runs the best job waiting in that job's queue, which may be another one. With an
object store the local run folder starts empty and is refilled from the store; an attempt after the
first notes how it started (jobs.attempt_note)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from contextlib import ExitStack
from pathlib import Path

from celery import current_task, shared_task
from celery.exceptions import Reject

from core.common.errors import BrokerUnavailable, NoSpaceLeft, OneLineError
from core.engine.model.limits import is_no_space
from core.engine.progress import RunStopped
from core.engine.run_folder.artifact_store import remove_folder
from core.engine.run_folder.layout import classify_artifacts
from core.engine.run_folder.resolver import claim_run_folder
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.logs import log_context
from core.service.records import MODEL_KINDS, PRIORITY_NAMES, Job, JobStatus
from core.service.run_folders import artifact_store, job_run_folder, job_run_key, local_root
from core.service.run_mirror import RunMirror, StoredFile
from core.service.settings import Settings, get_settings
from worker import metrics
from worker.celery_app import RUN_JOB_TASK
from worker.core_call import JobSpec, run_core_function
from worker.dispatch import send_job
from worker.job_progress import SHUTTING_DOWN, Heartbeat, JobObserver, LogTail

log = logging.getLogger("leukemia.worker")


def worker_name() -> str:
    """This worker's name as lease owner prefix and job host: in a task, the Celery node name
    (`leukemia worker --hostname`, pool children included); called outside one, host:pid."""
    request = current_task.request if current_task else None
    return getattr(request, "hostname", None) or f"{socket.gethostname()}:{os.getpid()}"


def task_id() -> str | None:
    """The Celery task id of the message being run (None outside a task)."""
    request = current_task.request if current_task else None
    return getattr(request, "id", None)


def lease_owner(worker: str, celery_task_id: str | None) -> str:
    """The lease owner of a job a worker runs for a task: `<worker name>:<task id>`, so Celery's
    terminate of that task finds the job (worker.terminate); outside a task, a random suffix."""
    return f"{worker[:200]}:{celery_task_id or uuid.uuid4().hex[:8]}"


def run_next_job(job_id: int) -> None:
    """Run the best job waiting in job_id's queue, which may be another job: a message naming a job means
    "a job of its queue is waiting", so claim the queue's best queued job (core.service.jobs.claim_next_job:
    higher priority first, then oldest), run it, record the outcome. Nothing to claim means nothing to do."""
    if SHUTTING_DOWN.is_set():
        # A message taken while this worker stops goes back to the broker for the next worker.
        raise Reject(f"job {job_id}: worker shutting down", requeue=True)
    celery_task_id = task_id()
    task_fields = {"task_id": celery_task_id} if celery_task_id else {}
    owner = lease_owner(worker_name(), celery_task_id)
    with get_sessionmaker().begin() as session:
        job = jobs.claim_next_job(session, int(job_id), owner=owner, host=worker_name())
        if job is None:
            current = session.get(Job, int(job_id))
            state = "missing" if current is None else current.status
            with log_context(job_id=int(job_id), **task_fields):  # the line is about the message's job
                log.info(
                    "job %s not claimed: it is %s (finished, cancelled or leased by a live worker) and nothing "
                    "else waits in its queue; skipped",
                    job_id,
                    state,
                )
            return
        spec = JobSpec(
            job.id,
            job.kind,
            dict(job.params),
            job.parent_id,
            job.attempts,
            job.queue,
            job.run_key,
            job.origin,
            job.cv_fold,
            job.legacy_run_dir,
        )
        priority = PRIORITY_NAMES.get(job.priority, str(job.priority))
    # Every line logged for this job carries its id and the Celery task's (core.service.logs).
    with log_context(job_id=spec.id, **task_fields):
        log.info(
            "job %s (%s) claimed by %s, attempt %s, priority %s (message for job %s)",
            spec.id,
            spec.kind,
            owner,
            spec.attempts,
            priority,
            job_id,
        )
        JobRun(spec, owner, get_settings()).execute()  # the task's entry, like a view's: this worker's settings


class JobRun:
    """One attempt at a claimed job."""

    def __init__(self, spec: JobSpec, owner: str, settings: Settings) -> None:
        self.spec, self.owner, self.settings = spec, owner, settings
        self.run_folder = job_run_folder(spec)
        self.run_folder_claimed = False  # a folder that is not this job's is never read for artifacts
        store = artifact_store()  # a folder store is written in place; an object store through a mirror
        self.mirror = RunMirror(store, self.run_folder, job_run_key(spec), spec.id) if store.local_root is None else None
        self.holds = ExitStack()  # cached parent checkpoints in use until the attempt ends
        self.observer = JobObserver(spec.id, self.mirror, self.note_start, default_retention=settings.retention)
        self.tail = LogTail()
        self.heartbeat = Heartbeat(spec.id, owner, self.observer, self.tail, settings.heartbeat_seconds)

    def execute(self) -> None:
        """Run the core function and record the outcome; never raises (the worker takes the next job)."""
        logging.getLogger().addHandler(self.tail)
        metrics.job_started(self.spec.id, str(self.spec.params.get("device", "auto")))
        self.heartbeat.start()
        status, error = JobStatus.failed, None
        try:
            self.prepare_run_folder()  # before anything resumes or writes there
            if self.spec.origin == "web" and self.spec.params.get("data_dir"):
                from core.engine.data.data_roots import require_inside_data_roots

                require_inside_data_roots(Path(self.spec.params["data_dir"]))
            run_core_function(self.spec, self.run_folder, self.observer, holds=self.holds)
            if self.mirror is not None:
                self.mirror.finish()  # every file stored before the job is recorded as succeeded
            status = JobStatus.succeeded
        except OneLineError as failure:  # bad input, a full disk: the job fails with that one line
            error = str(failure)
            log.warning("job %s failed: %s", self.spec.id, error)
        except RunStopped:
            status = {"cancel": JobStatus.cancelled, "lease lost": "lost"}.get(self.heartbeat.reason or "", "released")
            log.info("job %s stopped (%s)", self.spec.id, self.heartbeat.reason or "worker shutting down")
        except Exception as bug:  # a bug: one line for the user, the traceback for the developer
            if is_no_space(bug):  # metrics, plots, predictions on a full disk: not a bug
                error = str(NoSpaceLeft(getattr(bug, "filename", None) or self.run_folder))
                log.warning("job %s failed: %s", self.spec.id, error)
            else:
                error = f"internal error: {type(bug).__name__}: {bug}"
                log.exception("job %s crashed", self.spec.id)
        finally:
            self.heartbeat.done.set()
            self.heartbeat.join()
            logging.getLogger().removeHandler(self.tail)
        try:
            outcome = self.record_outcome(status, error)
        finally:
            metrics.job_ended()
            self.holds.close()
            if self.mirror is not None and self.run_folder_claimed:  # stored: the scratch copy is done with
                try:
                    remove_folder(local_root(), self.run_folder)
                except OSError:  # a scratch folder left behind costs disk, never the job: the next attempt empties it
                    log.exception("job %s: its scratch folder %s could not be removed", self.spec.id, self.run_folder)
        metrics.JOBS_RUN.labels(self.spec.kind, outcome).inc()

    def prepare_run_folder(self) -> None:
        """Claim the local run folder (core.engine.run_folder.resolver). With an object store, the store's copy is
        what counts: the folder starts empty on this node, and a training run's stored files (last.pt checked
        against its recorded sha256) are fetched into it, so it resumes where the last attempt stored it."""
        if self.mirror is not None and self.run_folder.exists():  # a former attempt's scratch on this node
            remove_folder(local_root(), self.run_folder)
        claim_run_folder(self.run_folder, self.spec.run_key, legacy=self.spec.legacy_run_dir)
        self.run_folder_claimed = True
        if self.mirror is not None and self.spec.kind in MODEL_KINDS:
            fetched = self.mirror.fetch_run()
            if fetched:
                log.info("job %s: fetched %s from the artifact store to resume its run", self.spec.id, ", ".join(fetched))

    def note_start(self, start_epoch: int) -> None:
        """A training run's attempt after its first says, in the log and on the job's row, where it starts:
        resumed from the last stored epoch, or over at epoch 1 for want of a checkpoint."""
        if self.spec.attempts <= 1 or self.spec.kind not in MODEL_KINDS:
            return
        host = worker_name()
        if start_epoch > 1:
            note = f"attempt {self.spec.attempts} on {host} resumed at epoch {start_epoch} from last.pt"
        else:
            where = "in its run folder" if self.mirror is None else "in the artifact store"
            note = (
                f"attempt {self.spec.attempts} on {host} found no last.pt checkpoint {where} to resume from, "
                "so it started over at epoch 1"
            )
        (log.info if start_epoch > 1 else log.warning)("job %s: %s", self.spec.id, note)
        with get_sessionmaker().begin() as session:
            jobs.note_attempt(session, self.spec.id, self.owner, note)

    def record_outcome(self, status: str, error: str | None) -> str:
        """Artifacts (size, sha256) and the outcome in one transaction, unless another worker holds the lease;
        returns the outcome: the status recorded, or "lost" when the row was not this attempt's to record."""
        if status == "lost":
            if self.mirror is not None:
                self.mirror.abandon()
            log.warning("job %s: lease lost to another worker; leaving the row to it", self.spec.id)
            return status
        stored = self.stored_files()
        with get_sessionmaker().begin() as session:
            if self.mirror is None:
                for kind, path in classify_artifacts(self.run_folder) if self.run_folder_claimed else []:
                    jobs.add_artifact(session, self.spec.id, kind, path)
            for item in stored:
                jobs.record_artifact(session, self.spec.id, item.kind, item.key, item.size, item.sha256)
            jobs.heartbeat(session, self.spec.id, self.owner, **self.observer.progress, log_tail=self.tail.text())
            if status == "released":
                released_as = jobs.release_job(session, self.spec.id, self.owner)
                recorded = released_as is not None
                if released_as == JobStatus.cancelled:  # the cancel came as the worker was stopping
                    status = JobStatus.cancelled
            else:
                if status == JobStatus.succeeded and self.observer.stopped_early is not None:
                    jobs.record_early_stop(session, self.spec.id, self.owner, *self.observer.stopped_early)
                recorded = jobs.finish_job(session, self.spec.id, self.owner, status, error)
                if recorded:  # a late cancel turns "succeeded" into "cancelled"
                    status = jobs.get_job(session, self.spec.id).status
        if not recorded:
            log.warning("job %s: lease lost before it ended; outcome %s not recorded", self.spec.id, status)
            return "lost"
        if status == "released":
            self.resend()
        else:
            log.info("job %s %s", self.spec.id, status)
            self.apply_retention()
        return status

    def stored_files(self) -> list[StoredFile]:
        """With an object store, the run folder's files it holds, to record with the outcome (a run that failed
        or stopped has its files stored now; a file that cannot be is left out)."""
        if self.mirror is None or not self.run_folder_claimed:
            return []
        try:
            self.mirror.finish()
        except Exception:  # the store or the database failed: only what it holds is recorded
            log.exception("job %s: storing the run's files in the artifact store failed", self.spec.id)
        return self.mirror.stored_files()

    def apply_retention(self) -> None:
        """The job's retention policy on its run folder, and its size on disk; never fails the job."""
        from core.service import retention

        try:
            with get_sessionmaker().begin() as session:
                outcome = retention.after_job(session, self.spec.id, self.settings.retention)
        except Exception:  # the outcome is recorded; a tidy-up problem is logged, not the job's
            log.exception("job %s: retention not applied", self.spec.id)
            return
        if outcome.removed or outcome.kept_for_children:
            log.info(
                "job %s retention %s: removed %s (%s bytes), kept for child jobs %s, %s bytes on disk",
                self.spec.id,
                outcome.policy,
                ", ".join(outcome.removed) or "nothing",
                outcome.freed_bytes,
                ", ".join(outcome.kept_for_children) or "nothing",
                outcome.disk_bytes,
            )

    def resend(self) -> None:
        """Send a released job again, for the next worker; it resumes from its last checkpoint."""
        try:
            send_job(self.spec.id, self.spec.queue)
            log.info("job %s stopped for shutdown and queued again", self.spec.id)
        except BrokerUnavailable as failure:  # the broker is gone too: send_job marked the job failed
            log.error("job %s: %s", self.spec.id, failure)


# The task every job message names, declared here for whichever Celery app this process makes (one per
# broker URL, worker.celery_app.get_app; hence shared_task). Only a process that imports this module (a
# worker: worker.runtime) registers it; the web and the CLI send by name (RUN_JOB_TASK) and never import
# task code or torch. The name stays "leukemia.run_job", which messages queued before run_next_job had
# its name still carry. Its Request class makes Celery's terminate a cancel of the job (worker.terminate).
shared_task(name=RUN_JOB_TASK, ignore_result=True, Request="worker.terminate:RunJobTaskRequest")(run_next_job)
