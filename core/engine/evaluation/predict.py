"""Evaluation on a labelled CSV and prediction (the submission CSV `ID,label`) on a test CSV,
with optional test-time augmentation (the 8 dihedral transforms) and checkpoint ensembles:
`evaluate_csv(params, *, out_dir, observer)` (with the per-subject table, subjects.csv) and
`predict_csv(params, out_path, *, observer)`. An ensemble's progress counts each image once per checkpoint."""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.common.atomic import open_atomic, write_text_atomic
from core.common.errors import UserInputError
from core.engine.data.layouts import Sample
from core.engine.data.splits import read_named_split
from core.engine.evaluation.clinical import clinical_report
from core.engine.evaluation.outputs import prediction_summary, subjects_of, write_evaluation_outputs
from core.engine.evaluation.scores import classification_scores, subject_table
from core.engine.evaluation.threshold import ThresholdWriter, record_threshold, resolve_threshold
from core.engine.inputs.pipeline import InputPipeline, flush_denormals_on_cpu, resolve_device
from core.engine.model.checkpoint import load_checkpoint, model_from_checkpoint, training_seed
from core.engine.params import EvaluateParams, PredictParams
from core.engine.progress import PredictionObserver, PredictionProgress, RunStopped
from core.engine.run_folder.layout import CONFUSION_CSV, CONFUSION_PNG, EVALUATION_JSON, PREDICTION_JSON, SUBJECTS_CSV
from core.engine.run_folder.resolver import resolve_checkpoint
from core.engine.run_folder.spreadsheet_csv import frame_rows, write_csv
from core.engine.settings import engine_settings


@dataclass
class EvaluationResult:
    """Scores of one checkpoint on a labelled CSV: accuracy, balanced_accuracy, weighted_f1, confusion, count,
    with the threshold, the per-subject rows and the clinical report."""

    checkpoint: Path
    csv_name: str
    scores: dict[str, Any]
    out_dir: Path | None


@dataclass
class PredictionResult:
    """Where the submission CSV went and how many rows (and predicted class-1 rows) it has."""

    out_path: Path
    count: int
    positives: int
    threshold: dict[str, Any]  # core.engine.evaluation.threshold.resolve_threshold: value, source, description, ...
    summary: dict[str, Any] | None  # prediction.json, when a report folder was given


def dihedral_views(images: Tensor) -> list[Tensor]:
    """The 8 rotations/flips of a NCHW batch: 4 quarter turns, each also mirrored."""
    turns = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    return turns + [torch.flip(view, dims=(3,)) for view in turns]


class ImageCounter:
    """Images scored so far across every checkpoint of a run, reported after each batch."""

    def __init__(self, observer: PredictionObserver, total: int) -> None:
        self.observer, self.total, self.done = observer, total, 0
        self.started = time.perf_counter()

    def add(self, count: int) -> None:
        self.done += count
        images_per_s = self.done / max(time.perf_counter() - self.started, 1e-9)
        eta_s = (self.total - self.done) / images_per_s
        self.observer.on_progress(PredictionProgress(self.done, self.total, images_per_s, eta_s))


def predict_probabilities(
    checkpoint_path: Path,
    samples: list[Sample],
    *,
    tta: bool = False,
    batch_size: int = 64,
    device: torch.device,
    observer: PredictionObserver | None = None,
    counter: ImageCounter | None = None,
) -> np.ndarray:
    """P(class 1) per sample, in the samples' order, with the checkpoint's own mean/std/image size."""
    observer = observer or PredictionObserver()
    counter = counter or ImageCounter(observer, len(samples))
    checkpoint = load_checkpoint(checkpoint_path)
    # On a GPU: bf16 and channels_last, as in training, and no copy back until the end (a
    # per-batch .cpu() would make the host wait for every batch).
    on_gpu = device.type == "cuda"
    model = model_from_checkpoint(checkpoint, checkpoint_path).to(device).eval()
    if on_gpu:
        model = model.to(memory_format=torch.channels_last)
    batches = InputPipeline(
        samples,
        image_size=int(checkpoint["image_size"]),
        batch_size=batch_size,
        mean=checkpoint["mean"],
        std=checkpoint["std"],
        device=device,
        augment=False,
        shuffle=False,
        seed=0,
        cache_dir=engine_settings().resolved_cache_dir,
        channels_last=on_gpu,
        single_pass=True,
        pad_last_batch=on_gpu,
    )
    collected: list[tuple[Tensor, Tensor]] = []
    with torch.inference_mode(), torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=on_gpu):
        for batch in batches:
            if observer.should_stop():
                raise RunStopped(f"prediction stopped on request after {counter.done} of {counter.total} images")
            collected.append((batch.indices, batch.real(_class_one_probability(model, batch.images, tta))))
            counter.add(len(batch.indices))
    probabilities = np.zeros(len(samples), dtype=np.float64)
    for indices, batch_probabilities in collected:
        probabilities[indices.numpy()] = batch_probabilities.cpu().numpy()
    return probabilities


