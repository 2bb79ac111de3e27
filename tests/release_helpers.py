"""A small copy of the C-NMC 2019 release tree, built from the 71 real images (tests/conftest.py, realdata_dir).

Subjects go, per class and in name order, in turn to final, fold_0, fold_1, fold_2 and prelim,
so the folds are subject-disjoint. The prelim images are renamed 1.bmp, 2.bmp, ... with
C-NMC_test_prelim_phase_data_labels.csv (rows shuffled, as in the release); the final images are
renamed likewise, with no labels anywhere. The truth of the final images is returned for checks."""

from __future__ import annotations

import csv
import os
import random
import shutil
from collections import defaultdict
from pathlib import Path

from core.engine.data.layouts import cnmc_label, patient_of

PARTS = ("final", "fold_0", "fold_1", "fold_2", "prelim")
PRELIM = Path("validation_data", "C-NMC_test_prelim_phase_data")
FINAL = Path("testing_data", "C-NMC_test_final_phase_data")
PRELIM_CSV = Path("validation_data", "C-NMC_test_prelim_phase_data_labels.csv")


def build_release(realdata_dir: Path, root: Path) -> dict[str, str]:
    """Write the tree under root (e.g. .../C-NMC_Leukemia); returns final ID (relative to root) -> original name."""
    images = sorted((realdata_dir / "images").glob("*.bmp"))
    subjects: dict[int, list[str]] = defaultdict(list)
    for image in images:
        subject = patient_of(image.name)
        if subject not in subjects[cnmc_label(image.name)]:
            subjects[cnmc_label(image.name)].append(subject)
    part_of = {s: PARTS[i % len(PARTS)] for label in (1, 0) for i, s in enumerate(sorted(subjects[label]))}
    numbered: dict[str, list[Path]] = {"prelim": [], "final": []}
    for image in images:
        part = part_of[patient_of(image.name)]
        if part.startswith("fold_"):
            target = root / "training_data" / part / ("all" if cnmc_label(image.name) else "hem") / image.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target)
        else:
            numbered[part].append(image)
    rng = random.Random(0)
    rows = []
    for number, image in enumerate(numbered["prelim"], start=1):
        (root / PRELIM).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, root / PRELIM / f"{number}.bmp")
        rows.append([image.name, f"{number}.bmp", cnmc_label(image.name)])
    rng.shuffle(rows)
    with open(root / PRELIM_CSV, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Patient_ID", "new_names", "labels"])
        writer.writerows(rows)
    final_truth = {}
    for number, image in enumerate(numbered["final"], start=1):
        (root / FINAL).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(image, root / FINAL / f"{number}.bmp")
        final_truth[(FINAL / f"{number}.bmp").as_posix()] = image.name
    return final_truth


def make_read_only(folder: Path) -> None:
    """Files 0444 and folders 0555 below folder (and folder itself)."""
    for current, dirs, files in os.walk(folder):
        for name in files:
            os.chmod(os.path.join(current, name), 0o444)
        os.chmod(current, 0o555)


def make_writable(folder: Path) -> None:
    for current, dirs, files in os.walk(folder):
        os.chmod(current, 0o755)
        for name in files:
            os.chmod(os.path.join(current, name), 0o644)
