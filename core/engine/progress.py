"""How a long run reports progress and is asked to stop: the observer contract shared by training
(epochs) and prediction (images), so the CLI draws a progress bar and a worker writes rows from
the same loops. No torch here: the worker imports this to subclass the observers.

`EpochRecord` is the one shape of an epoch: the worker stores it whole (core.service.jobs.record_epoch; the
EpochMetric columns are its fields, a test holds them equal) and `GET /api/jobs/{id}/metrics` answers it.
A stop request raises `RunStopped` at once: a training run keeps last.pt of its last completed epoch, so a
resume replays the interrupted epoch from its start with the same shuffling and augmentation; a stopped
prediction writes no output file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel


@dataclass(frozen=True)
class BatchProgress:
    """One finished training batch; eta_s is the time left for the remaining training batches of the run."""

    epoch: int
    batch: int
    batches: int
    images_per_s: float
    eta_s: float


@dataclass(frozen=True)
class PredictionProgress:
    """Images scored so far out of all images to score (every checkpoint of an ensemble counts once per image)."""

    done: int
    total: int
    images_per_s: float
    eta_s: float


class EpochRecord(BaseModel):
    """One finished epoch; the valid_* fields and confusion are None without a validation split.

    The one shape of an epoch: checkpoints, metrics files, job rows and the API all use it."""

    epoch: int
    train_loss: float
    train_accuracy: float
    valid_loss: float | None
    valid_accuracy: float | None
    valid_balanced_accuracy: float | None
    valid_f1: float | None
    confusion: list[list[int]] | None
    # ROC-AUC of P(ALL) on the validation split; None without one, with one class only, or in a
    # checkpoint written before it was recorded.
    valid_roc_auc: float | None = None
    lr: float
    seconds: float
    images_per_s: float


class RunStopped(Exception):
    """A stop was requested (observer.should_stop); a training run keeps last.pt of its last completed epoch."""


class RunObserver:
    """What every long run polls: whether to stop. Subclasses add the reports of their kind of run."""

    def should_stop(self) -> bool:
        """Polled every batch; True ends the run with RunStopped."""
        return False


class TrainingObserver(RunObserver):
    """Progress callbacks of a training run. All optional."""

    def on_start(self, total_epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        """Called once before the first epoch that will run (start_epoch is 1-based)."""

    def on_batch(self, progress: BatchProgress) -> None:
        """Called after every training batch."""

    def on_epoch(self, record: EpochRecord) -> None:
        """Called after the epoch's last.pt is saved; on resume, again for every epoch already done."""

    def early_stop_reason(self, record: EpochRecord) -> str | None:
        """Asked after every epoch but the last, before it is saved: a reason (the sweep's median rule)
        ends the run there, normally."""
        return None

    def on_stopped_early(self, epoch: int, reason: str) -> None:
        """Called once at the end of a run that stopped before its last epoch (patience or early_stop_reason)."""

    def on_checkpoint(self, run_folder: Path, checkpoint: dict[str, Any]) -> None:
        """Called once per epoch run, after its last.pt (and best.pt) are saved, with that checkpoint."""


class PredictionObserver(RunObserver):
    """Progress callback of an evaluation or prediction. Optional."""

    def on_progress(self, progress: PredictionProgress) -> None:
        """Called after every scored batch."""
