"""Grad-CAM heat maps of a trained model lie on the cell, not on the black background.

The synthetic cells here are drawn smaller (cell_scale 0.75: about 7% of the image) and anywhere
they fit, so most pixels are background and a map that ignored the cell, or sat at the image's
centre, would score about 1; at 128 px layer4 is 4x4. A ResNet is trained briefly on the CPU, and
for the validation images it calls ALL the share of each map's mass on the cell's pixels is
compared with the cell's share of the image. The same maps turned upside down, and the maps of an
untrained network, are scored the same way and must fall short: the measure can fail."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from core.engine.explain import grad_cam
from core.engine.models import build_model
from core.engine.synth import draw_cell, split_labels

IMAGE_SIZE = 128
CELL_SCALE = 0.75
MIN_CONCENTRATION = 1.5  # mean of (mass on the cell / the cell's share of the image); 1.0 = no preference


def synthetic_cells(count: int, split_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, H, W, 3) uint8 cells and their labels, half ALL, as synth draws them."""
    labels = split_labels(count, 0.5, 0, split_index)
    images = [draw_cell(np.random.default_rng([0, split_index, index]), IMAGE_SIZE, label, CELL_SCALE)
              for index, label in enumerate(labels)]
    return np.stack(images), np.array(labels)


def normalised(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std


def trained_model(images: torch.Tensor, labels: torch.Tensor, epochs: int = 8) -> nn.Module:
    """A resnet18 from scratch: Adam, batches of 32, random flips, then BatchNorm statistics
    recomputed over the training set (after so few steps the running averages still lag)."""
    torch.manual_seed(0)
    model = build_model("resnet18")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(images)).split(32):
            x = images[batch]
            if torch.rand(1) < 0.5:
                x = x.flip(3)
            if torch.rand(1) < 0.5:
                x = x.flip(2)
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a plain average over the batches below
    with torch.no_grad():
        for batch in images.split(64):
            model(batch)
    return model.eval()


def concentration(maps: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Per image: the share of the map's mass on the cell's (non-black) pixels / the cell's share of the image."""
    on_cell = (maps * cells).sum(axis=(1, 2)) / maps.sum(axis=(1, 2))
    return on_cell / cells.mean(axis=(1, 2))


@pytest.mark.slow
def test_heat_maps_of_a_trained_model_lie_on_the_cell() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))
    train_pixels, train_labels = synthetic_cells(320, split_index=0)
    valid_pixels, valid_labels = synthetic_cells(64, split_index=1)
    mean = torch.from_numpy(train_pixels.reshape(-1, 3).mean(axis=0) / 255).float().view(1, 3, 1, 1)
    std = torch.from_numpy(train_pixels.reshape(-1, 3).std(axis=0) / 255).float().view(1, 3, 1, 1)
    valid = normalised(valid_pixels, mean, std)
    model = trained_model(normalised(train_pixels, mean, std), torch.from_numpy(train_labels))
    with torch.no_grad():
        predicted = model(valid).argmax(dim=1).numpy()
    assert (predicted == valid_labels).mean() >= 0.9  # it learned the task

    maps = grad_cam(model, valid).numpy()
    assert maps.shape == (64, IMAGE_SIZE, IMAGE_SIZE)
    cells = valid_pixels.max(axis=3) > 0
    assert 0.04 < cells.mean() < 0.12  # most pixels are background
    called_all = (predicted == 1) & (maps.sum(axis=(1, 2)) > 0)
    assert called_all.sum() >= 25
    scores = concentration(maps[called_all], cells[called_all])
    assert scores.mean() >= MIN_CONCENTRATION, scores

    # Controls: the maps turned upside down and left-right, and an untrained network's maps.
    flipped = concentration(maps[called_all][:, ::-1, ::-1], cells[called_all])
    assert flipped.mean() < MIN_CONCENTRATION and scores.mean() > 1.25 * flipped.mean()
    torch.manual_seed(1)
    untrained = grad_cam(build_model("resnet18").eval(), valid).numpy()
    drawn = (valid_labels == 1) & (untrained.sum(axis=(1, 2)) > 0)
    assert concentration(untrained[drawn], cells[drawn]).mean() < MIN_CONCENTRATION
