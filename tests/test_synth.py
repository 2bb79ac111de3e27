"""Synthetic data folder: lab layout, same seed same bytes, class balance, cells that look and separate as intended."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from core.common.errors import UserInputError
from core.engine.data.layouts import detect_layout, find_test_csv, open_image, read_csv_samples, read_split
from core.engine.data.synth import write_synthetic_dataset
from leukemia.cli import main


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    first = folder_bytes(write_synthetic_dataset(tmp_path / "a", train=6, valid=3, test=3, image_size=32, seed=5).out_dir)
    again = folder_bytes(write_synthetic_dataset(tmp_path / "b", train=6, valid=3, test=3, image_size=32, seed=5).out_dir)
    other = folder_bytes(write_synthetic_dataset(tmp_path / "c", train=6, valid=3, test=3, image_size=32, seed=6).out_dir)
    assert first == again
    assert len(first) == 12 + 4  # images + train, valid, test, test_labels CSVs
    assert first.keys() == other.keys()
    images = [name for name in first if name.endswith(".bmp")]
    assert all(first[name] != other[name] for name in images)


def test_lab_layout(synth_dir: Path) -> None:
    assert detect_layout(synth_dir) == "lab"
    assert find_test_csv(synth_dir) == "test.csv"
    header, first = (synth_dir / "train.csv").read_text().splitlines()[:2]
    assert header == "Path,label,patient" and first.startswith("./new_dataset/train/0.bmp,")
    assert (synth_dir / "test.csv").read_text().splitlines()[0] == "Path"  # as the lab's test CSV: no label, no patient
    train, valid, test = (read_split(synth_dir, split) for split in ("train", "valid", "test"))
    assert (len(train), len(valid), len(test)) == (96, 32, 24)
    assert [s.id for s in test] == [f"./new_dataset/test/{i}.bmp" for i in range(24)]
    assert all(s.label is None for s in test)
    truth = read_csv_samples(synth_dir, "test_labels.csv", labelled=True)
    assert [s.id for s in truth] == [s.id for s in test]
    image = open_image(train[0])
    assert image.size == (48, 48) and image.mode == "RGB"


def test_class_balance(synth_dir: Path) -> None:
    labels = {split: [s.label for s in read_split(synth_dir, split)] for split in ("train", "valid")}
    labels["test"] = [s.label for s in read_csv_samples(synth_dir, "test_labels.csv", labelled=True)]
    assert {split: sum(values) for split, values in labels.items()} == {"train": 65, "valid": 22, "test": 16}
    assert labels["train"][:10] != sorted(labels["train"][:10])  # shuffled, not all ones first


def test_subjects_like_cnmc(synth_dir: Path) -> None:
    """Each synthetic patient has about IMAGES_PER_SUBJECT cells of one class, named as C-NMC names its subjects
    (11, H10), and no patient is in two splits: cross-validation by subject and per-subject metrics work."""
    splits = {
        "train": read_split(synth_dir, "train"),
        "valid": read_split(synth_dir, "valid"),
        "test": read_csv_samples(synth_dir, "test_labels.csv", labelled=True),
    }
    classes: dict[str, set[int]] = {}
    for samples in splits.values():
        for sample in samples:
            classes.setdefault(sample.subject, set()).add(sample.label)
    assert all(len(labels) == 1 for labels in classes.values())  # one class per patient
    assert {subject for subject, labels in classes.items() if labels == {0}} == {f"H{n}" for n in range(1, 6)}
    assert {subject for subject, labels in classes.items() if labels == {1}} == {str(n) for n in range(1, 11)}
    subjects = [{s.subject for s in samples} for samples in splits.values()]
    assert [len(names) for names in subjects] == [9, 3, 3]  # 65+31, 22+10, 16+8 images: about 10 a patient
    assert not (subjects[0] & subjects[1] or subjects[0] & subjects[2] or subjects[1] & subjects[2])


def images_and_labels(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    samples = read_split(folder, "train_all")
    images = np.stack([np.asarray(open_image(s), dtype=np.float32) for s in samples])
    return images, np.array([s.label for s in samples])


def best_threshold_accuracy(feature: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy of the best rule `feature >= t` (or its opposite) for one scalar feature."""
    accuracies = [((feature >= t) == labels).mean() for t in np.unique(feature)]
    return max(max(accuracies), 1 - min(accuracies))


def test_cells_look_like_cnmc(synth_dir: Path) -> None:
    images, _ = images_and_labels(synth_dir)
    cell = images.sum(axis=3) > 0
    assert np.all(images[:, 0, :, :] == 0) and np.all(images[:, :, 0, :] == 0)  # pure black border
    black_fraction = 1 - cell.mean(axis=(1, 2))
    assert 0.5 < black_fraction.min() and black_fraction.max() < 0.97  # real images: 0.76 to 0.91
    red, green, blue = (images[..., c][cell].mean() for c in range(3))
    assert blue > red > green  # purple


def test_classes_differ_in_the_nucleus_not_in_one_global_statistic(synth_dir: Path) -> None:
    images, labels = images_and_labels(synth_dir)
    base = max(labels.mean(), 1 - labels.mean())
    cell = images.sum(axis=3) > 0
    brightness = images.sum(axis=3)
    mean_brightness = brightness.mean(axis=(1, 2))
    cell_area = cell.mean(axis=(1, 2))
    # Share of the cell darker than 80% of its median: roughly the nucleus's share of the cell.
    dark_share = np.array([(b[c] < 0.8 * np.median(b[c])).mean() for b, c in zip(brightness, cell)])
    assert best_threshold_accuracy(mean_brightness, labels) < base + 0.12
    assert best_threshold_accuracy(cell_area, labels) < base + 0.08
    assert best_threshold_accuracy(dark_share, labels) > 0.9


def test_refuses_a_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    message = f"output folder is not empty: {tmp_path}; synth writes only into a new or empty folder"
    with pytest.raises(UserInputError) as raised:
        write_synthetic_dataset(tmp_path, train=2, valid=2, test=2, image_size=32)
    assert str(raised.value) == message
    result = CliRunner().invoke(main, ["synth", str(tmp_path), "--image-size", "32"])
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"train": 0}, "train: must be at least 1 image, got 0"),
        ({"image_size": 8}, "image_size: must be between 16 and 2048 pixels, got 8"),
        ({"positive_fraction": 1.5}, "positive_fraction: must be between 0 and 1, got 1.5"),
        ({"seed": -1}, "seed: must be 0 or more, got -1"),
    ],
)
def test_bad_arguments(tmp_path: Path, arguments: dict, message: str) -> None:
    with pytest.raises(UserInputError) as raised:
        write_synthetic_dataset(tmp_path / "out", **arguments)
    assert str(raised.value) == message
    assert not (tmp_path / "out").exists()


def test_cli_writes_a_folder_that_checks_clean(tmp_path: Path) -> None:
    out = tmp_path / "new" / "synth"
    runner = CliRunner()
    result = runner.invoke(
        main, ["synth", str(out), "--train", "5", "--valid", "3", "--test", "2", "--image-size", "40", "--seed", "1"]
    )
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote 10 images of 40x40 to {out}: train 5 (3 label 1), valid 3 (2 label 1), test 2 (1 label 1)\n"
    checked = runner.invoke(main, ["check", str(out)])
    assert checked.exit_code == 0, checked.output
    assert "OK: no problems found" in checked.output
