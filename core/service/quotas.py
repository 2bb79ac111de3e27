"""The service's caps on what may be queued, checked at submit: a training job's device-memory
estimate against MAX_JOB_MEMORY_GB, a sweep's job count and estimated GPU-hours against
MAX_SWEEP_JOBS and MAX_SWEEP_GPU_HOURS. The estimates are the engine's (core.engine.model.limits); the caps
come from the settings the caller was given (the job service reads them where a submission enters it)."""

from __future__ import annotations

from core.common.errors import UserInputError
from core.engine.model.limits import (
    FORWARD_FLOPS_PER_PIXEL,
    GIB,
    TRAINING_FLOPS_PER_FORWARD,
    describe_estimate,
    training_memory_bytes,
)
from core.service.settings import Settings


def require_memory_within_cap(arch: str, image_size: int | None, batch_size: int, settings: Settings) -> None:
    """At submit: a training job whose estimate exceeds MAX_JOB_MEMORY_GB is refused (field batch_size)."""
    if image_size is None:  # a finetune at its checkpoint's size: the worker checks it against its device
        return
    cap = settings.max_job_memory_gb * GIB
    needed = training_memory_bytes(arch, image_size, batch_size)
    if needed > cap:
        raise UserInputError(
            f"batch_size: {describe_estimate(arch, image_size, batch_size, needed)}, over the limit of "
            f"{cap / GIB:g} GiB (MAX_JOB_MEMORY_GB); lower batch_size or image_size",
            field="batch_size",
        )


def training_gpu_hours(arch: str, image_size: int, epochs: int, images: int, train_tflops: float) -> float:
    """Estimated GPU-hours of a training job at GPU_TRAIN_TFLOPS (an operator's setting, not a measurement)."""
    flops = TRAINING_FLOPS_PER_FORWARD * FORWARD_FLOPS_PER_PIXEL[arch] * image_size * image_size * images * epochs
    return flops / (train_tflops * 1e12) / 3600


def require_sweep_within_caps(jobs: int, gpu_hours: float | None, settings: Settings) -> None:
    """A sweep's job count against MAX_SWEEP_JOBS and its estimated GPU-hours against MAX_SWEEP_GPU_HOURS."""
    if jobs > settings.max_sweep_jobs:
        raise UserInputError(f"grid: {jobs} jobs; at most {settings.max_sweep_jobs} per sweep (MAX_SWEEP_JOBS)", field="grid")
    if gpu_hours is not None and gpu_hours > settings.max_sweep_gpu_hours:
        raise UserInputError(
            f"grid: about {gpu_hours:,.1f} GPU-hours in all (estimate at GPU_TRAIN_TFLOPS={settings.gpu_train_tflops:g}), "
            f"over the limit of {settings.max_sweep_gpu_hours:g} (MAX_SWEEP_GPU_HOURS); fewer points, epochs or a smaller image_size",
            field="grid",
        )
