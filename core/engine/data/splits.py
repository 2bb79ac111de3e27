"""Named splits: the one resolver from a split name to its samples, for every layout.

    lab folder       train, valid, train_all (train + valid), test, or any NAME.csv of the folder
    C-NMC release    fold:N and folds:N,M (its training folds), prelim (labelled), final (unlabelled),
                     train_all (every fold), train / valid (a subject-disjoint share of the folds:
                     valid holds VALID_SHARE of the subjects, per class), test (= final)
    any layout       kfold:K:N,M  folds N and M of K subject-grouped folds of train_all (seeded)
    validation only  share:F (F of the training split's subjects, per class), none

Subject-disjoint means no subject (patient) has images on both sides. Splits that need
subjects refuse folders where a subject is unknown, naming the image. The folder's common image size
(`folder_image_size`) is found here too.
"""

from __future__ import annotations

import functools
import random
import re
from collections import Counter, defaultdict
from pathlib import Path

from PIL import Image

from core.common.errors import UserInputError
from core.common.text import CONTROL_CHARACTERS
from core.engine.data.layouts import (
    SPLIT_CSVS,
    Sample,
    candidate_test_csvs,
    data_folder,
    folder_csvs,
    read_csv_samples,
    read_split,
)
from core.engine.data.release import Release, find_release, read_final, read_fold, read_prelim

VALID_SHARE = 0.2
# A CSV of the data folder is a relative path that stays inside it: it starts with no "/" and no part of it is "..".
INSIDE_FOLDER = r"(?!/)(?!(?:[^/]*/)*\.\.(?:/|$))"
INSIDE = re.compile(INSIDE_FOLDER)
SPLIT_PATTERN = re.compile(
    rf"^(?:(?P<lab>train|valid|train_all|test|prelim|final)|(?P<csv>{INSIDE_FOLDER}[^{CONTROL_CHARACTERS}]+\.csv)"
    r"|folds?:(?P<folds>\d+(?:,\d+)*)|kfold:(?P<k>\d+):(?P<kfolds>\d+(?:,\d+)*))$",
    re.IGNORECASE,
)
VALID_PATTERN = re.compile(r"^(?:none|share:(?P<share>0?\.\d+))$")
SPLIT_HELP = "train, valid, train_all, test, NAME.csv; C-NMC release: fold:N, folds:N,M, prelim, final; kfold:K:N,M"


def split_schema_pattern(*, validation: bool = False) -> str:
    """The names check_split_name accepts, as the JSON Schema pattern of the API's document: in lower case and
    without surrounding spaces (the check also takes those), and without kfold's rule that folds stay below K."""
    sources = ([VALID_PATTERN] if validation else []) + [SPLIT_PATTERN]
    bodies = [re.sub(r"\(\?P<\w+>", "(?:", source.pattern)[1:-1] for source in sources]  # no ^ $, no named groups
    return "^(?:" + "|".join(bodies) + ")$"


def check_split_name(name: str, *, validation: bool = False) -> str:
    """The name if it is a well-formed split name (what it refers to is checked when it is read)."""
    name = name.strip()
    if validation and VALID_PATTERN.match(name):
        return name
    match = SPLIT_PATTERN.match(name)
    if match is None and name.lower().endswith(".csv") and not INSIDE.match(name):
        raise ValueError(f"{name!r} leads outside the data folder; name a CSV file inside it (a relative path without ..)")
    if match is None:
        extra = ", share:F, none" if validation else ""
        raise ValueError(f"unknown split {name!r}; use {SPLIT_HELP}{extra}")
    if match.group("k") is not None:
        k = int(match.group("k"))
        bad = [n for n in _numbers(match.group("kfolds")) if n >= k]
        if k < 2 or bad:
            raise ValueError(f"{name}: kfold needs K >= 2 and fold numbers below K")
    return name


def read_named_split(data_dir: Path | str, name: str, *, seed: int = 0, labelled: bool | None = None) -> list[Sample]:
    """The samples a split name means in this data folder; the first bad row or file is a UserInputError.

    labelled True refuses a split without labels (evaluation); a CSV is read with a label column
    unless labelled is False (prediction) or its name says test."""
    samples = _named_split(data_dir, name, seed=seed, labelled=labelled)
    if labelled and any(s.label is None for s in samples):
        raise UserInputError(f"csv: {name} has no labels; evaluate needs a labelled split (e.g. prelim, valid.csv)", field="csv")
    return samples


