"""Checkpoints: one dict of plain values and tensors, written atomically and read back with
`torch.load(weights_only=True)`, so a checkpoint can never run code when it is opened.

Keys: `format` (1), `arch`, `num_classes`, `model` (state dict), `optimizer`, `scheduler`, `scaler`,
`epoch`, `rng` (torch, cuda, numpy, python), `params` (TrainParams dict), `mean`, `std` (per channel, on
the training split), `image_size`, `best_accuracy` (the best epoch's valid accuracy), `best_epoch`,
`early_stopping` (`metric`, `best_value`, `bad_epochs`, `stopped_epoch`, `stop_reason`: "best" follows the
early-stopping metric when it is on), `operating_threshold` (only once chosen: `value`, `method`,
`target_sensitivity`, `chosen_on`), `history`. last.pt holds all of it, for an exact resume; best.pt leaves
out the RESUME_ONLY_KEYS (optimizer, scheduler, scaler, rng): evaluate, predict and finetune need none, and
with Adam the optimizer state alone is twice the weights (resnet18: 134 → 45 MB).

`save_checkpoint` checks free disk first (a full disk is NoSpaceLeft); `load_checkpoint(path,
expected_arch=None)` makes anything unreadable or of the wrong architecture a UserInputError naming the file."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.common.atomic import open_atomic
from core.common.errors import NoSpaceLeft, UserInputError
from core.engine.model.limits import is_no_space, require_free_space, tensor_bytes
from core.engine.model.resnet import build_model

CHECKPOINT_FORMAT = 1
REQUIRED_KEYS = ("format", "arch", "num_classes", "model", "mean", "std", "image_size")
# What only an exact resume needs: last.pt keeps it, best.pt does not (the optimizer's state alone
# is twice the weights with Adam).
RESUME_ONLY_KEYS = ("optimizer", "scheduler", "scaler", "rng")


def save_checkpoint(checkpoint: dict[str, Any], path: Path) -> None:
    """Write atomically (core.common.atomic): a crash never leaves half a checkpoint.

    The disk must hold the checkpoint (its tensors' bytes) plus MIN_FREE_DISK_MB first; a disk that
    fills up during the write is the same one line, "no space left on device: <path>", and the
    previous file at `path` is kept either way."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    require_free_space(path, tensor_bytes(checkpoint))
    try:
        with open_atomic(path, "wb") as file:
            torch.save(checkpoint, file)
    except BaseException as error:
        if is_no_space(error):  # the disk filled up during the write: the previous file is kept
            raise NoSpaceLeft(path) from None
        raise


def without_resume_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint as evaluate, predict and finetune read it (weights, normalisation, architecture,
    params, history, any threshold), without the optimizer, schedule and RNG state of a resume."""
    return {key: value for key, value in checkpoint.items() if key not in RESUME_ONLY_KEYS}


def load_checkpoint(path: Path | str, expected_arch: str | None = None) -> dict[str, Any]:
    """Read a checkpoint of ours onto the CPU; unreadable, foreign or other-architecture files are user errors."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"checkpoint {path}: no such file")
    try:
        # torch warns about odd pickles (protocol 4, ...) before it refuses them: those lines
        # would break the one-line error, and the refusal below says all the user needs.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch.load fails on a damaged or foreign file in many ways; all are bad input
        raise UserInputError(
            f"checkpoint {path}: unreadable (corrupt, truncated, or not a weights-only PyTorch checkpoint)"
        ) from None
    if not isinstance(checkpoint, dict) or any(key not in checkpoint for key in REQUIRED_KEYS):
        raise UserInputError(f"checkpoint {path}: not a checkpoint of this service (keys missing)")
    if checkpoint["format"] != CHECKPOINT_FORMAT:
        raise UserInputError(f"checkpoint {path}: format {checkpoint['format']!r}, expected {CHECKPOINT_FORMAT}")
    if expected_arch is not None and checkpoint["arch"] != expected_arch:
        raise UserInputError(f"checkpoint {path}: architecture {checkpoint['arch']}, expected {expected_arch}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], path: Path | str) -> nn.Module:
    """Build the checkpoint's architecture and load its weights (on the CPU)."""
    try:
        model = build_model(checkpoint["arch"], num_classes=int(checkpoint["num_classes"]))
    except UserInputError as error:
        raise UserInputError(f"checkpoint {path}: {error}") from None
    try:
        model.load_state_dict(checkpoint["model"])
    except (RuntimeError, TypeError, AttributeError) as error:
        reason = str(error).splitlines()[0]
        raise UserInputError(f"checkpoint {path}: weights do not fit {checkpoint['arch']} ({reason[:160]})") from None
    return model


def training_seed(path: Path | str) -> int:
    """The seed the checkpoint's run was trained with. Seeded splits (a release's `valid` share,
    `kfold:K:N`) hold that run's held-out images only when drawn with this same seed."""
    return int((load_checkpoint(path).get("params") or {}).get("seed", 0))
