"""The operating threshold of evaluate and predict: an image is called ALL when P(ALL) >= threshold.

Where it comes from, in order: given (`threshold`), chosen now on the valid split (`threshold_from:
valid`: Youden's J, or the highest threshold reaching a target sensitivity) and recorded in the
checkpoint under `operating_threshold` when the caller says it may, recorded in the checkpoint by an
earlier choice, or DEFAULT_THRESHOLD. evaluation.json and prediction.json say which (results.Threshold)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.common.errors import UserInputError
from core.engine.data.layouts import Sample
from core.engine.data.splits import read_named_split
from core.engine.evaluation.clinical import choose_threshold
from core.engine.evaluation.results import Threshold
from core.engine.model.checkpoint import load_checkpoint, save_checkpoint, training_seed
from core.engine.params import OperatingPointParams

DEFAULT_THRESHOLD = 0.5
THRESHOLD_KEY = "operating_threshold"  # in a checkpoint: {value, method, target_sensitivity, chosen_on}
VALID_SPLIT = "valid"  # core.engine.data.splits: valid.csv of a lab folder, the subject-disjoint share of a release
# Writes a threshold chosen now ({value, method, target_sensitivity, chosen_on}) into a checkpoint:
# record_threshold itself on the command line; a queued job's writer audits the write with it.
ThresholdWriter = Callable[[Path, dict[str, Any]], None]


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
            recorded["value"],
            "recorded",
            method=recorded["method"],
            target=recorded["target_sensitivity"],
            chosen_on=recorded["chosen_on"],
            description=f"recorded in {checkpoints[0].name}: {_how(recorded['method'], recorded['target_sensitivity'])} "
            f"on {recorded['chosen_on']}",
        )
    why = "an ensemble records no threshold" if len(checkpoints) > 1 else "none recorded in the checkpoint"
    return _threshold(DEFAULT_THRESHOLD, "default", description=f"default {DEFAULT_THRESHOLD} ({why})")


def _choose_on_valid(
    params: OperatingPointParams,
    checkpoints: list[Path],
    data_dir: Path,
    valid_probabilities: Callable[[list[Sample]], np.ndarray],
    write_threshold: ThresholdWriter | None,
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
        write_threshold(
            checkpoints[0],
            {"value": value, "method": method, "target_sensitivity": params.target_sensitivity, "chosen_on": chosen_on},
        )
        recorded_in = str(checkpoints[0])
    elif len(checkpoints) == 1:
        kept = f"; kept with this run, not recorded in {checkpoints[0].name}"
    description = f"chosen now: {_how(method, params.target_sensitivity)} on {chosen_on}{kept}"
    return _threshold(
        value,
        "valid",
        method=method,
        target=params.target_sensitivity,
        chosen_on=chosen_on,
        recorded_in=recorded_in,
        description=description,
    )


def _how(method: str, target: float | None) -> str:
    return "Youden's J" if method == "youden" else f"highest threshold with sensitivity >= {target:g}"


def _threshold(
    value: float,
    source: str,
    *,
    method: str | None = None,
    target: float | None = None,
    chosen_on: str | None = None,
    recorded_in: str | None = None,
    description: str,
) -> dict[str, Any]:
    return Threshold(
        value=value,
        source=source,
        method=method,
        target_sensitivity=target,
        chosen_on=chosen_on,
        recorded_in=recorded_in,
        description=description,
    ).model_dump()


def record_threshold(checkpoint_path: Path, threshold: dict[str, Any]) -> None:
    """Write the chosen threshold into the checkpoint (atomically), for later evaluate and predict runs."""
    checkpoint = load_checkpoint(checkpoint_path)
    checkpoint[THRESHOLD_KEY] = threshold
    save_checkpoint(checkpoint, checkpoint_path)