def _named_split(data_dir: Path | str, name: str, *, seed: int, labelled: bool | None) -> list[Sample]:
    folder = data_folder(data_dir)
    name = check_split_name_or_error(name)
    release = find_release(folder)
    match = SPLIT_PATTERN.match(name)
    assert match is not None  # checked above
    if match.group("csv"):
        with_labels = labelled if labelled is not None else "test" not in name.lower()
        return read_csv_samples(folder, name, labelled=with_labels)
    if match.group("k") is not None:
        return kfold_samples(_training_pool(folder, release), int(match.group("k")), _numbers(match.group("kfolds")), seed)
    if release is None:
        if match.group("folds") or name in ("prelim", "final"):
            raise UserInputError(
                f"split: {name} needs a C-NMC release folder (training_data/fold_N, ...); {folder} is not one", field="split"
            )
        return read_split(folder, name)
    return _release_split(release, name, match, seed)


def offered_splits(data_dir: Path | str) -> dict[str, list[str]]:
    """What a job may name as its split or CSV in this folder, labelled (to train or evaluate on) and
    unlabelled (to predict): the CSV files at its top, then the layout's named splits (kfold and share
    are left out: they take numbers). The data-folder page shows them; the forms offer them."""
    folder = data_folder(data_dir)
    csvs = folder_csvs(folder)
    labelled = [name for name, has_labels in csvs.items() if has_labels]
    unlabelled = [name for name, has_labels in csvs.items() if not has_labels]
    release = find_release(folder)
    if release is not None:
        labelled += ["prelim", *(f"fold:{n}" for n in sorted(release.folds)), "train", "valid", "train_all"]
        unlabelled += ["final"]
    else:
        present = [name for name in ("train", "valid") if SPLIT_CSVS[name] in labelled]
        labelled += present + (["train_all"] if len(present) == 2 else [])
        unlabelled += ["test"] if len(candidate_test_csvs(folder)) == 1 else []
    return {"labelled": labelled, "unlabelled": unlabelled}


def check_split_name_or_error(name: str) -> str:
    try:
        return check_split_name(name)
    except ValueError as error:
        raise UserInputError(f"split: {error}", field="split") from None


def training_splits(
    data_dir: Path | str, split: str, valid_split: str | None, seed: int
) -> tuple[list[Sample], list[Sample] | None]:
    """The training split and the validation split (None for none).

    valid_split None is the layout's default: a lab folder's valid.csv when training on "train",
    the release's held-out share when training on "train", no validation otherwise."""
    folder = data_folder(data_dir)
    if valid_split == "none":
        return read_named_split(folder, split, seed=seed), None
    if valid_split is not None and valid_split.startswith("share:"):
        pool = read_named_split(folder, split, seed=seed)
        held = choose_subjects(pool, float(valid_split.split(":", 1)[1]), seed)
        return [s for s in pool if s.subject not in held], [s for s in pool if s.subject in held]
    train = read_named_split(folder, split, seed=seed)
    if valid_split is None:
        if split != "train":
            return train, None
        if find_release(folder) is None and not (folder / "valid.csv").is_file():
            return train, None
        valid_split = "valid"
    valid = read_named_split(folder, valid_split, seed=seed)
    if any(s.label is None for s in valid):
        raise UserInputError(f"valid_split: {valid_split} has no labels; validation needs a labelled split", field="valid_split")
    _refuse_overlap(train, valid, split, valid_split)
    return train, valid


def _refuse_overlap(train: list[Sample], valid: list[Sample], split: str, valid_split: str) -> None:
    """A validation image or subject also in training would leak the score."""
    train_paths = {s.path for s in train}
    for sample in valid:
        if sample.path in train_paths:
            raise UserInputError(f"valid_split: {sample.id} is in both {split} and {valid_split}", field="valid_split")
    train_subjects = {s.subject for s in train if s.subject is not None}
    for sample in valid:
        if sample.subject in train_subjects:
            raise UserInputError(
                f"valid_split: subject {sample.subject} is in both {split} and {valid_split} ({sample.id}): "
                "the folds are not subject-disjoint; use kfold:K:N for subject-grouped folds",
                field="valid_split",
            )


def release_folds_disjoint(release: Release) -> dict[str, list[str]]:
    """Subjects in several release folds → those folds (empty: the folds are subject-disjoint)."""
    from core.engine.data.release import shared_subjects

    return shared_subjects([read_fold(release, fold) for fold in sorted(release.folds)])


def _release_split(release: Release, name: str, match: re.Match, seed: int) -> list[Sample]:
    if name in ("prelim",):
        return _strict(read_prelim(release))
    if name in ("final", "test"):
        return _strict(read_final(release))
    if match.group("folds"):
        return [s for fold in _numbers(match.group("folds")) for s in _strict(read_fold(release, fold))]
    pool = [s for fold in sorted(release.folds) for s in _strict(read_fold(release, fold))]
    if not pool:
        raise UserInputError(f"split: {name}: no training folds in {release.root}", field="split")
    if name == "train_all":
        return pool
    held = choose_subjects(pool, VALID_SHARE, seed)
    return [s for s in pool if (s.subject in held) == (name == "valid")]


