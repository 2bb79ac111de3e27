"""Data folder layouts and their validation: every bad row is one line naming the file and row.

Two layouts are understood:
- lab: `train.csv` and `valid.csv` (columns Path,label) and a test CSV (column Path), with
  `Path` relative to the data folder (`./new_dataset/train/0.bmp`); extra columns are ignored.
- cnmc: the original C-NMC 2019 tree, images named `*_all.bmp` (label 1) and `*_hem.bmp`
  (label 0) anywhere below the folder; the patient is in the name (`UID_11_...`, `UID_H10_...`).

Nothing here writes into the data folder, which may be read-only.
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from PIL import Image

from core.common.errors import UserInputError

IMAGE_SUFFIXES = (".bmp", ".png", ".jpg", ".jpeg", ".tif", ".tiff")
SPLITS = ("train", "valid", "train_all", "test")
SPLIT_CSVS = {"train": "train.csv", "valid": "valid.csv"}
PATH_COLUMN = "Path"
LABEL_COLUMN = "label"
PATIENT_COLUMN = "patient"  # optional; written by `leukemia check --write-csv`
LABELS = {"0": 0, "1": 1}
CNMC_SUFFIX_LABELS = {"_all": 1, "_hem": 0}
# UID_11_1_1_all.bmp -> 11, UID_H10_1_1_hem.bmp -> H10 (a few originals spell it h3).
PATIENT_PATTERN = re.compile(r"^UID_(H?\d+)_", re.IGNORECASE)


@dataclass(frozen=True)
class Sample:
    """One image of a split, and where it came from for messages."""

    path: Path  # absolute, lexically inside the data folder
    id: str  # the CSV's Path cell unchanged (the submission ID); tree layouts: path relative to the folder
    label: int | None  # 0 normal (hem), 1 malignant (ALL); None for an unlabelled (test) CSV
    source: str  # "train.csv row 12" (1-based data row) or the relative path for tree layouts
    subject: str | None = None  # the patient, where known (C-NMC names, a CSV's patient column)


@dataclass(frozen=True)
class CsvRead:
    """What reading a CSV found: the good rows, and every problem (one line each)."""

    samples: list[Sample]
    problems: list[str]


def data_folder(data_dir: Path | str) -> Path:
    """The data folder as an absolute path (symlinks kept), or a UserInputError if it is not a folder."""
    folder = Path(os.path.abspath(data_dir))
    if not folder.exists():
        raise UserInputError(f"data folder not found: {folder}")
    if not folder.is_dir():
        raise UserInputError(f"data folder is not a folder: {folder}")
    return folder


def inside_path(relative: str) -> str | None:
    """The normalised relative path, or None if it is absolute or leaves the folder.

    Checked lexically, not with resolve(), so a data folder whose subfolders are
    symlinks to elsewhere still works."""
    if not relative or os.path.isabs(relative):
        return None
    normal = os.path.normpath(relative)
    if normal == ".." or normal.startswith("../") or normal == ".":
        return None
    return normal


def read_csv_samples(data_dir: Path, csv_name: str, *, labelled: bool) -> list[Sample]:
    """The samples of one CSV of the data folder; the first bad row is a UserInputError."""
    result = scan_csv(data_dir, csv_name, labelled=labelled)
    if result.problems:
        more = len(result.problems) - 1
        suffix = f" (and {more} more problem{'s' if more > 1 else ''}: run `leukemia check`)" if more else ""
        raise UserInputError(result.problems[0] + suffix)
    return result.samples


def scan_csv(data_dir: Path, csv_name: str, *, labelled: bool) -> CsvRead:
    """Read a CSV of the data folder, collecting every bad row instead of stopping at the first."""
    folder = data_folder(data_dir)
    csv_path = _csv_path(folder, csv_name)
    header, rows = read_rows(csv_path, csv_name)
    columns = _column_positions(header, csv_name, labelled=labelled)
    samples: list[Sample] = []
    problems: list[str] = []
    data_rows = 0
    for row_number, cells in enumerate(rows, start=1):
        if not any(cell.strip() for cell in cells):
            continue  # blank line
        data_rows += 1
        source = f"{csv_name} row {row_number}"
        try:
            samples.append(_sample_from_row(folder, cells, columns, source, labelled=labelled))
        except UserInputError as error:
            problems.append(str(error))
    if data_rows == 0:
        problems.append(f"{csv_name}: no rows")
    return CsvRead(samples=samples, problems=problems)


def _csv_path(folder: Path, csv_name: str) -> Path:
    relative = inside_path(csv_name)
    if relative is None:
        raise UserInputError(f"{csv_name}: CSV path escapes the data folder {folder}")
    csv_path = folder / relative
    if not csv_path.is_file():
        raise UserInputError(f"{csv_name}: file not found in {folder}")
    return csv_path


def read_rows(csv_path: Path, csv_name: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV; an empty, binary or malformed file is one line."""
    try:
        # utf-8-sig: spreadsheet programs often prepend a byte-order mark.
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            text = handle.read()
    except UnicodeDecodeError:
        raise UserInputError(f"{csv_name}: not a CSV text file (not UTF-8)") from None
    except OSError as error:
        raise UserInputError(f"{csv_name}: cannot read: {error.strerror}") from None
    if "\x00" in text:
        raise UserInputError(f"{csv_name}: not a CSV text file (binary data)")
    try:
        records = list(csv.reader(io.StringIO(text)))
    except csv.Error as error:
        raise UserInputError(f"{csv_name}: malformed CSV: {error}") from None
    if not records or not any(cell.strip() for cell in records[0]):
        raise UserInputError(f"{csv_name}: empty file (expected a header row, e.g. Path,label)")
    return [cell.strip() for cell in records[0]], records[1:]


