"""A run folder's metrics.json (params, best epoch, every epoch) and metrics.csv (one row per
epoch, the confusion matrix as four columns), rewritten whole and atomically after each epoch."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from core.common.atomic import write_text_atomic
from core.engine.params import TrainParams
from core.engine.progress import EpochRecord
from core.engine.run_folder.layout import METRICS_CSV, METRICS_JSON

CONFUSION_COLUMNS = ["valid_tn", "valid_fp", "valid_fn", "valid_tp"]


def write_metrics(
    run_folder: Path,
    params: TrainParams,
    history: list[EpochRecord],
    best_epoch: int | None,
    *,
    best_metric: str = "valid_accuracy",
    stopped_epoch: int | None = None,
    stop_reason: str | None = None,
) -> None:
    """Rewrite metrics.json and metrics.csv from the whole history (and, for an early stop, when and why)."""
    rows = [record.model_dump() for record in history]
    summary = {
        "params": params.model_dump(),
        "best_epoch": best_epoch,
        "best_metric": best_metric,
        "stopped_epoch": stopped_epoch,
        "stop_reason": stop_reason,
        "history": rows,
    }
    write_text_atomic(run_folder / METRICS_JSON, json.dumps(summary, indent=2))
    write_text_atomic(run_folder / METRICS_CSV, metrics_csv(rows))


def metrics_csv(rows: list[dict]) -> str:
    """The CSV text: the epoch fields in EpochRecord's order, confusion flattened to tn, fp, fn, tp."""
    columns = [name for name in EpochRecord.model_fields if name != "confusion"] + CONFUSION_COLUMNS
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    for row in rows:
        confusion = row.pop("confusion")
        cells = [c for line in confusion for c in line] if confusion else [None] * 4
        writer.writerow({**row, **dict(zip(CONFUSION_COLUMNS, cells))})
    return buffer.getvalue()
