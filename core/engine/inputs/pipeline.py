"""Batches of normalised image tensors on the device, fed from the decoded-image cache (or,
for one pass over a split with no cache, from images decoded batch by batch).

No per-image work on the CPU: a batch is one gather from the uint8 memmap (done a batch or
two ahead by a background thread, into pinned memory on CUDA), one asynchronous copy,
then scaling, augmentation (core.engine.inputs.augment, one grid_sample) and normalisation on the
device. Shuffling and augmentation depend only on (seed, epoch), so a resumed run
replays an epoch exactly.

On a GPU a pipeline has one batch shape, so cuDNN autotunes once: validation and predict pad a short
last batch (`Batch.real` keeps the real rows), training drops it. `resolve_device` and
`flush_denormals_on_cpu` serve every runner.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from core.common.errors import UserInputError
from core.engine.data.layouts import Sample
from core.engine.inputs.augment import AugmentParams, augment_batch, sample_augment_params
from core.engine.inputs.cache import load_image_cache, open_split_images

PREFETCH_BATCHES = 2  # batches gathered ahead: enough to hide a gather behind one step
MIN_STD = 1.0 / 255.0  # a constant channel would otherwise divide by zero
SHUFFLE_STREAM, AUGMENT_STREAM = 0, 1  # independent random streams per (seed, epoch)


def resolve_device(name: str) -> torch.device:
    """The torch device a job names: auto picks the GPU when there is one."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise UserInputError(f"device: {name} requested but no GPU is available", field="device")
        return torch.device(name)
    raise UserInputError(f"device: unknown device {name!r}; choose auto, cpu or cuda", field="device")


@contextmanager
def flush_denormals_on_cpu(device: torch.device) -> Iterator[None]:
    """Treat denormal floats as zero on the CPU while a run lasts: trained weights produce them, and
    they made a finetune epoch 8x slower here (18.7 vs 146.6 images/s, resnet18 at 32 px) with the
    same losses. The flag is process-wide, so it is put back after the run: the rest of the process
    (a worker's next job, a test framework) expects IEEE subnormals."""
    flushing = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushing:
            torch.set_flush_denormal(False)