def _column_positions(header: list[str], csv_name: str, *, labelled: bool) -> dict[str, int]:
    wanted = [PATH_COLUMN, LABEL_COLUMN] if labelled else [PATH_COLUMN]
    lowered = [name.lower() for name in header]
    positions = {}
    for column in wanted:
        if column.lower() not in lowered:
            raise UserInputError(f"{csv_name}: missing column '{column}'")
        positions[column] = lowered.index(column.lower())
    if PATIENT_COLUMN in lowered:
        positions[PATIENT_COLUMN] = lowered.index(PATIENT_COLUMN)
    return positions


def _sample_from_row(folder: Path, cells: list[str], columns: dict[str, int], source: str, *, labelled: bool) -> Sample:
    if len(cells) <= max(columns[PATH_COLUMN], columns.get(LABEL_COLUMN, 0)):
        raise UserInputError(f"{source}: too few fields ({len(cells)})")
    cell = cells[columns[PATH_COLUMN]].strip()
    if not cell:
        raise UserInputError(f"{source}: empty Path")
    relative = inside_path(cell)
    if relative is None:
        raise UserInputError(f"{source}: path escapes the data folder: {cell}")
    if not relative.lower().endswith(IMAGE_SUFFIXES):
        raise UserInputError(f"{source}: not an image file name (expected {', '.join(IMAGE_SUFFIXES)}): {cell}")
    label = None
    if labelled:
        raw = cells[columns[LABEL_COLUMN]].strip()
        if raw not in LABELS:
            raise UserInputError(f"{source}: label must be 0 or 1, got '{raw}'")
        label = LABELS[raw]
    path = folder / relative
    if not path.is_file():
        raise UserInputError(f"{source}: image not found: {cell}")
    return Sample(path=path, id=cell, label=label, source=source, subject=_subject(cells, columns, relative))


def _subject(cells: list[str], columns: dict[str, int], relative: str) -> str | None:
    """The row's patient column if it has one, else the patient in a C-NMC file name, else None."""
    at = columns.get(PATIENT_COLUMN)
    if at is not None and at < len(cells) and cells[at].strip():
        return cells[at].strip()
    match = PATIENT_PATTERN.match(os.path.basename(relative))
    return match.group(1).upper() if match else None


def candidate_test_csvs(data_dir: Path) -> list[str]:
    """CSV names in the folder containing "test" that have a Path column and no label column."""
    return [name for name, labelled in folder_csvs(data_dir).items() if "test" in name.lower() and not labelled]


def folder_csvs(data_dir: Path) -> dict[str, bool]:
    """The CSV files at the top of the folder that a job may read (a Path column), in name order, each
    mapped to whether it has a label column; a file that is not a readable CSV is left out."""
    folder = data_folder(data_dir)
    found = {}
    for csv_path in sorted(folder.glob("*.csv")):
        if not csv_path.is_file():
            continue
        try:
            header, _ = read_rows(csv_path, csv_path.name)
        except UserInputError:
            continue  # not a readable CSV: nothing a job could read
        lowered = [name.lower() for name in header]
        if PATH_COLUMN.lower() in lowered:
            found[csv_path.name] = LABEL_COLUMN.lower() in lowered
    return found