def _strict(part) -> list[Sample]:  # type: ignore[no-untyped-def]
    """A part's samples, or its first problem as a UserInputError (`leukemia check` lists them all)."""
    if part.problems:
        more = len(part.problems) - 1
        suffix = f" (and {more} more: run `leukemia check`)" if more else ""
        raise UserInputError(part.problems[0] + suffix)
    return part.samples


def _training_pool(folder: Path, release: Release | None) -> list[Sample]:
    """Every labelled training image: the release's folds, or a lab folder's train + valid."""
    if release is not None:
        return [s for fold in sorted(release.folds) for s in _strict(read_fold(release, fold))]
    return read_split(folder, "train_all")


def _numbers(text: str) -> list[int]:
    return [int(n) for n in text.split(",")]


def _subjects_known(samples: list[Sample], why: str) -> None:
    for sample in samples:
        if sample.subject is None:
            raise UserInputError(
                f"data_dir: {sample.source}: no subject for {sample.id} ({why} needs the patient of "
                "every image: a patient column, or C-NMC file names)",
                field="data_dir",
            )


def choose_subjects(samples: list[Sample], share: float, seed: int) -> set[str]:
    """Subjects holding about `share` of each class's images (seeded), never all of a class's subjects."""
    from core.engine.data.patient_split import choose_valid_patients

    _subjects_known(samples, "a subject-disjoint share")
    return choose_valid_patients(samples, {s.id: s.subject for s in samples}, share, seed)


def kfold_groups(samples: list[Sample], k: int, seed: int) -> dict[str, int]:
    """Subject → fold (0..k-1): per class, subjects in seeded random order, each to the fold with the
    fewest images of that class so far, so the folds are subject-disjoint and about class-balanced."""
    _subjects_known(samples, "subject-grouped folds")
    images: Counter = Counter(s.subject for s in samples)
    labels: dict[str, Counter] = defaultdict(Counter)
    for sample in samples:
        labels[sample.subject][sample.label] += 1
    if len(images) < k:
        raise UserInputError(f"folds: {len(images)} subjects are too few for {k} subject-grouped folds", field="folds")
    by_class: dict[int, list[str]] = defaultdict(list)
    for subject in sorted(images):
        by_class[labels[subject].most_common(1)[0][0]].append(subject)  # a C-NMC subject has one class
    rng = random.Random(seed)
    groups: dict[str, int] = {}
    for label in sorted(by_class):
        order = by_class[label][:]
        rng.shuffle(order)
        order.sort(key=lambda subject: -images[subject])  # big subjects first balance best; ties stay seeded
        counts = [0] * k
        for subject in order:
            fold = min(range(k), key=lambda f: (counts[f], f))
            groups[subject] = fold
            counts[fold] += images[subject]
    return groups


def require_subject_folds(data_dir: Path | str, k: int, seed: int) -> None:
    """Refuse at submit a folder whose training images cannot make k subject-grouped folds (kfold:K:N, as
    each fold job will read them): an image without a subject, fewer subjects than folds, or a fold left
    empty. Otherwise every fold job would fail the same way."""
    folder = data_folder(data_dir)
    groups = kfold_groups(_training_pool(folder, find_release(folder)), k, seed)
    empty = sorted(set(range(k)) - set(groups.values()))
    if empty:
        raise UserInputError(
            f"folds: the {len(groups)} subjects leave fold {empty[0]} of {k} subject-grouped folds empty; ask for fewer folds",
            field="folds",
        )


def kfold_samples(pool: list[Sample], k: int, folds: list[int], seed: int) -> list[Sample]:
    groups = kfold_groups(pool, k, seed)
    return [s for s in pool if groups[s.subject] in folds]


def folder_image_size(data_dir: Path | str) -> int | None:
    """The side of the training images when all are squares of one size (headers only), else None.
    None too when the folder cannot be read: the caller keeps its own default."""
    try:
        folder = data_folder(data_dir)
        samples = _training_pool(folder, find_release(folder))
    except UserInputError:
        return None
    return _common_size(tuple(str(s.path) for s in samples))


@functools.lru_cache(maxsize=32)
def _common_size(paths: tuple[str, ...]) -> int | None:
    sizes = set()
    for path in paths:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes.add(image.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
            return None
        if len(sizes) > 1:
            return None
    if len(sizes) != 1:
        return None
    width, height = sizes.pop()
    return width if width == height else None


def with_folder_image_size(kind: str, values: dict) -> dict:
    """Train values with image_size filled from the data folder when left out and all its images share one size."""
    if kind != "train" or values.get("image_size") is not None or not values.get("data_dir"):
        return values
    size = folder_image_size(values["data_dir"])
    return {**values, "image_size": size} if size is not None and 32 <= size <= 1024 else values
