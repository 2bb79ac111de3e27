"""Timed measurements, each returning images per second: the model alone on synthetic tensors
(the ceiling), training and prediction through our InputPipeline, the lab's DataLoader, and
the CPU cost per image of each input path on one core."""

from __future__ import annotations

import csv
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Generator, Iterable

import torch
from torch import Tensor, nn

from bench.lab_pipeline import LabDataset, lab_loader
from core.engine.data.layouts import Sample
from core.engine.inputs.pipeline import InputPipeline


@dataclass(frozen=True)
class Setup:
    """How the model runs: the same for the ceiling and for our pipeline, so their ratio is fair."""

    device: torch.device
    amp: bool  # bf16 autocast + channels_last
    warmup_steps: int
    timed_steps: int

    def autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.amp else torch.contiguous_format


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work, so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def prepare_model(model: nn.Module, setup: Setup, *, compile_model: bool) -> nn.Module:
    """The model on the device in the benchmark's memory format, compiled on request."""
    model = model.to(setup.device, memory_format=setup.memory_format)
    return torch.compile(model) if compile_model else model


def train_step_function(model: nn.Module, setup: Setup) -> Callable[[Tensor, Tensor], None]:
    """One SGD step (forward, cross-entropy, backward, update) under the setup's precision."""
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    criterion = nn.CrossEntropyLoss()

    def step(images: Tensor, labels: Tensor) -> None:
        with setup.autocast():
            loss = criterion(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed_images_per_second(batches: Generator[tuple[Tensor, Tensor], None, None], step: Callable, setup: Setup) -> float:
    """Images/s over setup.timed_steps steps, after setup.warmup_steps untimed ones."""
    try:
        for _ in range(setup.warmup_steps):
            step(*next(batches))
        synchronize(setup.device)
        started, images = time.perf_counter(), 0
        for _ in range(setup.timed_steps):
            batch_images, labels = next(batches)
            step(batch_images, labels)
            images += len(labels)
        synchronize(setup.device)
        return images / (time.perf_counter() - started)
    finally:
        batches.close()  # stops a pipeline's prefetch thread now, not at garbage collection


def synthetic_batches(batch_size: int, image_size: int, setup: Setup) -> Generator[tuple[Tensor, Tensor], None, None]:
    """The same device-resident random batch forever: no input cost at all."""
    images = torch.randn(batch_size, 3, image_size, image_size, device=setup.device)
    images = images.contiguous(memory_format=setup.memory_format)
    labels = torch.randint(0, 2, (batch_size,), device=setup.device)
    while True:
        yield images, labels


def pipeline_batches(pipeline: InputPipeline) -> Generator[tuple[Tensor, Tensor], None, None]:
    """Our pipeline's batches, epoch after epoch."""
    epoch = 0
    while True:
        pipeline.set_epoch(epoch)
        for batch in pipeline:
            yield batch.images, batch.labels
        epoch += 1


def loader_batches(loader: Iterable, setup: Setup) -> Generator[tuple[Tensor, Tensor], None, None]:
    """The lab loader's batches moved to the device as the lab did (pageable memory, blocking)."""
    while True:
        for images, labels in loader:
            yield images.to(setup.device), labels.to(setup.device)


def train_ceiling(model: nn.Module, batch_size: int, image_size: int, setup: Setup) -> float:
    """Training images/s with inputs already on the device: the most any input path can reach."""
    return timed_images_per_second(synthetic_batches(batch_size, image_size, setup), train_step_function(model, setup), setup)


def train_through_pipeline(model: nn.Module, pipeline: InputPipeline, setup: Setup) -> float:
    """Training images/s fed by our InputPipeline (augmentation on)."""
    return timed_images_per_second(pipeline_batches(pipeline), train_step_function(model, setup), setup)


def train_through_lab_loader(
    model: nn.Module, samples: list[Sample], *, batch_size: int, num_workers: int, mean, std, setup: Setup
) -> float:
    """Training images/s fed by the lab's per-image DataLoader."""
    loader = lab_loader(samples, batch_size=batch_size, num_workers=num_workers, mean=mean, std=std)
    return timed_images_per_second(loader_batches(loader, setup), train_step_function(model, setup), setup)


def inference_ceiling(model: nn.Module, batch_size: int, image_size: int, setup: Setup) -> float:
    """Prediction images/s with inputs already on the device."""
    model.eval()

    def step(images: Tensor, labels: Tensor) -> None:
        with torch.inference_mode(), setup.autocast():
            model(images).argmax(dim=1)

    return timed_images_per_second(synthetic_batches(batch_size, image_size, setup), step, setup)


def predict_files_to_csv(model: nn.Module, pipeline: InputPipeline, out_csv: Path, setup: Setup) -> float:
    """Images/s of one whole pass: files (cached) → pipeline → model → `ID,label` CSV on disk."""
    model.eval()
    indices, classes = [], []
    started = time.perf_counter()
    with torch.inference_mode(), setup.autocast():
        for batch in pipeline:
            indices.append(batch.indices)
            classes.append(model(batch.images).argmax(dim=1))  # left on the device: a copy per batch would stall it
    predicted = torch.empty(len(pipeline.samples), dtype=torch.int64)
    predicted[torch.cat(indices)] = torch.cat(classes).cpu()
    with out_csv.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["ID", "label"])
        writer.writerows(zip((s.id for s in pipeline.samples), predicted.tolist()))
    return len(pipeline.samples) / (time.perf_counter() - started)


@dataclass(frozen=True)
class CpuRate:
    """An input path's rate on one core: images per wall second and per CPU second (all threads)."""

    images_per_s: float
    images_per_cpu_s: float


def cpu_rate(run_once: Callable[[], int], repeats: int) -> CpuRate:
    """Best of `repeats` passes (the machine is shared, so the best is the least disturbed)."""
    best_wall, best_cpu = 0.0, 0.0
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        images = run_once()
        best_wall = max(best_wall, images / (time.perf_counter() - wall))
        best_cpu = max(best_cpu, images / max(time.process_time() - cpu, 1e-9))
    return CpuRate(best_wall, best_cpu)


def lab_input_once(samples: list[Sample], mean, std) -> Callable[[], int]:
    """One pass of the lab's per-image chain in this process (one worker's work)."""
    dataset = LabDataset(samples, mean, std)

    def run() -> int:
        for index in range(len(dataset)):
            dataset[index]
        return len(dataset)

    return run


def our_host_input_once(pipeline: InputPipeline) -> Callable[[], int]:
    """One epoch of our pipeline's CPU side: what the host does per image when a GPU does the rest."""

    def run() -> int:
        return sum(len(positions) for _, _, positions, _ in pipeline.host_batches())

    return run


def our_cpu_input_once(pipeline: InputPipeline) -> Callable[[], int]:
    """One epoch of our whole input path with the CPU as the device (augmentation on the CPU too)."""

    def run() -> int:
        return sum(len(batch.indices) for batch in pipeline)

    return run
