"""The one thin task: job id in, lease claimed, one core function run, outcome recorded.

A heartbeat thread keeps the lease fresh, flushes progress and sees cancel requests; the
observer writes one EpochMetric per epoch. A UserInputError fails the job with its one line;
any other exception is a bug: the job fails with a one-line summary and the traceback is logged.
The worker process stays healthy either way and takes the next job."""

from __future__ import annotations

import contextvars
import logging
import os
import socket
import threading
import uuid
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery import current_task
from celery.exceptions import Reject

from core.common.errors import BrokerUnavailable, NoSpaceLeft, OneLineError
from core.common.formats import percent
from core.engine.limits import is_no_space
from core.engine.progress import (
    BatchProgress,
    EpochRecord,
    PredictionObserver,
    PredictionProgress,
    RunStopped,
    TrainingObserver,
)
from core.engine.run_files import PREDICTIONS_CSV, classify_artifacts
from core.engine.run_folder import claim_run_dir
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.logs import log_context
from core.service.records import PRIORITY_NAMES, Job, JobStatus
from core.service.run_dirs import job_run_dir
from core.service.settings import get_settings
from worker import metrics
from worker.dispatch import send_job

if TYPE_CHECKING:  # the annotation only: report imports the plotting and Grad-CAM code
    from core.engine.report import ThresholdWriter

log = logging.getLogger("leukemia.worker")
# Set when the worker process is asked to stop (SIGTERM): the running job stops at the next
# batch, keeps its last epoch checkpoint and goes back to its queue for another worker.
SHUTTING_DOWN = threading.Event()
LOG_TAIL_LINES = 40


@dataclass(frozen=True)
class JobSpec:
    """The claimed row's values the run needs (plain data, no session attached)."""

    id: int
    kind: str
    params: dict[str, Any]
    parent_id: int | None
    attempts: int
    queue: str
    run_key: str
    origin: str
    cv_fold: int | None = None  # a cross-validation's fold: write its out-of-fold predictions after training
    legacy_run_dir: bool = False  # run before run keys: its folder is jobs/<id> (core.service.run_dirs)


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


def run_job(job_id: int) -> None:
    """A message naming a job means "a job of its queue is waiting": claim the queue's best queued
    job (core.service.jobs.claim_next_job: higher priority first, then oldest), run it, record the outcome.
    Nothing to claim means nothing to do."""
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
                log.info("job %s not claimed: it is %s (finished, cancelled or leased by a live worker) and nothing "
                         "else waits in its queue; skipped", job_id, state)  # fmt: skip
            return
        spec = JobSpec(job.id, job.kind, dict(job.params), job.parent_id, job.attempts, job.queue, job.run_key,
                       job.origin, job.cv_fold, job.legacy_run_dir)  # fmt: skip
        priority = PRIORITY_NAMES.get(job.priority, str(job.priority))
    # Every line logged for this job carries its id and the Celery task's (core.service.logs).
    with log_context(job_id=spec.id, **task_fields):
        log.info("job %s (%s) claimed by %s, attempt %s, priority %s (message for job %s)", spec.id, spec.kind, owner,
                 spec.attempts, priority, job_id)  # fmt: skip
        JobRun(spec, owner).execute()


class LogTail(logging.Handler):
    """Keeps the last lines logged while a job runs, for the row's log_tail."""

    def __init__(self) -> None:
        super().__init__(level=logging.INFO)
        self.lines: deque[str] = deque(maxlen=LOG_TAIL_LINES)
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(self.format(record).splitlines()[0][:500])
        except Exception:  # a logging failure must never fail the job
            self.handleError(record)

    def text(self) -> str:
        return "\n".join(self.lines)