def find_test_csv(data_dir: Path) -> str:
    """The name of the folder's one test CSV (Path column, no label column, "test" in the name)."""
    names = candidate_test_csvs(data_dir)
    folder = data_folder(data_dir)
    if not names:
        raise UserInputError(f"no test CSV in {folder}: expected one *test*.csv with a Path column and no label column")
    if len(names) > 1:
        raise UserInputError(f"several test CSVs in {folder}: {', '.join(names)}; name the one to use")
    return names[0]


def read_split(data_dir: Path, split: str) -> list[Sample]:
    """The samples of a split of a lab-layout folder: train, valid, train_all (train + valid) or test."""
    if split not in SPLITS:
        raise UserInputError(f"split: unknown split {split!r}; choose one of {', '.join(SPLITS)}", field="split")
    folder = data_folder(data_dir)
    if split == "test":
        return read_csv_samples(folder, find_test_csv(folder), labelled=False)
    names = ["train", "valid"] if split == "train_all" else [split]
    samples: list[Sample] = []
    for name in names:
        csv_name = SPLIT_CSVS[name]
        if not (folder / csv_name).is_file() and _has_cnmc_images(folder):
            raise UserInputError(
                f"{csv_name}: file not found in {folder}; it holds C-NMC images: "
                f"`leukemia check {folder} --write-csv` writes a patient-safe train.csv and valid.csv"
            )
        samples.extend(read_csv_samples(folder, csv_name, labelled=True))
    return samples


def detect_layout(data_dir: Path) -> str:
    """ "lab" if the folder has train.csv, "cnmc" if it holds *_all / *_hem images, else a UserInputError."""
    folder = data_folder(data_dir)
    if (folder / SPLIT_CSVS["train"]).is_file():
        return "lab"
    if _has_cnmc_images(folder):
        return "cnmc"
    raise UserInputError(f"no data in {folder}: expected train.csv (lab layout) or *_all.bmp / *_hem.bmp images (C-NMC layout)")


def cnmc_label(file_name: str) -> int | None:
    """1 for *_all images, 0 for *_hem images, None for any other file."""
    stem, suffix = os.path.splitext(os.path.basename(file_name))
    if suffix.lower() not in IMAGE_SUFFIXES:
        return None
    return CNMC_SUFFIX_LABELS.get(stem[-4:].lower())


def cnmc_samples(data_dir: Path) -> list[Sample]:
    """Every *_all / *_hem image below the folder, sorted by path, labelled from its name."""
    folder = data_folder(data_dir)
    samples = []
    for relative in sorted(walk_files(folder)):
        label = cnmc_label(relative)
        if label is not None:
            subject = PATIENT_PATTERN.match(os.path.basename(relative))
            samples.append(
                Sample(
                    path=folder / relative,
                    id=relative,
                    label=label,
                    source=relative,
                    subject=subject.group(1).upper() if subject else None,
                )
            )
    if not samples:
        raise UserInputError(f"no *_all / *_hem images found in {folder}")
    return samples


def patient_of(file_name: str) -> str:
    """The C-NMC patient id in a file name: UID_11_1_1_all.bmp -> "11", UID_H10_1_1_hem.bmp -> "H10"."""
    name = os.path.basename(file_name)
    match = PATIENT_PATTERN.match(name)
    if match is None:
        raise UserInputError(
            f"{file_name}: cannot tell the patient from the file name (expected UID_<patient>_..._all.bmp "
            "or UID_H<n>_..._hem.bmp)"
        )
    return match.group(1).upper()


def open_image(sample: Sample) -> Image.Image:
    """The sample's image in RGB; a missing, corrupt or unreadable file is a UserInputError."""
    try:
        with Image.open(sample.path) as image:
            image.load()
            return image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        # PIL signals bad files with all of these; the reason is for the user, not a bug.
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise UserInputError(f"corrupt or unreadable image {sample.id} ({sample.source}): {reason}") from None


def _has_cnmc_images(folder: Path) -> bool:
    return any(cnmc_label(relative) is not None for relative in walk_files(folder))


def walk_files(folder: Path) -> Iterator[str]:
    """Relative POSIX paths of all files below the folder; follows symlinked folders, each once."""
    seen_folders: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_folders:  # a symlink loop or a second link to the same folder
            dirs[:] = []
            continue
        seen_folders.add(real)
        dirs.sort()
        relative_root = os.path.relpath(root, folder)
        for name in sorted(files):
            yield Path(relative_root, name).as_posix() if relative_root != "." else name
