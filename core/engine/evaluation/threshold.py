"""What evaluate and predict write besides the headline metrics: the operating threshold (chosen,
recorded, used), the per-image table, the clinical report and its plots, the probability
histogram, and Grad-CAM overlays of selected images (a folder and a zip).

Files in the output folder:
- evaluate: per_image.csv (ID, subject, true_label, prob_all, predicted, correct, explanation),
  roc.png, pr.png, calibration.png, probabilities.png; evaluation.json gains `threshold`,
  `clinical` (core.engine.evaluation.clinical.clinical_report) and `explained`.
- predict: prediction.json (threshold, class counts, histogram, first rows), probabilities.png.
- both, when asked: explanations/ with one PNG per explained image, explanations.csv listing
  them (why each was chosen) and explanations.zip holding both."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.common.errors import UserInputError
from core.engine.data.layouts import Sample
from core.engine.data.splits import read_named_split
from core.engine.evaluation.clinical import choose_threshold, clinical_report
from core.engine.evaluation.explain import CONVENTION, explain_samples, write_zip
from core.engine.evaluation.plots import plot_calibration, plot_histogram, plot_precision_recall, plot_roc
from core.engine.evaluation.results import PredictionSummary, Threshold
from core.engine.model.checkpoint import load_checkpoint, save_checkpoint, training_seed
from core.engine.params import OperatingPointParams
from core.engine.run_folder.layout import (
    CALIBRATION_PNG,
    EXPLANATIONS_CSV,
    EXPLANATIONS_ZIP,
    HISTOGRAM_PNG,
    PER_IMAGE_CSV,
    PR_PNG,
    ROC_PNG,
)
from core.engine.run_folder.spreadsheet_csv import write_csv

DEFAULT_THRESHOLD = 0.5
THRESHOLD_KEY = "operating_threshold"  # in a checkpoint: {value, method, target_sensitivity, chosen_on}
VALID_SPLIT = "valid"  # core.engine.data.splits: valid.csv of a lab folder, the subject-disjoint share of a release
EXPLANATIONS_DIR = "explanations"
HISTOGRAM_BINS = 20
FIRST_ROWS = 10
# Writes a threshold chosen now ({value, method, target_sensitivity, chosen_on}) into a checkpoint:
# record_threshold itself on the command line; a queued job's writer audits the write with it.
ThresholdWriter = Callable[[Path, dict[str, Any]], None]


# ---------------------------------------------------------------- the operating threshold


def resolve_threshold(
    params: OperatingPointParams,
    checkpoints: list[Path],
    data_dir: Path,
    valid_probabilities: Callable[[list[Sample]], np.ndarray],
    *,
    write_threshold: ThresholdWriter | None,
) -> dict[str, Any]:
    """The threshold to use and where it came from, as recorded in the job's JSON:
    {value, source (given | valid | recorded | default), method, target_sensitivity, chosen_on, recorded_in, description}.

    write_threshold: how a threshold chosen now is written into the (single) checkpoint, or None when it
    may not be. The caller decides (a queued job: core.service.thresholds, the model's owner or an admin,
    the write audited with it); when it may not, the threshold is still used and kept in this run's own
    results only."""
    if params.threshold is not None:
        return _threshold(params.threshold, "given", description=f"given ({params.threshold:g})")
    if params.threshold_from == "valid":
        return _choose_on_valid(params, checkpoints, data_dir, valid_probabilities, write_threshold)
    recorded = load_checkpoint(checkpoints[0]).get(THRESHOLD_KEY) if len(checkpoints) == 1 else None
    if recorded:
        return _threshold(
            recorded["value"], "recorded", method=recorded["method"], target=recorded["target_sensitivity"],
            chosen_on=recorded["chosen_on"],
            description=f"recorded in {checkpoints[0].name}: {_how(recorded['method'], recorded['target_sensitivity'])} "
                        f"on {recorded['chosen_on']}",
        )  # fmt: skip
    why = "an ensemble records no threshold" if len(checkpoints) > 1 else "none recorded in the checkpoint"
    return _threshold(DEFAULT_THRESHOLD, "default", description=f"default {DEFAULT_THRESHOLD} ({why})")


def _choose_on_valid(
    params: OperatingPointParams, checkpoints: list[Path], data_dir: Path,
    valid_probabilities: Callable[[list[Sample]], np.ndarray], write_threshold: ThresholdWriter | None,
) -> dict[str, Any]:
    try:
        samples = read_named_split(data_dir, VALID_SPLIT, labelled=True, seed=training_seed(checkpoints[0]))
    except UserInputError as error:
        raise UserInputError(f"threshold_from: {error}", field="threshold_from") from None
    method = "sensitivity" if params.target_sensitivity is not None else "youden"
    value = choose_threshold([s.label for s in samples], valid_probabilities(samples), method, params.target_sensitivity)
    chosen_on = f"the {VALID_SPLIT} split ({len(samples)} images)"
    recorded_in, kept = None, ""
    if len(checkpoints) == 1 and write_threshold is not None:  # an ensemble's threshold belongs to no single checkpoint
        write_threshold(checkpoints[0], {"value": value, "method": method,
                                         "target_sensitivity": params.target_sensitivity, "chosen_on": chosen_on})
        recorded_in = str(checkpoints[0])
    elif len(checkpoints) == 1:
        kept = f"; kept with this run, not recorded in {checkpoints[0].name}"
    description = f"chosen now: {_how(method, params.target_sensitivity)} on {chosen_on}{kept}"
    return _threshold(value, "valid", method=method, target=params.target_sensitivity, chosen_on=chosen_on,
                      recorded_in=recorded_in, description=description)


def _how(method: str, target: float | None) -> str:
    return "Youden's J" if method == "youden" else f"highest threshold with sensitivity >= {target:g}"


def _threshold(value: float, source: str, *, method: str | None = None, target: float | None = None,
               chosen_on: str | None = None, recorded_in: str | None = None, description: str) -> dict[str, Any]:
    return Threshold(value=value, source=source, method=method, target_sensitivity=target, chosen_on=chosen_on,
                     recorded_in=recorded_in, description=description).model_dump()


def record_threshold(checkpoint_path: Path, threshold: dict[str, Any]) -> None:
    """Write the chosen threshold into the checkpoint (atomically), for later evaluate and predict runs."""
    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint[THRESHOLD_KEY] = threshold
    save_checkpoint(checkpoint, checkpoint_path)


# ---------------------------------------------------------------- which images to explain


def select_for_explanation(
    probabilities: np.ndarray, threshold: float, truth: np.ndarray | None, count: int | None
) -> list[tuple[int, str]]:
    """(index, why) of the images to explain: all of them (count None), or the `count` most confident
    mistakes (labelled sets) and the `count` least confident images; confidence = |P(ALL) - threshold|."""
    if count is None:
        return [(i, "all") for i in range(len(probabilities))]
    if count == 0:
        return []
    margin = np.abs(probabilities - threshold)
    chosen: list[tuple[int, str]] = []
    if truth is not None:
        wrong = np.flatnonzero((probabilities >= threshold).astype(int) != truth)
        chosen += [(int(i), "confident mistake") for i in wrong[np.argsort(-margin[wrong], kind="stable")][:count]]
    taken = {i for i, _ in chosen}
    uncertain = [int(i) for i in np.argsort(margin, kind="stable") if int(i) not in taken][:count]
    return chosen + [(i, "least confident") for i in uncertain]


def write_explanations(
    out_dir: Path, checkpoint: Path, samples: list[Sample], probabilities: np.ndarray, threshold: float,
    selection: list[tuple[int, str]], *, batch_size: int, device: torch.device,
) -> dict[int, str]:
    """Overlay PNGs of the selected images into out_dir/explanations and explanations.zip; returns index → file name."""
    if not selection:
        return {}
    chosen = [samples[i] for i, _ in selection]
    pictures = explain_samples(checkpoint, chosen, batch_size=batch_size, device=device)
    folder = out_dir / EXPLANATIONS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    names, files, rows = {}, {}, []
    for (index, why), picture in zip(selection, pictures):
        name = f"{index:05d}_{_safe_name(samples[index].id)}.png"
        (folder / name).write_bytes(picture)
        names[index], files[name] = name, picture
        true_label = "" if samples[index].label is None else samples[index].label
        rows.append([name, samples[index].id, why, f"{probabilities[index]:.6f}",
                     int(probabilities[index] >= threshold), true_label])
    listing = write_csv(out_dir / EXPLANATIONS_CSV, ["file", "ID", "why", "prob_all", "predicted", "true_label"], rows)
    files[EXPLANATIONS_CSV] = listing.encode()
    files["README.txt"] = (CONVENTION + f"\nExplained with {checkpoint.name}.\n").encode()
    write_zip(files, out_dir / EXPLANATIONS_ZIP)
    return names


def _safe_name(sample_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(sample_id).stem)[:80]


# ---------------------------------------------------------------- evaluate and predict outputs


def subjects_of(samples: list[Sample]) -> list[str] | None:
    """The subject (patient) of every image when each is known, else None (intervals then resample images)."""
    subjects = [s.subject for s in samples]
    return None if any(subject is None for subject in subjects) else subjects  # type: ignore[return-value]


def write_evaluation_outputs(
    out_dir: Path, samples: list[Sample], probabilities: np.ndarray, threshold: dict[str, Any],
    explained: dict[int, str],
) -> dict[str, Any]:
    """per_image.csv, the clinical report's plots and the histogram; returns the clinical report."""
    truth = np.array([s.label for s in samples])
    subjects = subjects_of(samples)
    report = clinical_report(truth, probabilities, threshold["value"], threshold_source=threshold["description"],
                             subjects=subjects)
    predicted = (probabilities >= threshold["value"]).astype(int)
    write_csv(out_dir / PER_IMAGE_CSV, ["ID", "subject", "true_label", "prob_all", "predicted", "correct", "explanation"],
              [[sample.id, subjects[index] if subjects else "", sample.label, f"{probabilities[index]:.6f}",
                predicted[index], int(predicted[index] == sample.label), explained.get(index, "")]
               for index, sample in enumerate(samples)])
    plot_roc(report, out_dir / ROC_PNG)
    plot_precision_recall(report, out_dir / PR_PNG)
    plot_calibration(report, out_dir / CALIBRATION_PNG)
    histogram(probabilities, threshold["value"], out_dir)
    return report


