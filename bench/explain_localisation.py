"""`python -m bench.explain_localisation`: do Grad-CAM heat maps of a trained model lie on the cell?

The synthetic cells are drawn small (cell_scale 0.75: about 7% of the image) and anywhere they
fit, so most pixels are black background and a map that ignored the cell, or sat at the image's
centre, would score about 1; at 128 px layer4 is 4x4. A resnet18 is trained from scratch on the
CPU; for the validation images it calls ALL, the share of each map's mass on the cell's pixels is
divided by the cell's share of the image (the concentration; 1.0 = no preference). The same maps
turned upside down and left-right, and the maps of an untrained network, are scored the same way
and must fall short: the measure can fail.

Prints the figures and the checks, writes localisation.json and localisation.md to --out, and
exits 1 when a check fails (0 when all hold). The defaults are the measurement README.md quotes
(320 training and 64 validation cells at 128 px, 8 epochs: a few minutes on one CPU core).
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import click
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.engine.data.synth import draw_cell, split_labels
from core.engine.evaluation.explain import grad_cam
from core.engine.model.resnet import build_model

CELL_SCALE = 0.75
MIN_CONCENTRATION = 1.5  # mean concentration over the maps of the cells called ALL
FLIPPED_MARGIN = 1.25  # the trained maps' concentration over the flipped maps'
MIN_ACCURACY = 0.9  # the model learned the task
CELL_SHARE = (0.04, 0.12)  # most pixels are background
MIN_CALLED_SHARE = 25 / 64  # validation images called ALL with a non-empty map


@dataclass(frozen=True)
class Config:
    train: int = 320
    valid: int = 64
    epochs: int = 8
    image_size: int = 128
    threads: int = 2


def synthetic_cells(count: int, split_index: int, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, H, W, 3) uint8 cells and their labels, half ALL, as synth draws them."""
    labels = split_labels(count, 0.5, 0, split_index)
    images = [
        draw_cell(np.random.default_rng([0, split_index, index]), image_size, label, CELL_SCALE)
        for index, label in enumerate(labels)
    ]
    return np.stack(images), np.array(labels)


