"""Early stopping within a run: patience on one validation metric (a sweep's median stopping rule,
which reads other jobs' rows, is the service's: core.service.sweep_stopping). Here: the metrics it may
follow and their direction, and the line a patience stop ends with.

Patience lives in the run (core.engine.training.run_state.RunLog follows the chosen metric, so best.pt and the
counter are part of last.pt and survive a resume)."""

from __future__ import annotations

import typing
from typing import Literal

EarlyStoppingMetric = Literal["valid_accuracy", "valid_balanced_accuracy", "valid_f1", "valid_roc_auc", "valid_loss"]
EARLY_STOPPING_METRICS: tuple[str, ...] = typing.get_args(EarlyStoppingMetric)
LOWER_IS_BETTER = {"valid_loss"}
DEFAULT_PATIENCE = 3


def better(metric: str, value: float, than: float, min_delta: float = 0.0) -> bool:
    """Whether value improves on `than` by more than min_delta (lower for a loss, higher otherwise)."""
    if metric in LOWER_IS_BETTER:
        return value < than - min_delta
    return value > than + min_delta


def patience_reason(metric: str, patience: int, epoch: int, best_value: float | None, best_epoch: int | None) -> str:
    """The line a run stopped by patience reports (CLI, metrics.json, the job row)."""
    best = "no value" if best_value is None else f"{best_value:.4g}"
    return (
        f"stopped early at epoch {epoch}: {metric} did not improve for {patience} epoch{'s' if patience > 1 else ''} "
        f"(best {best} at epoch {best_epoch})"
    )
