"""`leukemia check`: validate a whole data folder, reporting every problem at once, and
turn an original C-NMC tree into lab CSVs with a patient-safe train/valid split.

Unlike read_split, which stops at the first bad row, the check decodes every image and
keeps going, so one run lists everything a user has to fix.
"""

from __future__ import annotations

import csv
import os
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from core.common.atomic import open_atomic
from core.engine.data import (
    SPLIT_CSVS,
    Sample,
    candidate_test_csvs,
    cnmc_samples,
    data_folder,
    detect_layout,
    inside_path,
    open_image,
    patient_of,
    scan_csv,
)
from core.common.errors import UserInputError
from core.engine.settings import engine_settings
from core.engine.spreadsheet_csv import formula_like
from core.engine.release import Release, find_release, read_parts, shared_subjects


@dataclass
class SplitReport:
    """What the check found in one split (a CSV of a lab folder, or images of a C-NMC tree)."""

    name: str  # train, valid, test, all, or a top-level folder of a C-NMC tree
    source: str  # the CSV name, or the folder ("." for the whole tree)
    images: int = 0
    class_counts: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})
    unlabelled: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    patients: int | None = None  # C-NMC trees only
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "source": self.source,
            "images": self.images,
            "class_counts": {str(label): count for label, count in self.class_counts.items()},
            "unlabelled": self.unlabelled,
            "sizes": {f"{w}x{h}": count for (w, h), count in sorted(self.sizes.items())},
            "patients": self.patients,
            "problems": self.problems,
        }


@dataclass
class CheckReport:
    """A data folder's layout, its splits, and every problem found (one line each)."""

    data_dir: Path
    layout: str  # "lab", "cnmc" (a flat tree of *_all/*_hem images) or "release" (C-NMC 2019 as downloaded)
    splits: list[SplitReport]
    problems: list[str] = field(default_factory=list)  # across splits (e.g. an image in train and valid)
    notes: list[str] = field(default_factory=list)  # worth knowing, not wrong
    warnings: list[str] = field(default_factory=list)  # may be wrong for some uses (folds sharing subjects)
    shared_subjects: dict[str, list[str]] | None = None  # release: subject -> folds, for subjects in several

    @property
    def image_size(self) -> int | None:
        """The side of every image when all are the same square size, else None."""
        sizes = {size for split in self.splits for size in split.sizes}
        if len(sizes) == 1:
            width, height = sizes.pop()
            return width if width == height else None
        return None

    @property
    def all_problems(self) -> list[str]:
        return [p for split in self.splits for p in split.problems] + self.problems

    @property
    def ok(self) -> bool:
        return not self.all_problems

    def to_dict(self) -> dict:
        return {
            "data_dir": str(self.data_dir),
            "layout": self.layout,
            "ok": self.ok,
            "splits": [split.to_dict() for split in self.splits],
            "problems": self.all_problems,
            "warnings": self.warnings,
            "notes": self.notes,
            "image_size": self.image_size,
            "folds_subject_disjoint": None if self.shared_subjects is None else not self.shared_subjects,
            "shared_subjects": self.shared_subjects,
        }


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


def check_folder(data_dir: Path) -> CheckReport:
    """Check every CSV row and decode every image of a data folder; a missing folder is a UserInputError."""
    folder = data_folder(data_dir)
    release = find_release(folder)
    if release is not None:
        report = _check_release(release)
    elif detect_layout(folder) == "lab":
        report = _check_lab(folder)
    else:
        report = _check_cnmc(folder)
    report.warnings.extend(_link_warning(link, target) for link, target in links_outside_roots(folder))
    return report


def links_outside_roots(folder: Path, roots: list[Path] | None = None) -> list[tuple[Path, Path]]:
    """(link, real target) of every symlink below `folder` that leads outside the data roots (DATA_ROOTS),
    looked for as the readers reach files: symlinked folders inside the roots are followed (each real folder
    once); one leading out is reported, not entered.

    The folder itself was checked against the roots when it was registered; a link below it, even one in a
    folder that a link inside the roots leads to, would let a web job read any file the worker can."""
    roots = [root.resolve() for root in (roots or engine_settings().data_root_paths)]
    found: list[tuple[Path, Path]] = []
    seen: set[str] = set()
    for directory, subfolders, files in os.walk(folder, followlinks=True):
        real_directory = os.path.realpath(directory)
        if real_directory in seen:  # a second link to one folder, or a loop: its entries were looked at
            subfolders[:] = []
            continue
        seen.add(real_directory)
        entered = []
        for name in sorted(subfolders + files):
            path = Path(directory) / name
            target = Path(os.path.realpath(path)) if path.is_symlink() else None  # realpath: loops do not raise
            if target is not None and not any(target.is_relative_to(root) for root in roots):
                found.append((path, target))
            elif name in subfolders:
                entered.append(name)
        subfolders[:] = entered
    return found


