"""A synthetic lab-layout data folder of C-NMC-like cell images, for tests and demos.

Each image is one purple cell on pure black: dark purple nucleus, lighter lilac cytoplasm,
random position, size, outline, rotation, chromatin texture and pixel noise. The classes
differ in the nucleus, as in the real cells, so a small ResNet learns them in a few epochs:
- ALL (label 1): a large, darker, irregular-lobed nucleus filling most of the cell;
- hem (label 0): a smaller, round, off-centre nucleus with a visible rim of cytoplasm.
Cell size, colour and brightness have the same spread in both classes, so no single global
pixel statistic (mean brightness, cell area) separates them alone.

Each image belongs to a synthetic patient (the CSVs' `patient` column, as `leukemia check --write-csv`
writes for C-NMC): about IMAGES_PER_SUBJECT cells of one class each, named as C-NMC names its
subjects (ALL: 1, 2, ...; hem: H1, H2, ...), no patient in two splits. So cross-validation by
subject, subject-disjoint shares and per-subject metrics work on the demo folder as on the release.

The same seed gives the same bytes: every image has its own generator seeded by
(seed, split, index), and BMP files carry no timestamp.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from core.common.errors import UserInputError

SYNTH_SPLITS = ("train", "valid", "test")
IMAGES_FOLDER = "new_dataset"
CYTOPLASM_RGB = np.array([124, 84, 146], dtype=np.float32)
NUCLEUS_RGB = {0: np.array([72, 32, 92], dtype=np.float32), 1: np.array([62, 24, 82], dtype=np.float32)}
IMAGES_PER_SUBJECT = 10  # cells per synthetic patient, about (C-NMC has a few hundred; the demo is small)
SUBJECT_PREFIX = {0: "H", 1: ""}  # C-NMC's subject names: UID_H10_... is hem subject H10, UID_11_... ALL subject 11


@dataclass(frozen=True)
class SynthSummary:
    """What write_synthetic_dataset wrote."""

    out_dir: Path
    image_size: int
    seed: int
    counts: dict[str, int]  # split -> images
    positives: dict[str, int]  # split -> images with label 1
    seconds: float = field(compare=False)


@dataclass(frozen=True)
class CellShape:
    """A closed outline in polar form around a centre: r(θ) = radius · (1 + Σ a_k cos(kθ + φ_k))."""

    centre_x: float
    centre_y: float
    radius: float
    harmonics: tuple[tuple[int, float, float], ...]  # (k, amplitude, phase)

    @property
    def extent(self) -> float:
        """The largest distance of the outline from the centre."""
        return self.radius * (1.0 + sum(amplitude for _, amplitude, _ in self.harmonics))

    def inside(self, x: np.ndarray, y: np.ndarray, pixel: float) -> np.ndarray:
        """Coverage in [0, 1] of each pixel, with a one-pixel soft edge (antialiasing)."""
        dx, dy = x - self.centre_x, y - self.centre_y
        rho = np.hypot(dx, dy)
        theta = np.arctan2(dy, dx)
        outline = np.ones_like(theta)  # float32, like x and y
        for k, amplitude, phase in self.harmonics:
            outline += amplitude * np.cos(k * theta + phase)
        return np.clip((self.radius * outline - rho) / pixel + 0.5, 0.0, 1.0)


def write_synthetic_dataset(
    out_dir: Path,
    *,
    train: int = 200,
    valid: int = 50,
    test: int = 50,
    image_size: int = 64,
    seed: int = 0,
    positive_fraction: float = 0.68,
) -> SynthSummary:
    """Write a lab-layout folder: new_dataset/{train,valid,test}/<n>.bmp, train/valid/test CSVs and test_labels.csv."""
    counts = {"train": train, "valid": valid, "test": test}
    _check_arguments(counts, image_size, seed, positive_fraction)
    out_dir = _empty_output_folder(Path(out_dir))
    started = time.perf_counter()
    positives = {}
    subjects_so_far = {0: 0, 1: 0}  # numbered on across the splits, so no patient is in two
    for split_index, split in enumerate(SYNTH_SPLITS):
        labels = split_labels(counts[split], positive_fraction, seed, split_index)
        subjects = split_subjects(labels, subjects_so_far)
        folder = out_dir / IMAGES_FOLDER / split
        folder.mkdir(parents=True)
        rows = []
        for index, (label, subject) in enumerate(zip(labels, subjects)):
            rng = np.random.default_rng([seed, split_index, index])
            Image.fromarray(draw_cell(rng, image_size, label)).save(folder / f"{index}.bmp")
            rows.append((f"./{IMAGES_FOLDER}/{split}/{index}.bmp", label, subject))
        positives[split] = int(sum(labels))
        if split == "test":
            _write_csv(out_dir / "test.csv", ["Path"], [(path,) for path, _, _ in rows])
            _write_csv(out_dir / "test_labels.csv", ["Path", "label", "patient"], rows)
        else:
            _write_csv(out_dir / f"{split}.csv", ["Path", "label", "patient"], rows)
    return SynthSummary(
        out_dir=out_dir,
        image_size=image_size,
        seed=seed,
        counts=counts,
        positives=positives,
        seconds=time.perf_counter() - started,
    )


def split_labels(count: int, positive_fraction: float, seed: int, split_index: int) -> list[int]:
    """Exactly round(count · positive_fraction) ones, in a seeded random order."""
    positives = round(count * positive_fraction)
    labels = np.array([1] * positives + [0] * (count - positives))
    np.random.default_rng([seed, split_index, 2**31]).shuffle(labels)
    return [int(label) for label in labels]


def split_subjects(labels: list[int], subjects_so_far: dict[int, int]) -> list[str]:
    """The patient of each image of a split: per class, the images in order go to that class's next
    max(1, round(n / IMAGES_PER_SUBJECT)) patients in even runs; subjects_so_far counts on (it is updated)."""
    subjects = [""] * len(labels)
    for label in (0, 1):
        indices = [index for index, value in enumerate(labels) if value == label]
        count = max(1, round(len(indices) / IMAGES_PER_SUBJECT))
        for position, index in enumerate(indices):
            subjects[index] = f"{SUBJECT_PREFIX[label]}{subjects_so_far[label] + 1 + position * count // len(indices)}"
        if indices:
            subjects_so_far[label] += count
    return subjects


def draw_cell(rng: np.random.Generator, size: int, label: int, cell_scale: float = 1.0) -> np.ndarray:
    """One (size, size, 3) uint8 image of a cell of the given class on black.

    cell_scale < 1 draws a smaller cell placed anywhere it fits (1.0: the default set, the cell
    within ±0.15 of the centre); the heat-map test uses it to put most pixels on the background."""
    pixel = 2.0 / size  # one pixel in the [-1, 1] coordinates below
    rotation = rng.uniform(0, 2 * np.pi)
    cell = _cell_outline(rng, rotation, cell_scale)
    nucleus = _nucleus_outline(rng, cell, rotation, malignant=label == 1)

    # Only the cell's bounding box is drawn: the rest stays pure black, and it is 3-4x faster.
    top, bottom = _box(cell.centre_y, cell.extent, size)
    left, right = _box(cell.centre_x, cell.extent, size)
    axis = ((np.arange(size, dtype=np.float32) + 0.5) * pixel - 1.0).astype(np.float32)
    x, y = np.meshgrid(axis[left:right], axis[top:bottom])
    cell_cover = cell.inside(x, y, pixel)
    nucleus_cover = nucleus.inside(x, y, pixel) * cell_cover

    brightness = rng.uniform(0.72, 1.28)
    cytoplasm_rgb = (CYTOPLASM_RGB * brightness * rng.uniform(0.92, 1.08, size=3)).astype(np.float32)
    nucleus_rgb = (NUCLEUS_RGB[label] * brightness * rng.uniform(0.9, 1.1, size=3)).astype(np.float32)
    box = (slice(top, bottom), slice(left, right))
    chromatin = 1.0 + 0.18 * _smooth_noise(rng, size, grid=int(rng.integers(5, 10)))[box]
    cytoplasm_texture = 1.0 + 0.08 * _smooth_noise(rng, size, grid=4)[box]

    colour = (cell_cover - nucleus_cover)[..., None] * cytoplasm_rgb * cytoplasm_texture[..., None]
    colour += nucleus_cover[..., None] * nucleus_rgb * chromatin[..., None]
    colour += cell_cover[..., None] * rng.normal(0.0, 4.0, size=colour.shape).astype(np.float32)
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[box] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    return image


def _box(centre: float, extent: float, size: int) -> tuple[int, int]:
    """Pixel range [start, stop) covering centre ± extent in [-1, 1] coordinates, plus a margin."""
    start = int(np.floor((centre - extent + 1.0) * size / 2.0)) - 2
    stop = int(np.ceil((centre + extent + 1.0) * size / 2.0)) + 2
    return max(start, 0), min(stop, size)


def _cell_outline(rng: np.random.Generator, rotation: float, scale: float) -> CellShape:
    # Same distribution for both classes: the cell's size and place say nothing about the label.
    harmonics = ((2, rng.uniform(0.0, 0.08), rotation),) + tuple(
        (k, rng.uniform(0.0, 0.03), rng.uniform(0, 2 * np.pi)) for k in (3, 4, 5)
    )
    # The largest extent is 0.5 · 1.19 · scale, so the cell stays inside the image; scale 1.0 gives
    # exactly ±0.15 and the same draws in the same order, hence the same bytes as before.
    spread = 0.15 + 0.6 * (1.0 - scale)
    return CellShape(
        centre_x=rng.uniform(-spread, spread),
        centre_y=rng.uniform(-spread, spread),
        radius=rng.uniform(0.3, 0.5) * scale,
        harmonics=harmonics,
    )


def _nucleus_outline(rng: np.random.Generator, cell: CellShape, rotation: float, *, malignant: bool) -> CellShape:
    if malignant:  # large, lobed, near the centre
        ratio = rng.uniform(0.74, 0.9)
        offset = rng.uniform(0.0, 0.06) * cell.radius
        lobes = tuple((k, rng.uniform(0.05, 0.11), rng.uniform(0, 2 * np.pi)) for k in rng.choice([3, 4, 5, 6], 2, replace=False))
    else:  # smaller, round, pushed to one side
        ratio = rng.uniform(0.48, 0.64)
        offset = rng.uniform(0.08, 0.22) * cell.radius
        lobes = ((2, rng.uniform(0.0, 0.05), rotation), (3, rng.uniform(0.0, 0.02), rng.uniform(0, 2 * np.pi)))
    direction = rng.uniform(0, 2 * np.pi)
    return CellShape(
        centre_x=cell.centre_x + offset * np.cos(direction),
        centre_y=cell.centre_y + offset * np.sin(direction),
        radius=ratio * cell.radius,
        harmonics=lobes,
    )


def _smooth_noise(rng: np.random.Generator, size: int, grid: int) -> np.ndarray:
    """A (size, size) float32 field of smooth noise in about [-1, 1]: a small random grid, upsampled."""
    coarse = rng.uniform(-1.0, 1.0, size=(grid, grid)).astype(np.float32)
    return np.asarray(Image.fromarray(coarse, mode="F").resize((size, size), Image.Resampling.BICUBIC))


def _check_arguments(counts: dict[str, int], image_size: int, seed: int, positive_fraction: float) -> None:
    for split, count in counts.items():
        if count < 1:
            raise UserInputError(f"{split}: must be at least 1 image, got {count}")
    if not 16 <= image_size <= 2048:
        raise UserInputError(f"image_size: must be between 16 and 2048 pixels, got {image_size}", field="image_size")
    if seed < 0:
        raise UserInputError(f"seed: must be 0 or more, got {seed}", field="seed")
    if not 0.0 <= positive_fraction <= 1.0:
        raise UserInputError(f"positive_fraction: must be between 0 and 1, got {positive_fraction}", field="positive_fraction")


def _empty_output_folder(out_dir: Path) -> Path:
    """The output folder, created if missing; a file or a non-empty folder is refused (never overwritten)."""
    out_dir = out_dir.absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise UserInputError(f"output folder is a file: {out_dir}")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        raise UserInputError(f"output folder is not empty: {out_dir}; synth writes only into a new or empty folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserInputError(f"cannot create output folder {out_dir}: {error.strerror}") from None
    return out_dir


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
