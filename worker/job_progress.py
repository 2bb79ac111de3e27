"""What a running job reports and hears, beside its run (worker.tasks.JobRun): the observer that keeps
its progress and records each epoch (an EpochMetric row; with an object store, once the epoch's files are
stored: core.service.run_mirror), the heartbeat thread that refreshes its lease, flushes progress and the
log tail and notices a cancel or a lost lease, and the worker's stop (SHUTTING_DOWN)."""

from __future__ import annotations

import contextvars
import logging
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.engine.progress import BatchProgress, EpochRecord, PredictionObserver, PredictionProgress, TrainingObserver
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.records import Job
from core.service.run_mirror import RunMirror
from worker import metrics

log = logging.getLogger("leukemia.worker")
# Set when the worker process is asked to stop (SIGTERM): the running job stops at the next
# batch, keeps its last epoch checkpoint and goes back to its queue for another worker.
SHUTTING_DOWN = threading.Event()
LOG_TAIL_LINES = 40


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
    """Observes a job's run: keeps progress for the heartbeat to flush, upserts each epoch (with an object
    store, in the background once the epoch's files are stored: mirror)."""

    def __init__(
        self,
        job_id: int,
        mirror: RunMirror | None = None,
        on_start_epoch: Callable[[int], None] | None = None,
        *,
        default_retention: str,
    ) -> None:
        self.job_id = job_id
        self.default_retention = default_retention  # the worker's RETENTION, for a job without its own policy
        self.mirror = mirror
        self.on_start_epoch = on_start_epoch  # told the epoch the run starts at (a takeover's note)
        self.progress: dict[str, Any] = {}
        self.total_epochs = 1
        self.stop = threading.Event()
        self.stopped_early: tuple[int, str] | None = None  # (epoch, reason) of a run that ended early
        self.first_new_epoch = 1  # a resume re-reports the epochs before this one
        self.snapshot: Any = None  # the epoch's files staged for the mirror (on_checkpoint), stored with its row

    def on_start(self, total_epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.total_epochs = max(total_epochs, 1)
        self.first_new_epoch = start_epoch
        self.progress = {**self.progress, "epochs_total": total_epochs, "epoch": start_epoch}
        if self.on_start_epoch is not None:
            self.on_start_epoch(start_epoch)

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
        if self.mirror is not None:  # stored, then recorded, while the next epoch trains
            snapshot, self.snapshot = self.snapshot, None
            self.mirror.record_epoch(snapshot, record, self.recorded, last=record.epoch >= self.total_epochs)
            return
        with get_sessionmaker().begin() as session:
            jobs.record_epoch(session, self.job_id, record)
        self.recorded(record)

    def recorded(self, record: EpochRecord) -> None:
        if record.epoch >= self.first_new_epoch:
            metrics.EPOCHS.inc()
        log.info(
            "job %s epoch %s: train_loss %.4f valid_accuracy %s",
            self.job_id,
            record.epoch,
            record.train_loss,
            record.valid_accuracy,
        )

    def on_checkpoint(self, run_folder: Path, checkpoint: dict[str, Any]) -> None:
        """A `last-N` job also keeps its N newest epoch checkpoints (core.service.retention); with an object
        store the epoch's files are staged for storing now, before the next epoch writes."""
        from core.service import retention

        with get_sessionmaker().begin() as session:
            keep = retention.keep_epochs_for(session, self.job_id, self.default_retention)
        if keep is not None:
            retention.save_epoch_checkpoint(run_folder, checkpoint, keep)
        if self.mirror is not None:
            self.snapshot = self.mirror.snapshot()

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
        failure = self.mirror.failure() if self.mirror is not None else None
        if failure is not None:  # an epoch could not be stored or recorded: the run ends with that error
            raise failure
        return self.stop.is_set() or SHUTTING_DOWN.is_set()


class Heartbeat(threading.Thread):
    """Every `interval` seconds (HEARTBEAT_SECONDS): refresh the lease, flush progress and the log tail, notice a cancel."""

    def __init__(self, job_id: int, owner: str, observer: JobObserver, tail: LogTail, interval: float) -> None:
        super().__init__(name=f"heartbeat-{job_id}", daemon=True)
        self.job_id, self.owner, self.observer, self.tail, self.interval = job_id, owner, observer, tail, interval
        self.done = threading.Event()
        self.reason: str | None = None  # "cancel" or "lease lost" once the job must stop
        self.log_context = contextvars.copy_context()  # the job's: its lines carry the job id

    def run(self) -> None:
        self.log_context.run(self.beat_until_done)

    def beat_until_done(self) -> None:
        while not self.done.wait(self.interval):
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
        if self.reason == "lease lost" and self.observer.mirror is not None:
            self.observer.mirror.stopped.set()  # the run is another worker's now: store nothing more of it
        self.observer.stop.set()
        return False