def histogram(probabilities: np.ndarray, threshold: float, out_dir: Path) -> dict[str, list]:
    """Counts of P(ALL) in HISTOGRAM_BINS equal bins, drawn to probabilities.png."""
    counts, edges = np.histogram(probabilities, bins=HISTOGRAM_BINS, range=(0.0, 1.0))
    plot_histogram(edges.tolist(), counts.tolist(), threshold, out_dir / HISTOGRAM_PNG)
    return {"edges": [round(e, 6) for e in edges.tolist()], "counts": counts.tolist()}


def prediction_summary(
    samples: list[Sample], probabilities: np.ndarray, threshold: dict[str, Any], out_dir: Path, explained: int,
    **scored: Any,
) -> dict[str, Any]:
    """What a predict job shows: class counts, the histogram, the first rows and the threshold used."""
    labels = (probabilities >= threshold["value"]).astype(int)
    return PredictionSummary.model_validate({
        "count": len(samples),
        "class_counts": {"hem": int((labels == 0).sum()), "all": int(labels.sum())},
        "histogram": histogram(probabilities, threshold["value"], out_dir),
        "first_rows": [{"ID": s.id, "label": int(label), "prob_all": round(float(p), 6)}
                       for s, label, p in list(zip(samples, labels, probabilities))[:FIRST_ROWS]],
        "threshold": threshold,
        "explained": explained,
        "explanation_convention": CONVENTION if explained else None,
        **scored,
    }).model_dump()