def _class_one_probability(model: nn.Module, images: Tensor, tta: bool) -> Tensor:
    views = dihedral_views(images) if tta else [images]
    probabilities = torch.stack([torch.softmax(model(view).float(), dim=1) for view in views]).mean(dim=0)
    return probabilities[:, 1]


def ensemble_probabilities(
    checkpoints: list[Path],
    samples: list[Sample],
    *,
    tta: bool,
    batch_size: int,
    device: str,
    observer: PredictionObserver | None,
) -> np.ndarray:
    """Mean P(class 1) over the checkpoints (an ensemble; one checkpoint is a plain prediction)."""
    if not samples:
        raise UserInputError("csv: no rows to predict", field="csv")
    torch_device = resolve_device(device)
    observer = observer or PredictionObserver()
    counter = ImageCounter(observer, len(samples) * len(checkpoints))
    total = np.zeros(len(samples), dtype=np.float64)
    with flush_denormals_on_cpu(torch_device):
        for path in checkpoints:
            total += predict_probabilities(
                path,
                samples,
                tta=tta,
                batch_size=batch_size,
                device=torch_device,
                observer=observer,
                counter=counter,
            )
    return total / len(checkpoints)


def evaluate_csv(
    params: EvaluateParams,
    *,
    out_dir: Path | None = None,
    observer: PredictionObserver | None = None,
    write_threshold: ThresholdWriter | None = record_threshold,
) -> EvaluationResult:
    """Score params.checkpoint (file or run folder), or the mean of it and params.checkpoints (an ensemble),
    on a labelled CSV or named split at the operating threshold, with the clinical report; with out_dir
    also write JSON, the per-image CSV, subjects.csv, plots and Grad-CAM overlays (of the first checkpoint).
    write_threshold: see core.engine.evaluation.threshold.resolve_threshold (the command line's user owns the files:
    record_threshold writes them)."""
    if not params.checkpoint:
        raise UserInputError("checkpoint: give a run folder or .pt file (--checkpoint)", field="checkpoint")
    if out_dir is None and params.explain:
        raise UserInputError("explain: the heat maps need an output folder (--out)", field="explain")
    paths = [resolve_checkpoint(path, params.checkpoint_choice) for path in [params.checkpoint, *params.checkpoints]]
    checkpoint_path = paths[0]
    data_dir = Path(params.data_dir)
    samples = read_named_split(data_dir, params.csv, labelled=True, seed=training_seed(checkpoint_path))
    options = dict(tta=params.tta, batch_size=params.batch_size, device=params.device)
    probabilities = ensemble_probabilities(paths, samples, observer=observer, **options)
    threshold = resolve_threshold(
        params,
        paths,
        data_dir,
        lambda valid: ensemble_probabilities(paths, valid, observer=None, **options),
        write_threshold=write_threshold,
    )
    truth = np.array([s.label for s in samples])
    scores = classification_scores(truth, (probabilities >= threshold["value"]).astype(np.int64))
    scores["threshold"] = threshold
    subjects = subject_table([s.subject for s in samples], truth, probabilities, threshold["value"])
    scores["subjects"] = subjects.to_dict(orient="records")
    if out_dir is None:
        scores["clinical"] = clinical_report(
            truth, probabilities, threshold["value"], threshold_source=threshold["description"], subjects=subjects_of(samples)
        )
        return EvaluationResult(checkpoint_path, params.csv, scores, None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    explained, convention = _explain(out_dir, checkpoint_path, samples, probabilities, threshold["value"], truth, params)
    scores["clinical"] = write_evaluation_outputs(out_dir, samples, probabilities, threshold, explained)
    scores["explained"] = len(explained)
    scores["explanation_convention"] = convention
    _write_evaluation(out_dir, scores, paths, data_dir / params.csv, params.tta)
    if len(subjects):
        write_csv(out_dir / SUBJECTS_CSV, list(subjects.columns), frame_rows(subjects, "%.6g"))
    return EvaluationResult(checkpoint_path, params.csv, scores, out_dir)


def predict_csv(
    params: PredictParams,
    out_path: Path,
    *,
    observer: PredictionObserver | None = None,
    report_dir: Path | None = None,
    write_threshold: ThresholdWriter | None = record_threshold,
) -> PredictionResult:
    """Write `ID,label` (and `prob_1` on request) for every row of the test CSV, in its order, calling
    ALL at the operating threshold; with report_dir also prediction.json, the histogram and Grad-CAM overlays.
    write_threshold: see core.engine.evaluation.threshold.resolve_threshold (the command line's user owns the files:
    record_threshold writes them)."""
    if not params.checkpoints:
        raise UserInputError("checkpoints: give at least one checkpoint (several make an ensemble)", field="checkpoints")
    if report_dir is None and params.explain:
        raise UserInputError("explain: the heat maps need a report folder (--report)", field="explain")
    paths = [resolve_checkpoint(path, params.checkpoint_choice) for path in params.checkpoints]
    data_dir = Path(params.data_dir)
    samples = read_named_split(data_dir, params.csv, labelled=False, seed=training_seed(paths[0]))
    options = dict(tta=params.tta, batch_size=params.batch_size, device=params.device)
    class_one = ensemble_probabilities(paths, samples, observer=observer, **options)
    threshold = resolve_threshold(
        params,
        paths,
        data_dir,
        lambda valid: ensemble_probabilities(paths, valid, observer=None, **options),
        write_threshold=write_threshold,
    )
    labels = (class_one >= threshold["value"]).astype(np.int64)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The submission CSV keeps every ID exact, as a grader matches them (core.engine.run_folder.spreadsheet_csv says why).
    with open_atomic(out_path, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["ID", "label", "prob_1"] if params.probabilities else ["ID", "label"])
        for sample, label, probability in zip(samples, labels, class_one):
            writer.writerow([sample.id, int(label)] + ([f"{probability:.6f}"] if params.probabilities else []))
    summary = None
    if report_dir is not None:
        report_dir = Path(report_dir)
        report_dir.mkdir(parents=True, exist_ok=True)
        explained, convention = _explain(report_dir, paths[0], samples, class_one, threshold["value"], None, params)
        summary = prediction_summary(
            samples,
            class_one,
            threshold,
            report_dir,
            explained=len(explained),
            explanation_convention=convention,
            checkpoints=[str(p) for p in paths],
            csv=str(data_dir / params.csv),
            tta=params.tta,
        )
        write_text_atomic(report_dir / PREDICTION_JSON, json.dumps(summary, indent=2))
    return PredictionResult(out_path, len(samples), int(labels.sum()), threshold, summary)


def _explain(
    out_dir: Path,
    checkpoint: Path,
    samples: list[Sample],
    probabilities: np.ndarray,
    threshold: float,
    truth: np.ndarray | None,
    params: EvaluateParams | PredictParams,
) -> tuple[dict[int, str], str | None]:
    """Grad-CAM overlays of the images params.explain chooses (index → file name) and the convention they
    follow; ({}, None) when none is asked for. Grad-CAM and matplotlib are loaded only when a run explains."""
    if params.explain_count == 0:
        return {}, None
    from core.engine.evaluation.explain import CONVENTION, select_for_explanation, write_explanations

    selection = select_for_explanation(probabilities, threshold, truth, params.explain_count)
    explained = write_explanations(
        out_dir,
        checkpoint,
        samples,
        probabilities,
        threshold,
        selection,
        batch_size=params.batch_size,
        device=resolve_device(params.device),
    )
    return explained, CONVENTION if explained else None


def _write_evaluation(out_dir: Path, scores: dict[str, Any], checkpoints: list[Path], csv_path: Path, tta: bool) -> None:
    """evaluation.json (scores and what was scored), confusion.csv and confusion.png."""
    from core.engine.evaluation.plots import plot_confusion  # matplotlib: only to draw

    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "checkpoint": str(checkpoints[0]),
        "checkpoints": [str(path) for path in checkpoints],
        "csv": str(csv_path),
        "tta": tta,
        **scores,
    }
    write_text_atomic(out_dir / EVALUATION_JSON, json.dumps(summary, indent=2))
    with open_atomic(out_dir / CONFUSION_CSV, newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["true\\predicted", "0", "1"])
        for true_class, counts in enumerate(scores["confusion"]):
            writer.writerow([true_class, *counts])
    plot_confusion(scores["confusion"], out_dir / CONFUSION_PNG, f"{csv_path.name} ({scores['count']} images)")
