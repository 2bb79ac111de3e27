"""The lab's input pipeline, kept here only as the benchmark's baseline (never used by core):
per image in DataLoader workers, PIL decode → ToTensor → RandomRotation(0–90°) → flips → Normalize."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from core.engine.data.layouts import Sample


def lab_transform(mean: Sequence[float], std: Sequence[float]) -> transforms.Compose:
    """The lab's per-image chain, in its order; RandomRotation keeps its default nearest interpolation."""
    return transforms.Compose(
        [
            transforms.ToTensor(),
            transforms.RandomRotation((0, 90)),
            transforms.RandomHorizontalFlip(),
            transforms.RandomVerticalFlip(),
            transforms.Normalize(mean, std),
        ]
    )


class LabDataset(Dataset):
    """One decoded, transformed image per __getitem__, as the lab's loader did."""

    def __init__(self, samples: list[Sample], mean: Sequence[float], std: Sequence[float]) -> None:
        self.samples = samples
        self.transform = lab_transform(mean, std)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        sample = self.samples[index]
        with Image.open(sample.path) as image:
            return self.transform(image.convert("RGB")), -1 if sample.label is None else sample.label


def lab_loader(
    samples: list[Sample], *, batch_size: int, num_workers: int, mean: Sequence[float], std: Sequence[float]
) -> DataLoader:
    """The lab's DataLoader: shuffled, per-image workers, no pinned memory."""
    return DataLoader(
        LabDataset(samples, mean, std),
        batch_size=batch_size,
        shuffle=True,
        num_workers=num_workers,
        drop_last=True,
        persistent_workers=num_workers > 0,
    )