def _link_warning(link: Path, target: Path) -> str:
    return (f"{link} is a symlink to {target}, outside DATA_ROOTS; jobs submitted from the web read only "
            "files inside the data roots")  # fmt: skip


def require_inside_data_roots(folder: Path, roots: list[Path] | None = None, *, field: str = "data_dir") -> None:
    """Refuse, naming the first one, a folder any file or folder of which leads out of the data roots: a job
    submitted from the web (field data_dir) and a folder's registration (field path) read none of them."""
    outside = links_outside_roots(folder, roots) if folder.is_dir() else []
    if outside:
        raise UserInputError(f"{field}: {_link_warning(*outside[0])}", field=field)


def _check_lab(folder: Path) -> CheckReport:
    report = CheckReport(data_dir=folder, layout="lab", splits=[])
    read_samples: dict[str, list[Sample]] = {}
    csvs = [(split, name, True) for split, name in SPLIT_CSVS.items()]
    test_names = candidate_test_csvs(folder)
    if not test_names:
        report.notes.append("no test CSV (a *test*.csv with a Path column and no label column); predict needs one")
    csvs += [("test", name, False) for name in test_names]
    for split, csv_name, labelled in csvs:
        split_report = SplitReport(name=split, source=csv_name)
        try:
            result = scan_csv(folder, csv_name, labelled=labelled)
        except UserInputError as error:  # the whole file is unusable: missing, empty, no Path column
            split_report.problems.append(str(error))
        else:
            split_report.problems.extend(result.problems)
            split_report.problems.extend(_duplicate_rows(result.samples))
            _count_images(result.samples, split_report)
            read_samples[csv_name] = result.samples
            report.warnings.extend(_formula_names(csv_name, result.samples))
        report.splits.append(split_report)
    report.problems.extend(_shared_images(read_samples))
    return report


def _check_cnmc(folder: Path) -> CheckReport:
    samples = cnmc_samples(folder)
    whole = SplitReport(name="all", source=".")
    decoded = _count_images(samples, whole)
    patients, unknown = _patients(samples)
    whole.patients = len(set(patients.values()))
    whole.problems.extend(unknown)
    report = CheckReport(data_dir=folder, layout="cnmc", splits=[whole])
    report.notes.append(
        "C-NMC layout: labels from the _all/_hem file names; "
        "`leukemia check DIR --write-csv` writes a patient-safe train.csv and valid.csv"
    )
    report.splits.extend(_top_folder_reports(samples, decoded, patients))
    report.warnings.extend(_formula_names(str(folder), samples))
    return report


def _check_release(release: Release) -> CheckReport:
    """Each fold, prelim and final: counts, subjects, sizes, every problem; folds sharing subjects is a warning."""
    report = CheckReport(data_dir=release.base, layout="release", splits=[])
    parts = read_parts(release)
    for part in parts:
        split = SplitReport(name=part.name, source=part.source, problems=list(part.problems))
        _count_images(part.samples, split)
        if part.name != "final":
            split.patients = len({s.subject for s in part.samples if s.subject is not None})
        report.splits.append(split)
        report.warnings.extend(_formula_names(part.source, part.samples))
    folds = [part for part in parts if part.name.startswith("fold_")]
    if not folds:
        report.notes.append("no training_data/fold_N folders: nothing to train on")
    report.shared_subjects = shared_subjects(folds)
    if report.shared_subjects:
        listed = "; ".join(f"{subject} ({', '.join(names)})" for subject, names in report.shared_subjects.items())
        report.warnings.append(
            f"the folds are not subject-disjoint: {len(report.shared_subjects)} subject(s) in several folds: {listed}"
        )
    elif len(folds) > 1:
        report.notes.append(f"the {len(folds)} folds are subject-disjoint (no subject in two folds)")
    if release.root != release.base:
        report.notes.append(f"release found one folder down: {release.relative(release.root)}/")
    return report


def _formula_names(where: str, samples: list[Sample]) -> list[str]:
    """A warning naming the file (or folder) whose image names a spreadsheet would run as formulas
    (=1+2.bmp): they work, but core.engine.spreadsheet_csv has to write them escaped."""
    named = [sample for sample in samples if formula_like(sample.id)]
    if not named:
        return []
    shown = ", ".join(repr(s.id) if s.source == s.id else f"{s.source} {s.id!r}" for s in named[:3])
    more = f" and {len(named) - 3} more" if len(named) > 3 else ""
    return [f"{where}: {len(named)} image name(s) begin like a spreadsheet formula (=, +, -, @, tab or CR): "
            f"{shown}{more}; the CSVs for people (per_image.csv, explanations.csv, subjects.csv, oof.csv) write "
            "them with a leading ', the submission CSV (predictions.csv) keeps them exact"]


