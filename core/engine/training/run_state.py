"""What a run must carry across a stop to resume exactly: every RNG, the optimizer and schedule,
the history so far; captured into the checkpoint dict after each epoch and restored from last.pt
(`capture_checkpoint`, `restore_checkpoint`; the keys are listed in core.engine.model.checkpoint).
`RunLog` keeps the best epoch by the chosen metric, the patience counter and an early stop."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.engine.model.checkpoint import CHECKPOINT_FORMAT
from core.engine.params import TrainParams
from core.engine.progress import EpochRecord
from core.engine.training.early_stopping import better, patience_reason


@dataclass
class StartState:
    """Where a run starts: fresh weights, finetune source weights, or a last.pt to resume."""

    model: nn.Module
    mean: list[float]
    std: list[float]
    checkpoint: dict[str, Any] | None = None


@dataclass
class RunLog:
    """The epochs done so far, which was best and whether the run stopped early.

    "Best" follows params.early_stopping_metric when early stopping is on (valid_loss: lowest),
    else valid_accuracy; without a validation split every epoch is the best. The patience counter
    (bad_epochs) and an early stop are saved in last.pt, so a resumed run counts on."""

    history: list[EpochRecord] = field(default_factory=list)
    metric: str = "valid_accuracy"
    min_delta: float = 0.0
    patience: int | None = None  # None: early stopping is off
    epochs: int = 0  # the run's planned epochs: stopping at the last one is not early
    best_value: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the best one, by metric and min_delta
    stopped_epoch: int | None = None
    stop_reason: str | None = None

    @classmethod
    def for_params(cls, params: TrainParams) -> "RunLog":
        if params.early_stopping_metric is None:
            return cls(epochs=params.epochs)
        return cls(
            metric=params.early_stopping_metric, min_delta=params.min_delta, patience=params.patience, epochs=params.epochs
        )

    @property
    def best_accuracy(self) -> float | None:
        """The best epoch's validation accuracy (whatever metric chose it)."""
        return next((r.valid_accuracy for r in self.history if r.epoch == self.best_epoch), None)

    def add(self, record: EpochRecord) -> None:
        """Append an epoch, update the best and the patience counter; stop when patience runs out before the last epoch."""
        self.history.append(record)
        value = getattr(record, self.metric)
        if value is None:  # no validation (every epoch is the best) or an undefined metric (not an improvement)
            improved = self.patience is None or self.best_epoch is None
        else:
            improved = self.best_value is None or better(self.metric, value, self.best_value, self.min_delta)
        if improved:
            self.best_value, self.best_epoch, self.bad_epochs = value, record.epoch, 0
        else:
            self.bad_epochs += 1
        if self.patience is not None and self.bad_epochs >= self.patience and record.epoch < self.epochs:
            self.stop(record.epoch, patience_reason(self.metric, self.patience, record.epoch, self.best_value, self.best_epoch))

    def stop(self, epoch: int, reason: str) -> None:
        """End the run after `epoch` (patience, or the sweep's median rule through the observer)."""
        if self.stopped_epoch is None:
            self.stopped_epoch, self.stop_reason = epoch, reason

    def state(self) -> dict[str, Any]:
        """What last.pt keeps of the log besides the history."""
        return {
            "metric": self.metric,
            "best_value": self.best_value,
            "bad_epochs": self.bad_epochs,
            "stopped_epoch": self.stopped_epoch,
            "stop_reason": self.stop_reason,
        }


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def floats(values: Any) -> list[float]:
    """A tensor, array or sequence as a list of Python floats (weights_only-safe)."""
    return [float(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]


def rng_state() -> dict[str, Any]:
    """Every RNG as tensors, lists and numbers, so the checkpoint stays weights_only-safe."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
        "python": [version, list(python_state), python_gauss],
    }


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, position, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    version, python_state, python_gauss = state["python"]
    random.setstate((version, tuple(python_state), python_gauss))


def capture_checkpoint(
    params: TrainParams,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epoch: int,
    start: StartState,
    log: RunLog,
) -> dict[str, Any]:
    """The checkpoint dict after `epoch`: weights, optimizer, schedule, RNGs, params and history."""
    return {
        "format": CHECKPOINT_FORMAT,
        "arch": params.arch,
        "num_classes": 2,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": None,  # bf16 autocast needs no gradient scaler
        "epoch": epoch,
        "rng": rng_state(),
        "params": params.model_dump(),
        "mean": start.mean,
        "std": start.std,
        "image_size": params.image_size,
        "best_accuracy": log.best_accuracy,
        "best_epoch": log.best_epoch,
        "early_stopping": log.state(),
        "history": [r.model_dump() for r in log.history],
    }


def restore_checkpoint(checkpoint: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any, log: RunLog) -> int:
    """Load optimizer, schedule, RNGs and history from last.pt; returns the completed epoch count."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    restore_rng(checkpoint["rng"])
    log.history = [EpochRecord.model_validate(row) for row in checkpoint["history"]]
    log.best_epoch = checkpoint.get("best_epoch")
    saved = checkpoint.get("early_stopping") or {"best_value": checkpoint["best_accuracy"]}  # before early stopping
    log.best_value = saved["best_value"]
    log.bad_epochs = int(saved.get("bad_epochs", 0))
    log.stopped_epoch, log.stop_reason = saved.get("stopped_epoch"), saved.get("stop_reason")
    return int(checkpoint["epoch"])
