"""What a run must carry across a stop to resume exactly: every RNG, the optimizer and schedule,
the history so far; captured into the checkpoint dict after each epoch and restored from last.pt.
(The checkpoint's keys are listed in docs/architecture.md, "Checkpoints".)"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from core.checkpoint import CHECKPOINT_FORMAT
from core.params import TrainParams
from core.progress import EpochRecord


@dataclass
class StartState:
    """Where a run starts: fresh weights, finetune source weights, or a last.pt to resume."""

    model: nn.Module
    mean: list[float]
    std: list[float]
    checkpoint: dict[str, Any] | None = None


@dataclass
class RunLog:
    """The epochs done so far and which was best (by validation accuracy)."""

    history: list[EpochRecord] = field(default_factory=list)
    best_accuracy: float | None = None
    best_epoch: int | None = None

    def add(self, record: EpochRecord) -> None:
        """Append an epoch; it is the best when it beats the best so far (every epoch is, without validation)."""
        self.history.append(record)
        if record.valid_accuracy is None or self.best_accuracy is None or record.valid_accuracy > self.best_accuracy:
            self.best_accuracy, self.best_epoch = record.valid_accuracy, record.epoch


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
    params: TrainParams, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, epoch: int,
    start: StartState, log: RunLog,
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
        "history": [r.model_dump() for r in log.history],
    }


def restore_checkpoint(
    checkpoint: dict[str, Any], optimizer: torch.optim.Optimizer, scheduler: Any, log: RunLog
) -> int:
    """Load optimizer, schedule, RNGs and history from last.pt; returns the completed epoch count."""
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    restore_rng(checkpoint["rng"])
    log.history = [EpochRecord.model_validate(row) for row in checkpoint["history"]]
    log.best_accuracy = checkpoint["best_accuracy"]
    log.best_epoch = checkpoint.get("best_epoch")
    return int(checkpoint["epoch"])
