"""The C-NMC 2019 release as downloaded (TCIA, or the `C-NMC_Leukemia` mirror folder), read as is:

    training_data/fold_0/{all,hem}/UID_<subject>_<image>_<cell>_<all|hem>.bmp   (fold_1, fold_2 alike)
    validation_data/C-NMC_test_prelim_phase_data/1.bmp, 2.bmp, ...
    validation_data/C-NMC_test_prelim_phase_data_labels.csv    Patient_ID,new_names,labels
    testing_data/C-NMC_test_final_phase_data/1.bmp, 2.bmp, ...   (no labels)

at the top of the data folder or one folder down. Every problem is one line naming the file or
row; nothing is written anywhere. Sample ids are paths relative to the data folder (the
submission ID), and the numbered prelim/final images come in file-number order (1, 2, ... 10).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from core.common.errors import UserInputError
from core.engine.data.layouts import IMAGE_SUFFIXES, Sample, cnmc_label, patient_of, read_rows, walk_files

TRAINING = "training_data"
PRELIM_DIR = Path("validation_data", "C-NMC_test_prelim_phase_data")
PRELIM_CSV = Path("validation_data", "C-NMC_test_prelim_phase_data_labels.csv")
FINAL_DIR = Path("testing_data", "C-NMC_test_final_phase_data")
PRELIM_COLUMNS = ("Patient_ID", "new_names", "labels")
FOLD_PATTERN = re.compile(r"^fold_(\d+)$")
CLASS_FOLDERS = {"all": 1, "hem": 0}


@dataclass(frozen=True)
class Release:
    """Where the parts of a release are; `base` is the data folder the user named (ids are relative to it)."""

    base: Path
    root: Path  # the folder holding training_data/ etc.: base itself or one folder below it
    folds: dict[int, Path]

    @property
    def prelim_dir(self) -> Path:
        return self.root / PRELIM_DIR

    @property
    def prelim_csv(self) -> Path:
        return self.root / PRELIM_CSV

    @property
    def final_dir(self) -> Path:
        return self.root / FINAL_DIR

    def relative(self, path: Path) -> str:
        return Path(os.path.relpath(path, self.base)).as_posix()


@dataclass
class PartRead:
    """One part (fold_0, prelim, final): its samples and every problem found (one line each)."""

    name: str
    source: str  # folder relative to the data folder
    samples: list[Sample]
    problems: list[str]


def _is_root(folder: Path) -> bool:
    return any((folder / part).is_dir() for part in (TRAINING, PRELIM_DIR.parts[0], FINAL_DIR.parts[0]))


def find_release(folder: Path) -> Release | None:
    """The release in the folder or in exactly one of its subfolders, or None; two candidates is an error.
    A folder with a lab train.csv is a lab folder, whatever else it holds."""
    if (folder / "train.csv").is_file():
        return None
    if _is_root(folder):
        root = folder
    else:
        candidates = sorted(child for child in folder.iterdir() if child.is_dir() and _is_root(child))
        if not candidates:
            return None
        if len(candidates) > 1:
            names = ", ".join(c.name for c in candidates)
            raise UserInputError(f"{folder}: several C-NMC release folders ({names}); name the one to use")
        root = candidates[0]
    folds = {}
    training = root / TRAINING
    if training.is_dir():
        for child in sorted(training.iterdir()):
            match = FOLD_PATTERN.match(child.name)
            if match and child.is_dir():
                folds[int(match.group(1))] = child
    return Release(base=folder, root=root, folds=folds)


def read_fold(release: Release, fold: int) -> PartRead:
    """The *_all / *_hem images of one training fold, labelled from their names, subject from `UID_<subject>_`."""
    if fold not in release.folds:
        known = ", ".join(str(k) for k in sorted(release.folds)) or "none"
        raise UserInputError(f"fold {fold}: no {TRAINING}/fold_{fold} in {release.root} (folds: {known})")
    folder = release.folds[fold]
    part = PartRead(name=f"fold_{fold}", source=release.relative(folder), samples=[], problems=[])
    for inner in walk_files(folder):
        if not inner.lower().endswith(IMAGE_SUFFIXES):
            continue
        relative = release.relative(folder / inner)
        label = cnmc_label(inner)
        if label is None:
            part.problems.append(f"{relative}: not named *_all or *_hem, so its class is unknown")
            continue
        class_folder = CLASS_FOLDERS.get(inner.split("/")[0].lower()) if "/" in inner else None
        if class_folder is not None and class_folder != label:
            part.problems.append(f"{relative}: a {'_all' if label else '_hem'} image in the {inner.split('/')[0]}/ folder")
            continue
        try:
            subject = patient_of(inner)
        except UserInputError as error:
            part.problems.append(f"{relative}: {str(error).split(': ', 1)[1]}")
            continue
        part.samples.append(Sample(path=folder / inner, id=relative, label=label, source=relative, subject=subject))
    if not part.samples and not part.problems:
        part.problems.append(f"{part.source}: no images")
    return part


def read_prelim(release: Release) -> PartRead:
    """The numbered prelim images with their labels from the CSV; subject and a cross-check from Patient_ID."""
    csv_name = release.relative(release.prelim_csv)
    part = PartRead(name="prelim", source=release.relative(release.prelim_dir), samples=[], problems=[])
    if not release.prelim_dir.is_dir():
        raise UserInputError(f"prelim: no {PRELIM_DIR.as_posix()} folder in {release.root}")
    if not release.prelim_csv.is_file():
        raise UserInputError(f"prelim: no {PRELIM_CSV.as_posix()} in {release.root} (the prelim labels)")
    header, rows = read_rows(release.prelim_csv, csv_name)
    lowered = [name.lower() for name in header]
    missing = [c for c in PRELIM_COLUMNS if c.lower() not in lowered]
    if missing:
        raise UserInputError(f"{csv_name}: missing column '{missing[0]}' (expected {','.join(PRELIM_COLUMNS)})")
    patient_at, name_at, label_at = (lowered.index(c.lower()) for c in PRELIM_COLUMNS)
    images = {name: release.prelim_dir / name for name in _numbered_images(release.prelim_dir)}
    first_row: dict[str, int] = {}
    for row_number, cells in enumerate(rows, start=1):
        if not any(cell.strip() for cell in cells):
            continue
        source = f"{csv_name} row {row_number}"
        if len(cells) <= max(patient_at, name_at, label_at):
            part.problems.append(f"{source}: too few fields ({len(cells)})")
            continue
        patient_id, name, raw_label = (cells[i].strip() for i in (patient_at, name_at, label_at))
        if name in first_row:
            part.problems.append(f"{source}: new_names {name} listed twice (first in row {first_row[name]})")
            continue
        first_row[name] = row_number
        if raw_label not in ("0", "1"):
            part.problems.append(f"{source}: labels must be 0 or 1, got '{raw_label}'")
            continue
        label = int(raw_label)
        if name not in images:
            part.problems.append(f"{source}: image not found: {part.source}/{name}")
            continue
        named_label = cnmc_label(patient_id)
        if named_label is not None and named_label != label:
            part.problems.append(f"{source}: labels says {label} but Patient_ID {patient_id} says {named_label}")
            continue
        try:
            subject = patient_of(patient_id)
        except UserInputError:
            subject = None  # the subject is a bonus here; the label is what counts
        relative = release.relative(images[name])
        part.samples.append(Sample(path=images[name], id=relative, label=label, source=source, subject=subject))
    for name in images:
        if name not in first_row:
            part.problems.append(f"{part.source}/{name}: no row in {csv_name}")
    part.samples.sort(key=lambda s: number_order(s.path.name))
    return part


def read_final(release: Release) -> PartRead:
    """The numbered, unlabelled final-phase images in file-number order."""
    if not release.final_dir.is_dir():
        raise UserInputError(f"final: no {FINAL_DIR.as_posix()} folder in {release.root}")
    part = PartRead(name="final", source=release.relative(release.final_dir), samples=[], problems=[])
    for name in _numbered_images(release.final_dir):
        path = release.final_dir / name
        relative = release.relative(path)
        part.samples.append(Sample(path=path, id=relative, label=None, source=relative))
    if not part.samples:
        part.problems.append(f"{part.source}: no images")
    return part


def read_parts(release: Release) -> list[PartRead]:
    """Every part present: each fold, prelim (when its folder is there), final (when its folder is there)."""
    parts = [read_fold(release, fold) for fold in sorted(release.folds)]
    if release.prelim_dir.is_dir() or release.prelim_csv.is_file():
        try:
            parts.append(read_prelim(release))
        except UserInputError as error:
            parts.append(PartRead(name="prelim", source=release.relative(release.prelim_dir), samples=[], problems=[str(error)]))
    if release.final_dir.is_dir():
        parts.append(read_final(release))
    return parts


def shared_subjects(folds: list[PartRead]) -> dict[str, list[str]]:
    """Subjects found in more than one fold → the folds they are in (the folds are subject-disjoint if empty)."""
    found: dict[str, list[str]] = {}
    for part in folds:
        for subject in sorted({s.subject for s in part.samples if s.subject is not None}):
            found.setdefault(subject, []).append(part.name)
    return {subject: names for subject, names in sorted(found.items()) if len(names) > 1}


def number_order(name: str) -> tuple[int, str]:
    """Sort key putting 2.bmp before 10.bmp (names without a number go last, by name)."""
    stem = os.path.splitext(name)[0]
    return (int(stem), name) if stem.isdigit() else (2**63, name)


def _numbered_images(folder: Path) -> list[str]:
    names = [p.name for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES)]
    return sorted(names, key=number_order)