def _count_images(samples: list[Sample], report: SplitReport) -> set[str]:
    """Decode every image, counting classes and sizes; a bad image is a problem, not a stop.
    Returns the ids of the images that decoded."""
    decoded = set()
    for sample in samples:
        try:
            image = open_image(sample)
        except UserInputError as error:
            report.problems.append(str(error))
            continue
        decoded.add(sample.id)
        report.images += 1
        report.sizes[image.size] += 1
        if sample.label is None:
            report.unlabelled += 1
        else:
            report.class_counts[sample.label] += 1
    return decoded


def _duplicate_rows(samples: list[Sample]) -> list[str]:
    first_source: dict[str, str] = {}
    problems = []
    for sample in samples:
        key = inside_path(sample.id) or sample.id
        if key in first_source:
            problems.append(f"{sample.source}: same image as {first_source[key]}: {sample.id}")
        else:
            first_source[key] = sample.source
    return problems


def _shared_images(read_samples: dict[str, list[Sample]]) -> list[str]:
    """An image in both train.csv and valid.csv leaks the validation score."""
    train = {inside_path(s.id): s for s in read_samples.get(SPLIT_CSVS["train"], [])}
    problems = []
    for sample in read_samples.get(SPLIT_CSVS["valid"], []):
        other = train.get(inside_path(sample.id))
        if other is not None:
            problems.append(f"{sample.source}: same image as {other.source}: {sample.id}")
    return problems


def _patients(samples: list[Sample]) -> tuple[dict[str, str], list[str]]:
    """Patient of each sample id, and one problem per file name with no patient in it."""
    patients, problems = {}, []
    for sample in samples:
        try:
            patients[sample.id] = patient_of(sample.id)
        except UserInputError as error:
            problems.append(str(error))
    return patients, problems


def _top_folder_reports(samples: list[Sample], decoded: set[str], patients: dict[str, str]) -> list[SplitReport]:
    """One row per top-level folder (fold_0, fold_1, ...) when there are several; counts only, no re-decoding."""
    groups: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        groups[sample.id.split("/")[0] if "/" in sample.id else "."].append(sample)
    if len(groups) < 2:
        return []
    reports = []
    for name, members in sorted(groups.items()):
        report = SplitReport(name=name, source=name)
        report.patients = len({patients[s.id] for s in members if s.id in patients})
        for sample in members:
            if sample.id in decoded:
                report.images += 1
                report.class_counts[sample.label] += 1
        reports.append(report)
    return reports


def write_patient_split(
    data_dir: Path, out_dir: Path | None = None, valid_fraction: float = 0.2, seed: int = 0
) -> PatientSplit:
    """Write train.csv and valid.csv for a C-NMC tree, with no patient in both, deterministic for a seed.

    The CSVs go into the data folder (or a folder above it), so their Paths stay inside
    the folder they are in; existing train.csv/valid.csv are never overwritten."""
    if not 0.0 < valid_fraction < 1.0:
        raise UserInputError(
            f"valid_fraction: must be between 0 and 1 (exclusive), got {valid_fraction}", field="valid_fraction"
        )
    folder = data_folder(data_dir)
    target = _csv_folder(folder, out_dir)
    samples = cnmc_samples(folder)
    patients, problems = _patients(samples)
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


def choose_valid_patients(
    samples: list[Sample], patients: dict[str, str], valid_fraction: float, seed: int
) -> set[str]:
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
        raise UserInputError(f"cannot write train.csv and valid.csv: {target} is not writable (symlink the images into a writable folder)")
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


def format_report(report: CheckReport) -> str:
    """The report as readable text: a table of splits, then every problem and note, one per line."""
    header = ("split", "source", "images", "ALL (1)", "hem (0)", "no label", "patients", "sizes")
    rows = [header] + [
        (
            split.name,
            split.source,
            str(split.images),
            str(split.class_counts[1]),
            str(split.class_counts[0]),
            str(split.unlabelled),
            "-" if split.patients is None else str(split.patients),
            _format_sizes(split.sizes),
        )
        for split in report.splits
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"data folder: {report.data_dir}", f"layout:      {report.layout}", ""]
    for row in rows:
        cells = [cell.rjust(width) if 2 <= i <= 6 else cell.ljust(width) for i, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    problems = report.all_problems
    if problems:
        lines += ["", f"problems ({len(problems)}):"] + [f"  {problem}" for problem in problems]
    if report.warnings:
        lines += ["", "warnings:"] + [f"  {warning}" for warning in report.warnings]
    if report.notes:
        lines += ["", "notes:"] + [f"  {note}" for note in report.notes]
    lines += ["", "OK: no problems found" if not problems else f"{len(problems)} problem(s) found"]
    return "\n".join(lines)


def _format_sizes(sizes: Counter) -> str:
    common = [f"{w}x{h}: {count}" for (w, h), count in sizes.most_common(3)]
    if len(sizes) > 3:
        common.append(f"+{len(sizes) - 3} more sizes")
    return ", ".join(common) or "-"