def compute_mean_std(
    samples: list[Sample], image_size: int, *, cache_dir: Path, num_workers: int = 0
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std of the pixels scaled to [0, 1], over these (training) samples."""
    images = load_image_cache(samples, image_size, cache_dir=cache_dir, num_workers=num_workers).images
    # Exact and cheap: count each of the 256 levels per channel, then take moments.
    counts = np.zeros((3, 256), dtype=np.int64)
    for start in range(0, len(images), 64):
        block = images[start : start + 64]
        for channel in range(3):
            counts[channel] += np.bincount(block[..., channel].ravel(), minlength=256)
    levels = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum(axis=1)
    mean = counts @ levels / total
    variance = np.maximum(counts @ levels**2 / total - mean**2, 0.0)
    std = np.maximum(np.sqrt(variance), MIN_STD)
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)  # type: ignore[return-value]


@dataclass
class Batch:
    """One batch, ready for the model."""

    images: Tensor  # float32 NCHW on the device, /255 once, then normalised; channels_last if asked
    labels: Tensor  # int64 on the device; -1 where unlabelled
    indices: Tensor  # int64 positions into the samples list (CPU), to map predictions back to rows

    def real(self, outputs: Tensor) -> Tensor:
        """The rows of a model's outputs that belong to images (a padded last batch has more rows)."""
        return outputs[: len(self.indices)]


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    """A CPU generator determined by (seed, epoch, stream) alone, independent across streams."""
    state = np.random.SeedSequence([seed, epoch, stream]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


class InputPipeline:
    """Iterate over a split in batches on the device; one pass is one epoch."""

    def __init__(
        self,
        samples: list[Sample],
        *,
        image_size: int,
        batch_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: torch.device,
        augment: bool,
        shuffle: bool,
        seed: int,
        cache_dir: Path,
        num_workers: int = 0,
        channels_last: bool = False,
        drop_last: bool = False,
        single_pass: bool = False,
        pad_last_batch: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if pad_last_batch and augment:
            raise ValueError("pad_last_batch is for inference: padded rows would be trained on")
        self.samples = samples
        # single_pass (evaluate, predict): an existing cache is used, but none is written for one read.
        self.images = open_split_images(
            samples, image_size, cache_dir=cache_dir, num_workers=num_workers, single_pass=single_pass
        )
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        # Inference on a GPU: a short last batch padded with black images to the full size, so
        # cuDNN autotunes one batch shape, not two (each new shape costs a search per layer).
        self.pad_last_batch = pad_last_batch
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epoch = 0
        self._labels = torch.tensor([-1 if s.label is None else s.label for s in samples], dtype=torch.int64)
        self._mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        # Pinned host buffers make the copy truly asynchronous; only CUDA has them.
        self._pin_memory = self.device.type == "cuda"

    def __len__(self) -> int:
        """Batches per epoch."""
        if self.drop_last:
            return len(self.samples) // self.batch_size
        return math.ceil(len(self.samples) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose shuffling and augmentation the next iteration replays."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[Batch]:
        for host_images, host_labels, positions, params in self.host_batches():
            yield self._on_device(host_images, host_labels, positions, params)

    def host_batches(self) -> Iterator[tuple[Tensor, Tensor, np.ndarray, AugmentParams | None]]:
        """This epoch's batches before the device: uint8 NHWC images, labels, positions, augmentation.

        All the per-image work the CPU does when a GPU is attached; gathered PREFETCH_BATCHES
        ahead in a background thread, so the gather overlaps the caller's compute.
        """
        order = self._epoch_order()
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(len(self))]
        params = None
        if self.augment:
            params = sample_augment_params(len(order), epoch_generator(self.seed, self.epoch, AUGMENT_STREAM))
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-prefetch") as loader:
            pending: deque[Future] = deque(loader.submit(self._gather, b) for b in batches[:PREFETCH_BATCHES])
            for number, positions in enumerate(batches):
                host_images, host_labels = pending.popleft().result()
                if number + PREFETCH_BATCHES < len(batches):
                    pending.append(loader.submit(self._gather, batches[number + PREFETCH_BATCHES]))
                start = number * self.batch_size
                batch_params = None if params is None else params[start : start + len(positions)]
                yield host_images, host_labels, positions, batch_params

    def _epoch_order(self) -> np.ndarray:
        """Sample positions in this epoch's order; each batch sorted so the memmap is read forwards."""
        n = len(self.samples)
        if self.shuffle:
            order = torch.randperm(n, generator=epoch_generator(self.seed, self.epoch, SHUFFLE_STREAM)).numpy()
        else:
            order = np.arange(n)
        for start in range(0, n, self.batch_size):
            order[start : start + self.batch_size].sort()
        return order.astype(np.int64)

    def _gather(self, positions: np.ndarray) -> tuple[Tensor, Tensor]:
        """A batch's uint8 NHWC images and labels on the host (pinned on CUDA); runs in the prefetch thread."""
        size = self.images.shape[1]
        rows = max(len(positions), self.batch_size) if self.pad_last_batch else len(positions)
        images = torch.empty((rows, size, size, 3), dtype=torch.uint8, pin_memory=self._pin_memory)
        images[len(positions) :] = 0
        self.images.take(positions, images.numpy()[: len(positions)])
        labels = self._labels[torch.from_numpy(positions)]
        if self._pin_memory:
            labels = labels.pin_memory()
        return images, labels

    def _on_device(self, host_images: Tensor, host_labels: Tensor, positions: np.ndarray, params: AugmentParams | None) -> Batch:
        """Copy, scale to [0, 1] (the only division by 255), augment, normalise."""
        images = host_images.to(self.device, non_blocking=True)
        labels = host_labels.to(self.device, non_blocking=True)
        x = images.permute(0, 3, 1, 2).float().div_(255.0)
        if params is not None:
            x = augment_batch(x, params)  # black fill: 0 before normalisation, as in the lab
        x = x.sub_(self._mean).div_(self._std).contiguous(memory_format=self.memory_format)
        return Batch(images=x, labels=labels, indices=torch.from_numpy(positions))
