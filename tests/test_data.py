"""Data layouts: reading lab CSVs and C-NMC trees, and one exact line for every kind of bad input."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from core.common.errors import UserInputError
from core.engine.data.layouts import (
    Sample,
    cnmc_samples,
    detect_layout,
    find_test_csv,
    open_image,
    patient_of,
    read_csv_samples,
    read_split,
)
from leukemia.cli import main


def write_image(path: Path, value: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), value, dtype=np.uint8)).save(path)


@pytest.fixture
def lab_dir(tmp_path: Path) -> Path:
    """A tiny, clean lab-layout folder: 3 train, 2 valid and 1 test image."""
    folder = tmp_path / "lab"
    for i in range(3):
        write_image(folder / "new_dataset" / "train" / f"{i}.bmp", 40 * i)
    for i in range(2):
        write_image(folder / "new_dataset" / "valid" / f"{i}.bmp")
    write_image(folder / "new_dataset" / "test" / "0.bmp")
    (folder / "train.csv").write_text(
        "Path,label\n./new_dataset/train/0.bmp,1\n./new_dataset/train/1.bmp,0\n./new_dataset/train/2.bmp,1\n"
    )
    (folder / "valid.csv").write_text("Path,label,extra\n./new_dataset/valid/0.bmp,0,x\n./new_dataset/valid/1.bmp,1,y\n")
    (folder / "resnet_18_test.csv").write_text("Path\n./new_dataset/test/0.bmp\n")
    return folder


def test_lab_folder_reads_ids_labels_and_sources(lab_dir: Path) -> None:
    samples = read_csv_samples(lab_dir, "train.csv", labelled=True)
    assert [s.id for s in samples] == [f"./new_dataset/train/{i}.bmp" for i in range(3)]
    assert [s.label for s in samples] == [1, 0, 1]
    assert [s.source for s in samples] == ["train.csv row 1", "train.csv row 2", "train.csv row 3"]
    assert samples[0].path == lab_dir / "new_dataset" / "train" / "0.bmp"
    assert samples[0].path.is_absolute()
    assert detect_layout(lab_dir) == "lab"
    assert find_test_csv(lab_dir) == "resnet_18_test.csv"
    test = read_split(lab_dir, "test")
    assert [(s.id, s.label) for s in test] == [("./new_dataset/test/0.bmp", None)]
    assert len(read_split(lab_dir, "train_all")) == 5
    assert [s.label for s in read_split(lab_dir, "valid")] == [0, 1]
    image = open_image(samples[1])
    assert image.mode == "RGB" and image.size == (8, 8)


def test_reading_writes_nothing_into_the_data_folder(lab_dir: Path) -> None:
    before = sorted((p, p.stat().st_mtime_ns) for p in lab_dir.rglob("*"))
    for split in ("train", "valid", "train_all", "test"):
        for sample in read_split(lab_dir, split):
            open_image(sample)
    assert sorted((p, p.stat().st_mtime_ns) for p in lab_dir.rglob("*")) == before


def test_symlinked_subfolder_is_inside_lexically(lab_dir: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    (lab_dir / "new_dataset").rename(elsewhere)
    (lab_dir / "new_dataset").symlink_to(elsewhere)
    samples = read_split(lab_dir, "train")
    assert samples[0].path == lab_dir / "new_dataset" / "train" / "0.bmp"
    assert open_image(samples[0]).size == (8, 8)


# (file to write, its bytes, what to read, the exact message); {dir} is the data folder.
BAD_CSV_CASES = {
    "missing csv": ("valid.csv", None, "valid", "valid.csv: file not found in {dir}"),
    "missing label column": ("train.csv", b"Path\n./new_dataset/train/0.bmp\n", "train", "train.csv: missing column 'label'"),
    "missing Path column": (
        "valid.csv",
        b"file,label\n./new_dataset/valid/0.bmp,0\n",
        "valid",
        "valid.csv: missing column 'Path'",
    ),
    "bad label": (
        "train.csv",
        b"Path,label\n" + b"./new_dataset/train/0.bmp,1\n" * 6 + b"./new_dataset/train/1.bmp,3\n",
        "train",
        "train.csv row 7: label must be 0 or 1, got '3'",
    ),
    "absolute path": (
        "train.csv",
        b"Path,label\n/etc/passwd,1\n",
        "train",
        "train.csv row 1: path escapes the data folder: /etc/passwd",
    ),
    "dot-dot path": (
        "train.csv",
        b"Path,label\n./new_dataset/train/0.bmp,1\n./new_dataset/train/1.bmp,0\n./new_dataset/train/2.bmp,1\n../../etc/passwd,0\n",
        "train",
        "train.csv row 4: path escapes the data folder: ../../etc/passwd",
    ),
    "dot-dot inside the path": (
        "valid.csv",
        b"Path,label\n./new_dataset/../../x.bmp,0\n",
        "valid",
        "valid.csv row 1: path escapes the data folder: ./new_dataset/../../x.bmp",
    ),
    "missing image": (
        "train.csv",
        b"Path,label\n./new_dataset/train/0.bmp,1\n./new_dataset/train/9.bmp,0\n",
        "train",
        "train.csv row 2: image not found: ./new_dataset/train/9.bmp",
    ),
    "not an image name": (
        "train.csv",
        b"Path,label\n./notes.txt,1\n",
        "train",
        "train.csv row 1: not an image file name (expected .bmp, .png, .jpg, .jpeg, .tif, .tiff): ./notes.txt",
    ),
    "too few fields": ("train.csv", b"Path,label\n./new_dataset/train/0.bmp\n", "train", "train.csv row 1: too few fields (1)"),
    "empty split": ("valid.csv", b"Path,label\n", "valid", "valid.csv: no rows"),
    "empty split with blank lines": ("valid.csv", b"Path,label\n\n  \n", "valid", "valid.csv: no rows"),
    "empty file": ("train.csv", b"", "train", "train.csv: empty file (expected a header row, e.g. Path,label)"),
    "binary garbage": ("train.csv", bytes(range(256)) * 4, "train", "train.csv: not a CSV text file (not UTF-8)"),
    "nul bytes": ("valid.csv", b"Path,label\n\x00\x00\x00\n", "valid", "valid.csv: not a CSV text file (binary data)"),
    "garbled text": ("train.csv", b"<html><body>oops\n</body></html>\n", "train", "train.csv: missing column 'Path'"),
    "unterminated quote": (
        "train.csv",
        b'Path,label\n"./new_dataset/train/0.bmp,1\n',
        "train",
        "train.csv row 1: too few fields (1)",
    ),
}


@pytest.mark.parametrize("case", BAD_CSV_CASES, ids=list(BAD_CSV_CASES))
def test_bad_csv_is_one_exact_line_and_fails_check(lab_dir: Path, case: str) -> None:
    file_name, content, split, expected = BAD_CSV_CASES[case]
    if content is None:
        (lab_dir / file_name).unlink()
    else:
        (lab_dir / file_name).write_bytes(content)
    expected = expected.format(dir=lab_dir)

    with pytest.raises(UserInputError) as raised:
        read_split(lab_dir, split)
    assert str(raised.value) == expected

    result = CliRunner().invoke(main, ["check", str(lab_dir)])
    assert result.exit_code == 1, result.output
    assert f"  {expected}\n" in result.output
    assert "Traceback" not in result.output


def test_first_problem_counts_the_others(lab_dir: Path) -> None:
    (lab_dir / "train.csv").write_text("Path,label\n./new_dataset/train/0.bmp,5\n./a.bmp,1\n/abs.bmp,0\n")
    with pytest.raises(UserInputError) as raised:
        read_csv_samples(lab_dir, "train.csv", labelled=True)
    assert str(raised.value) == "train.csv row 1: label must be 0 or 1, got '5' (and 2 more problems: run `leukemia check`)"


def test_corrupt_image_names_the_image_and_row(lab_dir: Path) -> None:
    (lab_dir / "new_dataset" / "train" / "1.bmp").write_bytes(b"BM this is not a bitmap" * 10)
    samples = read_split(lab_dir, "train")  # reading the CSV does not decode
    with pytest.raises(UserInputError) as raised:
        open_image(samples[1])
    message = str(raised.value)
    assert message.startswith("corrupt or unreadable image ./new_dataset/train/1.bmp (train.csv row 2): ")
    assert "\n" not in message

    result = CliRunner().invoke(main, ["check", str(lab_dir)])
    assert result.exit_code == 1
    assert f"  {message}\n" in result.output


def test_truncated_image_is_reported(lab_dir: Path) -> None:
    path = lab_dir / "new_dataset" / "valid" / "1.bmp"
    path.write_bytes(path.read_bytes()[:80])
    with pytest.raises(UserInputError, match=r"^corrupt or unreadable image \./new_dataset/valid/1\.bmp \(valid\.csv row 2\): "):
        open_image(read_split(lab_dir, "valid")[1])


def test_missing_data_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserInputError) as raised:
        read_split(missing, "train")
    assert str(raised.value) == f"data folder not found: {missing}"
    result = CliRunner().invoke(main, ["check", str(missing)])
    assert result.exit_code == 2
    assert result.stderr == f"error: data folder not found: {missing}\n"


def test_unknown_split_and_folder_without_data(lab_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match=r"^split: unknown split 'training'; choose one of train, valid, train_all, test$"):
        read_split(lab_dir, "training")
    empty = tmp_path / "empty"
    empty.mkdir()
    message = f"no data in {empty}: expected train.csv (lab layout) or *_all.bmp / *_hem.bmp images (C-NMC layout)"
    with pytest.raises(UserInputError) as raised:
        detect_layout(empty)
    assert str(raised.value) == message
    result = CliRunner().invoke(main, ["check", str(empty)])
    assert result.exit_code == 2 and result.stderr == f"error: {message}\n"


def test_test_csv_must_be_one(lab_dir: Path) -> None:
    (lab_dir / "test_labels.csv").write_text("Path,label\n./new_dataset/test/0.bmp,1\n")  # has labels: not a test CSV
    assert find_test_csv(lab_dir) == "resnet_18_test.csv"
    (lab_dir / "test.csv").write_text("Path\n./new_dataset/test/0.bmp\n")
    with pytest.raises(UserInputError) as raised:
        find_test_csv(lab_dir)
    assert str(raised.value) == f"several test CSVs in {lab_dir}: resnet_18_test.csv, test.csv; name the one to use"
    (lab_dir / "test.csv").unlink()
    (lab_dir / "resnet_18_test.csv").unlink()
    with pytest.raises(UserInputError) as raised:
        read_split(lab_dir, "test")
    assert str(raised.value) == (f"no test CSV in {lab_dir}: expected one *test*.csv with a Path column and no label column")


def test_bom_header_and_case_of_column_names(lab_dir: Path) -> None:
    (lab_dir / "valid.csv").write_bytes("\ufeffpath , Label\n./new_dataset/valid/0.bmp, 0\n".encode())
    assert [(s.id, s.label) for s in read_split(lab_dir, "valid")] == [("./new_dataset/valid/0.bmp", 0)]


def test_realdata_labels_csv_reads(realdata_dir: Path) -> None:
    samples = read_csv_samples(realdata_dir, "labels.csv", labelled=True)
    assert len(samples) == 71
    assert sum(s.label for s in samples) == 36
    assert samples[0] == Sample(
        path=realdata_dir / "images" / "UID_11_1_1_all.bmp",
        id="images/UID_11_1_1_all.bmp",
        label=1,
        source="labels.csv row 1",
        subject="11",  # from the C-NMC file name
    )


def test_realdata_is_a_cnmc_tree(realdata_dir: Path) -> None:
    assert detect_layout(realdata_dir) == "cnmc"
    samples = cnmc_samples(realdata_dir)
    assert len(samples) == 71
    assert sum(s.label == 1 for s in samples) == 36 and sum(s.label == 0 for s in samples) == 35
    assert all(s.label == (1 if s.id.endswith("_all.bmp") else 0) for s in samples)
    assert samples[0].id == samples[0].source == "images/UID_11_1_1_all.bmp"
    assert len({patient_of(s.id) for s in samples}) == 31
    with pytest.raises(UserInputError, match="^train.csv: file not found in .*--write-csv"):
        read_split(realdata_dir, "train")


def test_cnmc_tree_in_folds(tmp_path: Path) -> None:
    for relative in ("fold_0/all/UID_11_1_1_all.bmp", "fold_0/hem/UID_H10_1_1_hem.bmp", "fold_1/hem/UID_H2_3_1_HEM.BMP"):
        write_image(tmp_path / relative)
    (tmp_path / "fold_1" / "notes.txt").write_text("not an image")
    samples = cnmc_samples(tmp_path)
    assert [(s.id, s.label) for s in samples] == [
        ("fold_0/all/UID_11_1_1_all.bmp", 1),
        ("fold_0/hem/UID_H10_1_1_hem.bmp", 0),
        ("fold_1/hem/UID_H2_3_1_HEM.BMP", 0),
    ]
    assert detect_layout(tmp_path) == "cnmc"


@pytest.mark.parametrize(
    "name, patient",
    [
        ("UID_11_1_1_all.bmp", "11"),
        ("fold_0/hem/UID_H10_1_1_hem.bmp", "H10"),
        ("UID_h3_2_1_hem.bmp", "H3"),
        ("UID_1_9_1_all.bmp", "1"),
    ],
)
def test_patient_of(name: str, patient: str) -> None:
    assert patient_of(name) == patient


def test_patient_of_unknown_name() -> None:
    with pytest.raises(UserInputError) as raised:
        patient_of("images/1005.bmp")
    assert str(raised.value) == (
        "images/1005.bmp: cannot tell the patient from the file name (expected UID_<patient>_..._all.bmp or UID_H<n>_..._hem.bmp)"
    )


def test_csv_name_cannot_escape(lab_dir: Path) -> None:
    with pytest.raises(UserInputError, match=r"^\.\./train\.csv: CSV path escapes the data folder "):
        read_csv_samples(lab_dir / "new_dataset", "../train.csv", labelled=True)
    assert os.path.isfile(lab_dir / "train.csv")
