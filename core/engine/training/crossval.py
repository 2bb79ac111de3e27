"""Cross-validation: which folds (the release's when they are subject-disjoint, else K subject-grouped
folds), each fold's training parameters, its out-of-fold predictions, and the summary over folds
(mean ± std of accuracy, balanced accuracy and weighted F1, the challenge's metric), built with pandas
from each fold's best epoch and the out-of-fold predictions (oof.csv).

The same functions serve `leukemia cv` (folds trained one after another in this process) and the
queued kind (one training job per fold, run by as many workers as there are)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from core.common.atomic import write_text_atomic
from core.common.errors import UserInputError
from core.common.formats import percent
from core.engine.data.layouts import data_folder
from core.engine.data.release import find_release
from core.engine.data.splits import release_folds_disjoint, require_subject_folds, training_splits
from core.engine.evaluation.scores import classification_scores, subject_table
from core.engine.run_folder.layout import OOF_CSV
from core.engine.run_folder.resolver import resolve_checkpoint
from core.engine.run_folder.spreadsheet_csv import frame_rows, read_csv_frame, write_csv

OOF_FLOAT_FORMAT = "%.6f"  # oof.csv's probabilities
SUMMARY_METRICS = ("accuracy", "balanced_accuracy", "weighted_f1")
DEFAULT_FOLDS = 3


@dataclass(frozen=True)
class FoldPlan:
    """One fold: train on `split`, validate (and predict out of fold) on `valid_split`."""

    fold: int
    split: str
    valid_split: str


@dataclass(frozen=True)
class CrossValidationPlan:
    scheme: str  # in words, for the page and the summary
    folds: list[FoldPlan]

    def to_dict(self) -> dict[str, Any]:
        return {"scheme": self.scheme, "folds": [asdict(f) for f in self.folds]}


def plan_folds(data_dir: Path | str, folds: int | None, seed: int, *, release_folds: bool = False) -> CrossValidationPlan:
    """The release's own folds when they are subject-disjoint and folds is not set to another count;
    else `folds` (default 3) subject-grouped folds of the training images, seeded.
    release_folds=True demands the release's folds and refuses folds that share a subject."""
    folder = data_folder(data_dir)
    release = find_release(folder)
    if folds is not None and not 2 <= folds <= 20:
        raise UserInputError(f"folds: must be between 2 and 20, got {folds}", field="folds")
    if release is not None and len(release.folds) >= 2 and (folds is None or folds == len(release.folds)):
        shared = release_folds_disjoint(release)
        if not shared:
            numbers = sorted(release.folds)
            plans = [FoldPlan(k, "folds:" + ",".join(str(n) for n in numbers if n != k), f"fold:{k}") for k in numbers]
            return CrossValidationPlan(f"the release's {len(numbers)} folds (subject-disjoint)", plans)
        if release_folds:
            subject, names = next(iter(shared.items()))
            raise UserInputError(
                f"folds: the release's folds are not subject-disjoint: subject {subject} is in {' and '.join(names)} "
                f"({len(shared)} such subject(s)); leave out --release-folds for subject-grouped folds",
                field="folds",
            )
    elif release_folds:
        raise UserInputError(f"folds: {folder} has no release folds (training_data/fold_N) to use", field="folds")
    k = folds or DEFAULT_FOLDS
    require_subject_folds(folder, k, seed)
    plans = [FoldPlan(i, f"kfold:{k}:" + ",".join(str(n) for n in range(k) if n != i), f"kfold:{k}:{i}") for i in range(k)]
    return CrossValidationPlan(f"{k} subject-grouped folds (seed {seed})", plans)


def fold_params(base: dict[str, Any], plan: FoldPlan) -> dict[str, Any]:
    """The train parameters of one fold: the shared ones with the fold's splits."""
    return {**base, "split": plan.split, "valid_split": plan.valid_split}


def write_out_of_fold(run_folder: Path, params: Any, fold: int, *, observer: Any = None) -> Path:
    """Predict the fold's validation split with its best.pt and write oof.csv into the run folder."""
    from core.engine.evaluation.predict import ensemble_probabilities

    _, valid = training_splits(params.data_dir, params.split, params.valid_split, params.seed)
    if not valid:
        raise UserInputError(f"fold {fold}: no validation split to predict out of fold")
    probabilities = ensemble_probabilities(
        [resolve_checkpoint(run_folder, "best")], valid, tta=False, batch_size=64, device=params.device, observer=observer
    )
    frame = pd.DataFrame(
        {
            "ID": [s.id for s in valid],
            "subject": [s.subject for s in valid],
            "label": [s.label for s in valid],
            "prob_1": probabilities,
            "fold": fold,
        }
    )
    path = Path(run_folder) / OOF_CSV
    write_csv(path, list(frame.columns), frame_rows(frame, OOF_FLOAT_FORMAT))
    return path