def normalised(images: np.ndarray, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std


def trained_model(images: torch.Tensor, labels: torch.Tensor, epochs: int) -> nn.Module:
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


def mean_or_nan(values: np.ndarray) -> float:
    """The mean, or nan for no values (a check on it then fails)."""
    return float(values.mean()) if len(values) else math.nan


def measure(config: Config) -> dict:
    """Train, compute the maps and their controls; returns the figures."""
    started = time.perf_counter()
    train_pixels, train_labels = synthetic_cells(config.train, 0, config.image_size)
    valid_pixels, valid_labels = synthetic_cells(config.valid, 1, config.image_size)
    mean = torch.from_numpy(train_pixels.reshape(-1, 3).mean(axis=0) / 255).float().view(1, 3, 1, 1)
    std = torch.from_numpy(train_pixels.reshape(-1, 3).std(axis=0) / 255).float().view(1, 3, 1, 1)
    valid = normalised(valid_pixels, mean, std)
    model = trained_model(normalised(train_pixels, mean, std), torch.from_numpy(train_labels), config.epochs)
    with torch.no_grad():
        predicted = model(valid).argmax(dim=1).numpy()
    maps = grad_cam(model, valid).numpy()
    assert maps.shape == (config.valid, config.image_size, config.image_size), maps.shape  # a bug, not a finding
    cells = valid_pixels.max(axis=3) > 0
    called_all = (predicted == 1) & (maps.sum(axis=(1, 2)) > 0)
    scores = concentration(maps[called_all], cells[called_all])
    flipped = concentration(maps[called_all][:, ::-1, ::-1], cells[called_all])
    torch.manual_seed(1)
    untrained = grad_cam(build_model("resnet18").eval(), valid).numpy()
    drawn = (valid_labels == 1) & (untrained.sum(axis=(1, 2)) > 0)
    return {
        "valid_accuracy": float((predicted == valid_labels).mean()),
        "cell_share": float(cells.mean()),
        "called_all": int(called_all.sum()),
        "concentration": mean_or_nan(scores),
        "concentration_lowest": float(scores.min()) if len(scores) else math.nan,
        "flipped_concentration": mean_or_nan(flipped),
        "untrained_concentration": mean_or_nan(concentration(untrained[drawn], cells[drawn])),
        "seconds": round(time.perf_counter() - started, 1),
    }


def checks(figures: dict, config: Config) -> list[dict]:
    """Each threshold with what was measured and whether it holds (a nan figure never holds)."""
    low, high = CELL_SHARE
    min_called = math.ceil(MIN_CALLED_SHARE * config.valid)
    accuracy, share, called = figures["valid_accuracy"], figures["cell_share"], figures["called_all"]
    ours, flipped = figures["concentration"], figures["flipped_concentration"]
    untrained = figures["untrained_concentration"]
    rows = [
        (f"the model learned the task: valid accuracy >= {MIN_ACCURACY}", accuracy, accuracy >= MIN_ACCURACY),
        (f"most pixels are background: {low} < cell share < {high}", share, low < share < high),
        (f"cells called ALL with a map >= {min_called} of {config.valid}", called, called >= min_called),
        (f"maps on the cell: concentration >= {MIN_CONCENTRATION}", ours, ours >= MIN_CONCENTRATION),
        (
            f"control, maps flipped: concentration < {MIN_CONCENTRATION} and ours > {FLIPPED_MARGIN} x it",
            flipped,
            flipped < MIN_CONCENTRATION and ours > FLIPPED_MARGIN * flipped,
        ),
        (f"control, an untrained network: concentration < {MIN_CONCENTRATION}", untrained, untrained < MIN_CONCENTRATION),
    ]
    return [{"check": name, "measured": round(value, 3), "met": bool(met)} for name, value, met in rows]


def without_nan(row: dict) -> dict:
    """A figure that could not be computed (no cell called ALL) is null in the JSON, not NaN."""
    return {key: None if isinstance(value, float) and math.isnan(value) else value for key, value in row.items()}


def table(results: dict) -> str:
    lines = ["| figure | value |", "|---|---:|"]
    lines += [f"| {name} | {value} |" for name, value in results["figures"].items()]
    lines += ["", "| check | measured | met |", "|---|---:|---|"]
    lines += [f"| {row['check']} | {row['measured']} | {'yes' if row['met'] else 'NO'} |" for row in results["checks"]]
    return "\n".join(lines)


@click.command()
@click.option("--train", default=Config.train, show_default=True, help="Training cells.")
@click.option("--valid", default=Config.valid, show_default=True, help="Validation cells whose maps are scored.")
@click.option("--epochs", default=Config.epochs, show_default=True)
@click.option("--size", "image_size", default=Config.image_size, show_default=True, help="Image size in pixels.")
@click.option("--threads", default=Config.threads, show_default=True, help="torch CPU threads (at most the machine's).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Folder for localisation.json and localisation.md.",
)
def main(train: int, valid: int, epochs: int, image_size: int, threads: int, out: Path) -> None:
    """Measure whether Grad-CAM maps lie on the cell; exit 1 when a check fails."""
    config = Config(train=train, valid=valid, epochs=epochs, image_size=image_size, threads=threads)
    torch.set_num_threads(max(1, min(config.threads, torch.get_num_threads())))
    figures = measure(config)
    results = {
        "config": asdict(config),
        "figures": without_nan(figures),
        "checks": [without_nan(row) for row in checks(figures, config)],
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "localisation.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "localisation.md").write_text(f"# Grad-CAM localisation {results['config']}\n\n{table(results)}\n")
    click.echo(table(results))
    failed = [row["check"] for row in results["checks"] if not row["met"]]
    if failed:
        click.echo(f"{len(failed)} check(s) failed: {'; '.join(failed)}", err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
