"""`leukemia check`: every problem of a folder at once, counts and sizes per split, the patient-safe split."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from core.common.errors import UserInputError
from core.engine.data.check import check_folder
from core.engine.data.layouts import cnmc_samples, patient_of, read_split
from core.engine.data.patient_split import choose_valid_patients, write_patient_split
from leukemia.cli import main


def realdata_copy(realdata_dir: Path, folder: Path) -> Path:
    """A writable C-NMC tree whose images are symlinks to the read-only real ones."""
    images = folder / "images"
    images.mkdir(parents=True)
    for image in sorted((realdata_dir / "images").iterdir()):
        (images / image.name).symlink_to(image)
    return folder


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_synth_folder_is_clean(synth_dir: Path) -> None:
    report = check_folder(synth_dir)
    assert report.layout == "lab" and report.ok
    assert [(s.name, s.source, s.images) for s in report.splits] == [
        ("train", "train.csv", 96),
        ("valid", "valid.csv", 32),
        ("test", "test.csv", 24),
    ]
    train = report.splits[0]
    assert train.class_counts == {0: 31, 1: 65} and train.unlabelled == 0
    assert dict(train.sizes) == {(48, 48): 96}
    assert report.splits[2].unlabelled == 24

    result = CliRunner().invoke(main, ["check", str(synth_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"data folder: {synth_dir}"
    assert lines[3].split() == ["split", "source", "images", "ALL", "(1)", "hem", "(0)", "no", "label", "patients", "sizes"]
    assert lines[4].split() == ["train", "train.csv", "96", "65", "31", "0", "9", "48x48:", "96"]
    assert lines[6].split() == ["test", "test.csv", "24", "0", "0", "24", "-", "48x48:", "24"]  # no patient column
    assert lines[-1] == "OK: no problems found"


def test_lab_report_says_what_the_folder_has(synth_dir: Path) -> None:
    """Patients per split and in all, and what a job may name: its CSV files and named splits, labelled (to
    evaluate) or not (to predict); the data-folder page shows them and the forms offer them."""
    report = check_folder(synth_dir)
    assert [split.patients for split in report.splits] == [9, 3, None]
    assert report.patients == 12  # train and valid; test.csv names none (test_labels.csv is not a split)
    assert report.split_names == {
        "labelled": ["test_labels.csv", "train.csv", "valid.csv", "train", "valid", "train_all"],
        "unlabelled": ["test.csv", "test"],
    }
    saved = report.to_dict()
    assert saved["patients"] == 12 and saved["split_names"] == report.split_names
    assert (saved["images"], saved["class_counts"], saved["unlabelled"]) == (152, {"0": 41, "1": 87}, 24)


def test_json_report(synth_dir: Path) -> None:
    result = CliRunner().invoke(main, ["check", str(synth_dir), "--json"])
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["layout"] == "lab" and report["problems"] == []
    assert report["splits"][1] == {
        "name": "valid",
        "source": "valid.csv",
        "images": 32,
        "class_counts": {"0": 10, "1": 22},
        "unlabelled": 0,
        "sizes": {"48x48": 32},
        "patients": 3,
        "problems": [],
    }


def test_realdata_read_as_cnmc_tree(realdata_dir: Path) -> None:
    report = check_folder(realdata_dir)
    assert report.layout == "cnmc" and report.ok
    assert len(report.splits) == 1  # one top-level folder: no per-folder rows
    whole = report.splits[0]
    assert (whole.name, whole.images, whole.class_counts, whole.patients) == ("all", 71, {1: 36, 0: 35}, 31)
    assert dict(whole.sizes) == {(450, 450): 71}
    result = CliRunner().invoke(main, ["check", str(realdata_dir)])
    assert result.exit_code == 0, result.output
    assert "all    .           71       36       35         0        31  450x450: 71" in result.output


def test_every_problem_is_listed(tmp_path: Path) -> None:
    folder = tmp_path / "lab"
    for split, count in (("train", 4), ("valid", 2)):
        for i in range(count):
            path = folder / split / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((10, 12, 3), dtype=np.uint8)).save(path)
    (folder / "train" / "3.png").write_bytes(b"\x89PNG garbage")
    (folder / "train.csv").write_text(
        "Path,label\ntrain/0.png,1\ntrain/1.png,7\ntrain/missing.png,0\ntrain/3.png,0\ntrain/2.png,1\ntrain/2.png,1\n"
    )
    (folder / "valid.csv").write_text("Path,label\nvalid/0.png,0\n./train/0.png,1\n")
    report = check_folder(folder)
    problems = report.all_problems
    assert problems[:4] == [
        "train.csv row 2: label must be 0 or 1, got '7'",
        "train.csv row 3: image not found: train/missing.png",
        "train.csv row 6: same image as train.csv row 5: train/2.png",
        f"corrupt or unreadable image train/3.png (train.csv row 4): cannot identify image file '{folder / 'train' / '3.png'}'",
    ]
    assert problems[4:] == ["valid.csv row 2: same image as train.csv row 1: ./train/0.png"]
    assert report.splits[0].images == 3 and dict(report.splits[0].sizes) == {(12, 10): 3}
    assert report.notes == ["no test CSV (a *test*.csv with a Path column and no label column); predict needs one"]

    result = CliRunner().invoke(main, ["check", str(folder)])
    assert result.exit_code == 1
    assert "problems (5):\n" + "".join(f"  {p}\n" for p in problems) in result.output
    assert result.output.endswith("5 problem(s) found\n")


def test_patient_safe_split(realdata_dir: Path, tmp_path: Path) -> None:
    folder = realdata_copy(realdata_dir, tmp_path / "a")
    split = write_patient_split(folder, valid_fraction=0.2, seed=0)
    train, valid = csv_rows(folder / "train.csv"), csv_rows(folder / "valid.csv")
    assert (split.train_images, split.valid_images) == (len(train), len(valid))
    assert len(train) + len(valid) == 71
    train_patients = {patient_of(row["Path"]) for row in train}
    valid_patients = {patient_of(row["Path"]) for row in valid}
    assert not train_patients & valid_patients
    assert {row["patient"] for row in valid} == valid_patients == set(split.valid_patients)
    assert len(train_patients | valid_patients) == 31
    assert 0.12 <= len(valid) / 71 <= 0.3
    assert {row["label"] for row in valid} == {"0", "1"}
    assert valid[0]["Path"].startswith("./images/UID_")

    # The CSVs are a lab layout now: they read and check clean.
    assert len(read_split(folder, "train_all")) == 71
    assert check_folder(folder).ok

    again = realdata_copy(realdata_dir, tmp_path / "b")
    write_patient_split(again, valid_fraction=0.2, seed=0)
    assert (again / "valid.csv").read_bytes() == (folder / "valid.csv").read_bytes()
    other = realdata_copy(realdata_dir, tmp_path / "c")
    assert set(write_patient_split(other, valid_fraction=0.2, seed=1).valid_patients) != valid_patients


def test_valid_patients_balance_each_class(realdata_dir: Path) -> None:
    samples = cnmc_samples(realdata_dir)
    patients = {s.id: patient_of(s.id) for s in samples}
    for seed in range(10):
        chosen = choose_valid_patients(samples, patients, 0.3, seed)
        valid = [s for s in samples if patients[s.id] in chosen]
        assert {s.label for s in valid} == {0, 1}
        assert 0.15 <= len(valid) / len(samples) <= 0.45


def test_check_write_csv_cli(realdata_dir: Path, tmp_path: Path) -> None:
    folder = realdata_copy(realdata_dir, tmp_path / "copy")
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(folder), "--write-csv", "--valid-fraction", "0.25", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].endswith("no patient is in both")
    assert len(csv_rows(folder / "valid.csv")) + len(csv_rows(folder / "train.csv")) == 71

    again = runner.invoke(main, ["check", str(folder), "--write-csv"])
    assert again.exit_code == 2
    assert again.stderr == f"error: train.csv already exists in {folder}; remove it to write a new split\n"


def test_write_csv_refused_while_problems_remain(realdata_dir: Path, tmp_path: Path) -> None:
    folder = realdata_copy(realdata_dir, tmp_path / "copy")
    (folder / "images" / "UID_99_1_1_all.bmp").write_bytes(b"BM not really")
    result = CliRunner().invoke(main, ["check", str(folder), "--write-csv"])
    assert result.exit_code == 1
    assert "  corrupt or unreadable image images/UID_99_1_1_all.bmp (images/UID_99_1_1_all.bmp): " in result.output
    assert "not writing train.csv and valid.csv: fix the problems above first" in result.stderr
    assert not (folder / "train.csv").exists()


def test_file_without_patient_is_a_problem(realdata_dir: Path, tmp_path: Path) -> None:
    folder = realdata_copy(realdata_dir, tmp_path / "copy")
    (folder / "images" / "1005_all.bmp").symlink_to(realdata_dir / "images" / "UID_57_6_4_all.bmp")
    report = check_folder(folder)
    assert report.all_problems == [
        "images/1005_all.bmp: cannot tell the patient from the file name "
        "(expected UID_<patient>_..._all.bmp or UID_H<n>_..._hem.bmp)"
    ]
    with pytest.raises(UserInputError, match=r"^images/1005_all\.bmp: cannot tell the patient"):
        write_patient_split(folder)


def test_fold_folders_get_their_own_rows(realdata_dir: Path, tmp_path: Path) -> None:
    images = sorted((realdata_dir / "images").iterdir())
    for i, image in enumerate(images[:10]):
        target = tmp_path / f"fold_{i % 2}" / ("all" if image.name.endswith("_all.bmp") else "hem") / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(image)
    report = check_folder(tmp_path)
    assert [(s.name, s.images) for s in report.splits] == [("all", 10), ("fold_0", 5), ("fold_1", 5)]
    assert sum(s.patients for s in report.splits[1:]) >= report.splits[0].patients


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"valid_fraction": 1.0}, "valid_fraction: must be between 0 and 1 (exclusive), got 1.0"),
        ({"out_dir": "/"}, None),
    ],
)
def test_write_patient_split_bad_arguments(realdata_dir: Path, tmp_path: Path, kwargs: dict, message: str | None) -> None:
    folder = realdata_copy(realdata_dir, tmp_path / "copy")
    if kwargs.get("out_dir"):
        kwargs = {"out_dir": tmp_path / "elsewhere"}
        (tmp_path / "elsewhere").mkdir()
        message = (
            f"out_dir: must be the data folder or a folder above it, so the CSV paths stay inside it: {tmp_path / 'elsewhere'}"
        )
    with pytest.raises(UserInputError) as raised:
        write_patient_split(folder, **kwargs)
    assert str(raised.value) == message
    assert not (folder / "train.csv").exists()


def test_split_into_a_folder_above(realdata_dir: Path, tmp_path: Path) -> None:
    folder = realdata_copy(realdata_dir, tmp_path / "above" / "cnmc")
    split = write_patient_split(folder, out_dir=tmp_path / "above")
    assert split.train_csv == tmp_path / "above" / "train.csv"
    assert csv_rows(split.valid_csv)[0]["Path"].startswith("./cnmc/images/UID_")
    assert len(read_split(tmp_path / "above", "train_all")) == 71