class JobObserver(TrainingObserver, PredictionObserver):
    """Observes a job's run: keeps progress for the heartbeat to flush, upserts each epoch."""

    def __init__(self, job_id: int) -> None:
        self.job_id = job_id
        self.progress: dict[str, Any] = {}
        self.total_epochs = 1
        self.stop = threading.Event()
        self.stopped_early: tuple[int, str] | None = None  # (epoch, reason) of a run that ended early
        self.first_new_epoch = 1  # a resume re-reports the epochs before this one

    def on_start(self, total_epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.total_epochs = max(total_epochs, 1)
        self.first_new_epoch = start_epoch
        self.progress = {**self.progress, "epochs_total": total_epochs, "epoch": start_epoch}

    def on_batch(self, progress: BatchProgress) -> None:
        fraction = (progress.epoch - 1 + progress.batch / max(progress.batches, 1)) / self.total_epochs
        self._report(fraction, progress.images_per_s, progress.eta_s, epoch=progress.epoch)

    def on_progress(self, progress: PredictionProgress) -> None:
        self._report(progress.done / max(progress.total, 1), progress.images_per_s, progress.eta_s)

    def _report(self, fraction: float, images_per_s: float, eta_s: float, **extra: Any) -> None:
        values = {"progress": min(max(fraction, 0.0), 1.0), "images_per_s": images_per_s, "eta_s": eta_s, **extra}
        self.progress = {**self.progress, **values}  # one assignment: the heartbeat thread reads it whole
        metrics.JOB_IMAGES_PER_SECOND.set(images_per_s)

    def on_epoch(self, record: EpochRecord) -> None:
        with get_sessionmaker().begin() as session:
            jobs.record_epoch(session, self.job_id, record)
        if record.epoch >= self.first_new_epoch:
            metrics.EPOCHS.inc()
        log.info("job %s epoch %s: train_loss %.4f valid_accuracy %s", self.job_id, record.epoch,
                 record.train_loss, record.valid_accuracy)  # fmt: skip

    def on_checkpoint(self, run_dir: Path, checkpoint: dict[str, Any]) -> None:
        """A `last-N` job also keeps its N newest epoch checkpoints (core.service.retention)."""
        from core.service import retention

        with get_sessionmaker().begin() as session:
            keep = retention.keep_epochs_for(session, self.job_id)
        if keep is not None:
            retention.save_epoch_checkpoint(run_dir, checkpoint, keep)

    def early_stop_reason(self, record: EpochRecord) -> str | None:
        """The sweep's median stopping rule, if the job is a point of a sweep that has one."""
        from core.service.sweep_stopping import median_stop_reason

        with get_sessionmaker().begin() as session:
            return median_stop_reason(session, self.job_id, record)

    def on_stopped_early(self, epoch: int, reason: str) -> None:
        # The run is over at `epoch`: progress and the epoch count no longer promise the unrun epochs.
        self.stopped_early = (epoch, reason)
        self.progress = {**self.progress, "progress": 1.0, "eta_s": 0.0, "epoch": epoch, "epochs_total": epoch}
        log.info("job %s %s", self.job_id, reason)

    def should_stop(self) -> bool:
        return self.stop.is_set() or SHUTTING_DOWN.is_set()


class Heartbeat(threading.Thread):
    """Every heartbeat_seconds: refresh the lease, flush progress and the log tail, notice a cancel."""

    def __init__(self, job_id: int, owner: str, observer: JobObserver, tail: LogTail) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.job_id, self.owner, self.observer, self.tail = job_id, owner, observer, tail
        self.done = threading.Event()
        self.reason: str | None = None  # "cancel" or "lease lost" once the job must stop
        self.log_context = contextvars.copy_context()  # the job's: its lines carry the job id

    def run(self) -> None:
        self.log_context.run(self.beat_until_done)

    def beat_until_done(self) -> None:
        interval = get_settings().heartbeat_seconds
        while not self.done.wait(interval):
            try:
                self.beat()
            except Exception:  # a database hiccup: keep beating; the lease survives a few misses
                log.exception("job %s heartbeat failed", self.job_id)

    def beat(self) -> bool:
        """One heartbeat; returns False (and stops the run) if the job must stop."""
        with get_sessionmaker().begin() as session:
            if jobs.heartbeat(session, self.job_id, self.owner, **self.observer.progress, log_tail=self.tail.text()):
                return True
            job = session.get(Job, self.job_id)
            self.reason = "cancel" if job is not None and job.lease_owner == self.owner else "lease lost"
        self.observer.stop.set()
        return False


class JobRun:
    """One attempt at a claimed job."""

    def __init__(self, spec: JobSpec, owner: str) -> None:
        self.spec, self.owner = spec, owner
        self.run_dir = job_run_dir(spec)
        self.run_dir_claimed = False  # a folder that is not this job's is never read for artifacts
        self.observer = JobObserver(spec.id)
        self.tail = LogTail()
        self.heartbeat = Heartbeat(spec.id, owner, self.observer, self.tail)

    def execute(self) -> None:
        """Run the core function and record the outcome; never raises (the worker takes the next job)."""
        logging.getLogger().addHandler(self.tail)
        metrics.job_started(self.spec.id, str(self.spec.params.get("device", "auto")))
        self.heartbeat.start()
        status, error = JobStatus.failed, None
        try:
            # before anything resumes or writes there
            claim_run_dir(self.run_dir, self.spec.run_key, legacy=self.spec.legacy_run_dir)
            self.run_dir_claimed = True
            if self.spec.origin == "web" and self.spec.params.get("data_dir"):
                from core.engine.data_roots import require_inside_data_roots

                require_inside_data_roots(Path(self.spec.params["data_dir"]))
            run_core_function(self.spec, self.run_dir, self.observer)
            status = JobStatus.succeeded
        except OneLineError as failure:  # bad input, a full disk: the job fails with that one line
            error = str(failure)
            log.warning("job %s failed: %s", self.spec.id, error)
        except RunStopped:
            status = {"cancel": JobStatus.cancelled, "lease lost": "lost"}.get(self.heartbeat.reason or "", "released")
            log.info("job %s stopped (%s)", self.spec.id, self.heartbeat.reason or "worker shutting down")
        except Exception as bug:  # a bug: one line for the user, the traceback for the developer
            if is_no_space(bug):  # metrics, plots, predictions on a full disk: not a bug
                error = str(NoSpaceLeft(getattr(bug, "filename", None) or self.run_dir))
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
        metrics.JOBS_RUN.labels(self.spec.kind, outcome).inc()

    def record_outcome(self, status: str, error: str | None) -> str:
        """Artifacts (size, sha256) and the outcome in one transaction, unless another worker holds the lease;
        returns the outcome: the status recorded, or "lost" when the row was not this attempt's to record."""
        if status == "lost":
            log.warning("job %s: lease lost to another worker; leaving the row to it", self.spec.id)
            return status
        with get_sessionmaker().begin() as session:
            for kind, path in classify_artifacts(self.run_dir) if self.run_dir_claimed else []:
                jobs.add_artifact(session, self.spec.id, kind, path)
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

    def apply_retention(self) -> None:
        """The job's retention policy on its run folder, and its size on disk; never fails the job."""
        from core.service import retention

        try:
            with get_sessionmaker().begin() as session:
                outcome = retention.after_job(session, self.spec.id)
        except Exception:  # the outcome is recorded; a tidy-up problem is logged, not the job's
            log.exception("job %s: retention not applied", self.spec.id)
            return
        if outcome.removed or outcome.kept_for_children:
            log.info("job %s retention %s: removed %s (%s bytes), kept for child jobs %s, %s bytes on disk",
                     self.spec.id, outcome.policy, ", ".join(outcome.removed) or "nothing", outcome.freed_bytes,
                     ", ".join(outcome.kept_for_children) or "nothing", outcome.disk_bytes)

    def resend(self) -> None:
        """Send a released job again, for the next worker; it resumes from its last checkpoint."""
        try:
            send_job(self.spec.id, self.spec.queue)
            log.info("job %s stopped for shutdown and queued again", self.spec.id)
        except BrokerUnavailable as failure:  # the broker is gone too: send_job marked the job failed
            log.error("job %s: %s", self.spec.id, failure)


def threshold_writer(job_id: int) -> ThresholdWriter | None:
    """Asked of the service before the run: None when a threshold this job chooses may not go into its
    model's checkpoint, else the writer the engine calls, which writes it audited in one transaction."""
    from core.service.thresholds import may_record_threshold, record_audited

    with get_sessionmaker().begin() as session:
        if not may_record_threshold(session, job_id):
            return None

    def write(checkpoint: Path, threshold: dict[str, Any]) -> None:
        with get_sessionmaker().begin() as session:
            record_audited(session, job_id, checkpoint, threshold)

    return write


def run_core_function(spec: JobSpec, run_dir: Path, observer: JobObserver) -> None:
    """Call exactly one core function for the job's kind, with the parent's checkpoint filled in."""
    from core.engine import predict, training
    from core.engine.params import parse_params

    values = dict(spec.params)
    if spec.parent_id is not None and spec.kind != "train":
        with get_sessionmaker().begin() as session:
            parent = str(jobs.job_checkpoint(session, spec.parent_id, values.get("checkpoint_choice", "best")))
        if spec.kind == "predict":
            values["checkpoints"] = [parent, *values.get("checkpoints", [])]
        else:
            values["checkpoint"] = parent
    params = parse_params(spec.kind, values)
    if spec.kind in ("evaluate", "predict"):  # the engine logs nothing of a pass: the job's log says what it reads
        log.info("job %s %s: %s on %s of %s", spec.id, spec.kind, scored_with(spec, params), params.csv, params.data_dir)
    if spec.kind == "train":
        training.train(params, run_dir, resume=True, observer=observer)
        if spec.cv_fold is not None:
            from core.engine.crossval import write_out_of_fold

            write_out_of_fold(run_dir, params, spec.cv_fold)
    elif spec.kind == "finetune":
        training.finetune(params, run_dir, resume=True, observer=observer)
    elif spec.kind == "evaluate":
        metrics = predict.evaluate_csv(params, out_dir=run_dir, observer=observer,
                                       write_threshold=threshold_writer(spec.id)).metrics
        log.info("job %s evaluated %s images at threshold %g (%s): accuracy %s, balanced accuracy %s, weighted F1 %s",
                 spec.id, metrics["count"], metrics["threshold"]["value"], metrics["threshold"]["source"],
                 percent(metrics["accuracy"]), percent(metrics["balanced_accuracy"]), percent(metrics["weighted_f1"]))
    else:  # predict: parse_params knows no other kind
        result = predict.predict_csv(params, run_dir / PREDICTIONS_CSV, observer=observer, report_dir=run_dir,
                                     write_threshold=threshold_writer(spec.id))
        log.info("job %s predicted %s images at threshold %g (%s): %s ALL, %s hem; %s written", spec.id, result.count,
                 result.threshold["value"], result.threshold["source"], result.positives, result.count - result.positives,
                 PREDICTIONS_CSV)


def scored_with(spec: JobSpec, params: Any) -> str:
    """The model an evaluate or predict job scores with, for its log: "best.pt of job 3", "the mean of 3 checkpoints"."""
    paths = [path for path in [getattr(params, "checkpoint", ""), *params.checkpoints] if path]
    if len(paths) > 1:
        return f"the mean of {len(paths)} checkpoints"
    if spec.parent_id is not None:
        return f"{params.checkpoint_choice}.pt of job {spec.parent_id}"
    return Path(paths[0]).name if paths else "no checkpoint"
