"""Limits checked before work, not after: a training job's device memory estimate (checked on the
worker against its device; at submit against the configured cap by core.service.quotas), its compute,
and free disk before a checkpoint is written.

The estimates are per architecture, measured on the CPU by `bench/memory_estimate.py` (torch 2.x,
fp32, from-scratch models of core.engine.model.resnet with 2 classes); see docs/queue.md, "Limits":
- PARAMETERS: counted from build_model(arch);
- ACTIVATION_BYTES_PER_PIXEL: bytes autograd saves for backward per image and per pixel of
  image_size², counted with saved-tensor hooks (the larger of the 64 px and 128 px figures; the
  figure falls slightly as images grow, so larger sizes are over-estimated a little);
- FORWARD_FLOPS_PER_PIXEL: FlopCounterMode over one forward pass, per image and per pixel."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.common.errors import NoSpaceLeft, UserInputError
from core.engine.settings import engine_settings

if TYPE_CHECKING:  # torch is imported where it is used: the web checks submits without loading it
    import torch

GIB = 2**30
PARAMETERS = {"resnet18": 11_177_538, "resnet50": 23_512_130, "resnet152": 58_147_906}
ACTIVATION_BYTES_PER_PIXEL = {"resnet18": 445, "resnet50": 1727, "resnet152": 3612}
FORWARD_FLOPS_PER_PIXEL = {"resnet18": 72_289, "resnet50": 162_914, "resnet152": 458_850}
# fp32 weights, their gradients and Adam's two moments (SGD with momentum keeps one fewer).
STATE_COPIES = 4
# The measured peak of a CPU training step (weights + the step's growth of the resident set) was
# 0.91x to 1.19x of state + saved activations on bench/memory_estimate.py's six points; with the
# margin it was 0.75x to 1.01x (backward's transient gradients, allocator slack, lazily loaded kernels).
ESTIMATE_MARGIN = 1.2
TRAINING_FLOPS_PER_FORWARD = 3  # backward costs about twice the forward pass


def training_memory_bytes(arch: str, image_size: int, batch_size: int) -> int:
    """Estimated device memory of a training step: model state plus the activations kept for backward."""
    state = STATE_COPIES * 4 * PARAMETERS[arch]
    activations = ACTIVATION_BYTES_PER_PIXEL[arch] * batch_size * image_size * image_size
    return int(ESTIMATE_MARGIN * (state + activations))


def describe_estimate(arch: str, image_size: int, batch_size: int, needed: int) -> str:
    return f"{arch} at {image_size} px with batch {batch_size} needs about {needed / GIB:.1f} GiB of device memory (estimate)"


def device_memory_bytes(device: torch.device) -> int:
    """All the memory of a device: a GPU's total, or the machine's physical RAM for the CPU."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_properties(device).total_memory
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def require_fits_device(arch: str, image_size: int, batch_size: int, device: torch.device) -> None:
    """Before a run starts: refuse a job whose estimate exceeds the device it would run on."""
    needed = training_memory_bytes(arch, image_size, batch_size)
    available = device_memory_bytes(device)
    if needed > available:
        raise UserInputError(
            f"batch_size: {describe_estimate(arch, image_size, batch_size, needed)}, more than the "
            f"{available / GIB:.1f} GiB of this worker's device ({device}); lower batch_size or image_size",
            field="batch_size",
        )


def tensor_bytes(value: Any) -> int:
    """The bytes of every tensor inside a (nested) checkpoint dict: about its size on disk."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.untyped_storage().nbytes()
    if isinstance(value, dict):
        return sum(tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def is_no_space(error: BaseException | None) -> bool:
    """A full disk (ENOSPC) or an exceeded quota (EDQUOT), also behind another exception: torch.save
    reports one as RuntimeError("[enforce fail at inline_container.cc] ...") whose context is the OSError."""
    import errno

    seen = 0
    while error is not None and seen < 10:  # the chain is short; the bound guards against a cycle
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def require_free_space(path: Path, needed: int) -> None:
    """Before writing about `needed` bytes at path: refuse unless that plus MIN_FREE_DISK_MB stays free."""
    free = shutil.disk_usage(path.parent).free
    if free < needed + engine_settings().min_free_disk_mb * 2**20:
        raise NoSpaceLeft(path, f"{free / 2**20:.0f} MiB free, the write needs about {needed / 2**20:.0f} MiB")