def fold_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Each fold's best epoch (highest valid accuracy, the checkpoint best.pt keeps): fold, epoch and metrics.
    rows: one per epoch, with fold, epoch, valid_accuracy, valid_balanced_accuracy, valid_f1."""
    columns = ["fold", "epoch", *SUMMARY_METRICS]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = (
        pd.DataFrame(rows)
        .rename(columns={"valid_accuracy": "accuracy", "valid_balanced_accuracy": "balanced_accuracy", "valid_f1": "weighted_f1"})
        .dropna(subset=["accuracy"])
    )
    best = frame.sort_values(["fold", "accuracy", "epoch"], ascending=[True, False, True]).groupby("fold").head(1)
    return best[columns].sort_values("fold").reset_index(drop=True)


def mean_std(table: pd.DataFrame) -> dict[str, dict[str, float | None]]:
    """Mean and sample standard deviation (n-1) over folds; std is None with one fold."""
    result = {}
    for metric in SUMMARY_METRICS:
        values = table[metric].astype(float)
        result[metric] = {
            "mean": float(values.mean()) if len(values) else None,
            "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        }
    return result


def out_of_fold(frames: list[pd.DataFrame]) -> dict[str, Any] | None:
    """Metrics and the subject table of all folds' out-of-fold predictions together (each image once)."""
    if not frames:
        return None
    oof = pd.concat(frames, ignore_index=True)
    predictions = (oof["prob_1"].to_numpy() >= 0.5).astype(np.int64)
    metrics = classification_scores(oof["label"].to_numpy(), predictions)
    subjects = subject_table(
        oof["subject"].where(oof["subject"].notna(), None).tolist(), oof["label"].tolist(), oof["prob_1"].tolist()
    )
    return {**metrics, "subjects": subjects.to_dict(orient="records")}


def summarize(epoch_rows: list[dict[str, Any]], oof_frames: list[pd.DataFrame]) -> dict[str, Any]:
    """The summary a person reads: the fold table, mean ± std per metric, the out-of-fold metrics."""
    table = fold_table(epoch_rows)
    return {
        "folds": table.to_dict(orient="records"),
        "mean_std": mean_std(table),
        "out_of_fold": out_of_fold(oof_frames),
    }


def run_cross_validation(
    base: dict[str, Any],
    plan: CrossValidationPlan,
    out_dir: Path,
    *,
    observer_for: Callable[[int], Any] | None = None,
) -> dict[str, Any]:
    """Train every fold in this process (out_dir/fold_N), write each fold's oof.csv, then summary.json and oof.csv."""
    from core.engine.params import parse_params
    from core.engine.training.loop import train

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise UserInputError(f"out: {out_dir} exists and is not empty", field="out")
    rows: list[dict[str, Any]] = []
    frames = []
    for fold in plan.folds:
        params = parse_params("train", fold_params(base, fold))
        run_folder = out_dir / f"fold_{fold.fold}"
        result = train(params, run_folder, observer=observer_for(fold.fold) if observer_for else None)
        rows += [{"fold": fold.fold, **record.model_dump()} for record in result.history]
        frames.append(read_csv_frame(write_out_of_fold(run_folder, params, fold.fold)))
    summary = {**plan.to_dict(), **summarize(rows, frames)}
    write_text_atomic(out_dir / "summary.json", json.dumps(summary, indent=2))
    together = pd.concat(frames, ignore_index=True)
    write_csv(out_dir / OOF_CSV, list(together.columns), frame_rows(together, OOF_FLOAT_FORMAT))
    return summary


def describe_summary(summary: dict[str, Any]) -> list[str]:
    """The summary as lines: one per fold, then mean ± std, then the out-of-fold metrics."""
    lines = [f"scheme: {summary['scheme']}"] if "scheme" in summary else []
    for row in summary["folds"]:
        lines.append(
            f"fold {row['fold']}: best epoch {row['epoch']}: "
            + ", ".join(f"{name} {percent(row[name])}" for name in SUMMARY_METRICS)
        )
    for name, value in summary["mean_std"].items():
        if value["mean"] is not None:
            spread = "" if value["std"] is None else f" ± {percent(value['std'])}"
            lines.append(f"{name}: {percent(value['mean'])}{spread} (mean ± std over folds)")
    oof = summary.get("out_of_fold")
    if oof:
        lines.append(f"out of fold ({oof['count']} images): " + ", ".join(f"{n} {percent(oof[n])}" for n in SUMMARY_METRICS))
    return lines
