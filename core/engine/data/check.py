"""`leukemia check`: validate a whole data folder, reporting every problem at once.

Unlike read_split, which stops at the first bad row, the check decodes every image and
keeps going, so one run lists everything a user has to fix. The patient-safe C-NMC → lab CSV
split is core.engine.data.patient_split; the symlink scan against DATA_ROOTS is core.engine.data.data_roots.

`check_folder(dir) -> CheckReport` works per layout (lab, C-NMC tree, release): problems, warnings (image
names that start like a spreadsheet formula, symlinks leading outside DATA_ROOTS), images, classes and
known patients per split and in all, and `split_names` (core.engine.data.splits.offered_splits: the CSV
files and named splits a job may read). `format_report` writes it for the terminal.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from core.common.errors import UserInputError
from core.engine.data.data_roots import link_warning, links_outside_roots
from core.engine.data.layouts import (
    SPLIT_CSVS,
    Sample,
    candidate_test_csvs,
    cnmc_samples,
    data_folder,
    detect_layout,
    inside_path,
    open_image,
    scan_csv,
)
from core.engine.data.patient_split import sample_patients
from core.engine.data.release import Release, find_release, read_parts, shared_subjects
from core.engine.data.splits import offered_splits
from core.engine.run_folder.spreadsheet_csv import formula_like


@dataclass
class SplitReport:
    """What the check found in one split (a CSV of a lab folder, or images of a C-NMC tree)."""

    name: str  # train, valid, test, all, or a top-level folder of a C-NMC tree
    source: str  # the CSV name, or the folder ("." for the whole tree)
    images: int = 0
    class_counts: dict[int, int] = field(default_factory=lambda: {0: 0, 1: 0})
    unlabelled: int = 0
    sizes: Counter = field(default_factory=Counter)  # (width, height) -> images
    patients: int | None = None  # known subjects (C-NMC names, a CSV's patient column); None when none is known
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
    patients: int | None = None  # distinct known subjects in all the splits; None when none is known
    # what a job may name as its split or CSV: {"labelled": [...], "unlabelled": [...]} (splits.offered_splits)
    split_names: dict[str, list[str]] = field(default_factory=dict)

    @property
    def image_size(self) -> int | None:
        """The side of every image when all are the same square size, else None."""
        sizes = {size for split in self.splits for size in split.sizes}
        if len(sizes) == 1:
            width, height = sizes.pop()
            return width if width == height else None
        return None

    @property
    def whole(self) -> list[SplitReport]:
        """The splits that together hold each image once (a C-NMC tree's first row is all of it; its others, its folders)."""
        return self.splits[:1] if self.layout == "cnmc" else self.splits

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
            "images": sum(split.images for split in self.whole),
            "class_counts": {str(label): sum(split.class_counts[label] for split in self.whole) for label in (0, 1)},
            "unlabelled": sum(split.unlabelled for split in self.whole),
            "patients": self.patients,
            "split_names": self.split_names,
        }


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
    report.warnings.extend(link_warning(link, target) for link, target in links_outside_roots(folder))
    report.split_names = offered_splits(folder)
    return report


def _count_patients(samples: list[Sample]) -> int | None:
    """Distinct known subjects among samples; None when none of them has one."""
    return len({s.subject for s in samples if s.subject is not None}) or None


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
            split_report.patients = _count_patients(result.samples)
            read_samples[csv_name] = result.samples
            report.warnings.extend(_formula_names(csv_name, result.samples))
        report.splits.append(split_report)
    report.problems.extend(_shared_images(read_samples))
    report.patients = _count_patients([s for samples in read_samples.values() for s in samples])
    return report


def _check_cnmc(folder: Path) -> CheckReport:
    samples = cnmc_samples(folder)
    whole = SplitReport(name="all", source=".")
    decoded = _count_images(samples, whole)
    patients, unknown = sample_patients(samples)
    whole.patients = len(set(patients.values()))
    whole.problems.extend(unknown)
    report = CheckReport(data_dir=folder, layout="cnmc", splits=[whole], patients=whole.patients or None)
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
    report.patients = _count_patients([s for part in parts for s in part.samples])
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
    (=1+2.bmp): they work, but core.engine.run_folder.spreadsheet_csv has to write them escaped."""
    named = [sample for sample in samples if formula_like(sample.id)]
    if not named:
        return []
    shown = ", ".join(repr(s.id) if s.source == s.id else f"{s.source} {s.id!r}" for s in named[:3])
    more = f" and {len(named) - 3} more" if len(named) > 3 else ""
    return [
        f"{where}: {len(named)} image name(s) begin like a spreadsheet formula (=, +, -, @, tab or CR): "
        f"{shown}{more}; the CSVs for people (per_image.csv, explanations.csv, subjects.csv, oof.csv) write "
        "them with a leading ', the submission CSV (predictions.csv) keeps them exact"
    ]


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
