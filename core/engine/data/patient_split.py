"""The patient-safe split of an original C-NMC tree into lab CSVs (`leukemia check DIR --write-csv`):
train.csv and valid.csv with no patient in both, deterministic for a seed, written atomically and never
over existing ones. `choose_valid_patients` also serves the `share:F` split (core.engine.data.splits)."""

from __future__ import annotations

import csv
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from core.common.atomic import open_atomic
from core.common.errors import UserInputError
from core.engine.data.layouts import SPLIT_CSVS, Sample, cnmc_samples, data_folder, inside_path, patient_of


@dataclass(frozen=True)
class PatientSplit:
    """What write_patient_split wrote."""

    train_csv: Path
    valid_csv: Path
    train_images: int
    valid_images: int
    train_patients: list[str]
    valid_patients: list[str]
    valid_class_counts: dict[int, int]


def sample_patients(samples: list[Sample]) -> tuple[dict[str, str], list[str]]:
    """Patient of each sample id, and one problem per file name with no patient in it."""
    patients, problems = {}, []
    for sample in samples:
        try:
            patients[sample.id] = patient_of(sample.id)
        except UserInputError as error:
            problems.append(str(error))
    return patients, problems


def write_patient_split(data_dir: Path, out_dir: Path | None = None, valid_fraction: float = 0.2, seed: int = 0) -> PatientSplit:
    """Write train.csv and valid.csv for a C-NMC tree, with no patient in both, deterministic for a seed.

    The CSVs go into the data folder (or a folder above it), so their Paths stay inside
    the folder they are in; existing train.csv/valid.csv are never overwritten."""
    if not 0.0 < valid_fraction < 1.0:
        raise UserInputError(f"valid_fraction: must be between 0 and 1 (exclusive), got {valid_fraction}", field="valid_fraction")
    folder = data_folder(data_dir)
    target = _csv_folder(folder, out_dir)
    samples = cnmc_samples(folder)
    patients, problems = sample_patients(samples)
    if problems:
        raise UserInputError(problems[0])
    valid_patients = choose_valid_patients(samples, patients, valid_fraction, seed)
    train_rows, valid_rows = [], []
    for sample in samples:
        relative = Path(os.path.relpath(sample.path, target)).as_posix()
        row = (f"./{relative}", sample.label, patients[sample.id])
        (valid_rows if patients[sample.id] in valid_patients else train_rows).append(row)
    if not train_rows or not valid_rows:
        raise UserInputError(
            f"cannot split {folder}: {len(set(patients.values()))} patient(s) are too few for a train and a valid split"
        )
    train_csv, valid_csv = target / SPLIT_CSVS["train"], target / SPLIT_CSVS["valid"]
    for path in (train_csv, valid_csv):
        if path.exists():
            raise UserInputError(f"{path.name} already exists in {target}; remove it to write a new split")
    _write_rows(train_csv, train_rows)
    _write_rows(valid_csv, valid_rows)
    return PatientSplit(
        train_csv=train_csv,
        valid_csv=valid_csv,
        train_images=len(train_rows),
        valid_images=len(valid_rows),
        train_patients=sorted({row[2] for row in train_rows}),
        valid_patients=sorted(valid_patients),
        valid_class_counts={label: sum(1 for row in valid_rows if row[1] == label) for label in (0, 1)},
    )


def choose_valid_patients(samples: list[Sample], patients: dict[str, str], valid_fraction: float, seed: int) -> set[str]:
    """Patients for the valid split: per class, patients in seeded random order, each taken if it
    brings the class's valid image count closer to valid_fraction of its images; at least one
    patient per class when the class has two or more, and never all of a class's patients."""
    images_of: Counter = Counter()
    labels_of: dict[str, Counter] = defaultdict(Counter)
    for sample in samples:
        patient = patients[sample.id]
        images_of[patient] += 1
        labels_of[patient][sample.label] += 1
    by_class: dict[int, list[str]] = defaultdict(list)
    for patient in sorted(images_of):
        by_class[labels_of[patient].most_common(1)[0][0]].append(patient)  # a C-NMC patient has one class

    rng = random.Random(seed)
    chosen: set[str] = set()
    for label in sorted(by_class):
        order = by_class[label][:]
        rng.shuffle(order)
        target = valid_fraction * sum(images_of[p] for p in order)
        taken: list[str] = []
        count = 0
        for patient in order:
            if len(taken) == len(order) - 1:
                break  # keep at least one patient of the class for training
            if abs(count + images_of[patient] - target) < abs(count - target):
                taken.append(patient)
                count += images_of[patient]
        if not taken and len(order) >= 2:
            taken.append(min(order, key=lambda p: images_of[p]))  # both classes in valid when possible
        chosen.update(taken)
    return chosen


def _csv_folder(folder: Path, out_dir: Path | None) -> Path:
    """Where the CSVs go: the data folder or a folder above it (so every Path stays inside), writable."""
    target = folder if out_dir is None else Path(os.path.abspath(out_dir))
    if inside_path(os.path.relpath(folder, target)) is None and target != folder:
        raise UserInputError(
            f"out_dir: must be the data folder or a folder above it, so the CSV paths stay inside it: {target}",
            field="out_dir",
        )
    if not target.is_dir():
        raise UserInputError(f"out_dir: folder not found: {target}", field="out_dir")
    if not os.access(target, os.W_OK):
        raise UserInputError(
            f"cannot write train.csv and valid.csv: {target} is not writable (symlink the images into a writable folder)"
        )
    return target


def _write_rows(path: Path, rows: list[tuple]) -> None:
    """Write Path,label,patient rows atomically: a crash leaves no half CSV."""
    try:
        with open_atomic(path, newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(["Path", "label", "patient"])
            writer.writerows(rows)
    except OSError as error:
        raise UserInputError(f"cannot write {path}: {error.strerror}") from None
