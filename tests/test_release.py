"""The C-NMC 2019 release as downloaded: read as is (top or one folder down), checked per part,
named splits, the submission CSV in file-number order, and every bad input as one line."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.common.errors import UserInputError
from core.engine.data.check import check_folder
from core.engine.data.splits import folder_image_size, kfold_groups, read_named_split, training_splits
from core.engine.evaluation.scores import subject_table
from leukemia.cli import main
from tests.release_helpers import PRELIM, PRELIM_CSV, build_release, make_writable

pytestmark = pytest.mark.usefixtures("isolated_home")
ROOT = "C-NMC_Leukemia"


def tree_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


@pytest.fixture()
def writable_release(realdata_dir: Path, tmp_path: Path) -> Path:
    """A release tree at the top of a writable folder, to break in one way per test."""
    build_release(realdata_dir, tmp_path / "release")
    return tmp_path / "release"


def test_check_reports_each_part(release_dir: Path) -> None:
    report = check_folder(release_dir)
    assert report.layout == "release" and report.ok, report.all_problems
    assert [s.name for s in report.splits] == ["fold_0", "fold_1", "fold_2", "prelim", "final"]
    assert [s.source for s in report.splits][3] == f"{ROOT}/validation_data/C-NMC_test_prelim_phase_data"
    assert sum(s.images for s in report.splits) == 71
    final = report.splits[4]
    assert final.unlabelled == final.images == 18 and final.patients is None
    assert all(s.patients > 0 for s in report.splits[:4])
    assert report.shared_subjects == {} and report.image_size == 450
    assert "the 3 folds are subject-disjoint (no subject in two folds)" in report.notes

    result = CliRunner().invoke(main, ["check", str(release_dir), "--json"])
    assert result.exit_code == 0, result.output
    output = json.loads(result.stdout)
    assert output["layout"] == "release" and output["folds_subject_disjoint"] is True and output["image_size"] == 450
    refused = CliRunner().invoke(main, ["check", str(release_dir), "--write-csv"])
    assert refused.exit_code == 2 and refused.stderr.startswith(
        "not writing train.csv and valid.csv: the C-NMC release needs none"
    )


def test_folds_sharing_a_subject_warn_in_check_and_fail_when_disjoint_folds_are_asked(writable_release: Path) -> None:
    source = next((writable_release / "training_data" / "fold_0" / "all").iterdir())
    subject = source.name.split("_")[1]
    moved = writable_release / "training_data" / "fold_1" / "all" / source.name
    shutil.move(source, moved)
    (writable_release / "training_data" / "fold_0" / "all" / source.name.replace("_all", "_9_all")).write_bytes(b"")
    report = check_folder(writable_release)
    assert report.shared_subjects == {subject: ["fold_0", "fold_1"]}
    assert report.warnings == [f"the folds are not subject-disjoint: 1 subject(s) in several folds: {subject} (fold_0, fold_1)"]
    with pytest.raises(UserInputError, match=rf"^valid_split: subject {subject} is in both folds:1,2 and fold:0 "):
        training_splits(writable_release, "folds:1,2", "fold:0", 0)


@pytest.mark.parametrize(
    ("breakage", "line"),
    [
        ("missing image", f"{PRELIM_CSV.as_posix()} row 1: image not found: {PRELIM.as_posix()}/1.bmp"),
        ("label 2", f"{PRELIM_CSV.as_posix()} row 1: labels must be 0 or 1, got '2'"),
        ("listed twice", f"{PRELIM_CSV.as_posix()} row 10: new_names X listed twice (first in row 1)"),
        ("no row", f"{PRELIM.as_posix()}/99.bmp: no row in {PRELIM_CSV.as_posix()}"),
        ("wrong class folder", "training_data/fold_0/hem/X: a _all image in the hem/ folder"),
    ],
)
def test_bad_release_input_is_one_line(writable_release: Path, breakage: str, line: str) -> None:
    csv_path = writable_release / PRELIM_CSV
    rows = list(csv.reader(csv_path.open()))
    name = rows[1][1]
    if breakage == "missing image":
        (writable_release / PRELIM / name).unlink()
        (writable_release / PRELIM / "99.bmp").write_bytes((writable_release / PRELIM / rows[2][1]).read_bytes())
        rows.append(["UID_1_99_1_all.bmp", "99.bmp", "1"])  # keep the image count: only the missing row is wrong
        line = line.replace("1.bmp", name)
    elif breakage == "label 2":
        rows[1][2] = "2"
    elif breakage == "listed twice":
        rows.append(rows[1])
        line = line.replace("X", name)
    elif breakage == "no row":
        shutil.copyfile(writable_release / PRELIM / name, writable_release / PRELIM / "99.bmp")
    else:
        image = next((writable_release / "training_data" / "fold_0" / "all").iterdir())
        shutil.move(image, writable_release / "training_data" / "fold_0" / "hem" / image.name)
        line = line.replace("X", image.name)
    with csv_path.open("w", newline="") as handle:
        csv.writer(handle).writerows(rows)

    report = check_folder(writable_release)
    assert report.all_problems == [line]
    result = CliRunner().invoke(main, ["check", str(writable_release)])
    assert result.exit_code == 1 and f"  {line}" in result.output.splitlines()
    part = "prelim" if breakage != "wrong class folder" else "fold:0"
    with pytest.raises(UserInputError) as error:
        read_named_split(writable_release, part)
    assert str(error.value) == line


def test_named_splits(release_dir: Path) -> None:
    folds = [read_named_split(release_dir, f"fold:{k}") for k in range(3)]
    assert [len(f) for f in folds] == [15, 16, 13]
    assert len(read_named_split(release_dir, "folds:0,2")) == 28 and len(read_named_split(release_dir, "train_all")) == 44
    train, valid = training_splits(release_dir, "train", None, 0)  # the default: a subject-disjoint share
    assert len(train) + len(valid) == 44 and {s.subject for s in train}.isdisjoint({s.subject for s in valid})
    assert {s.label for s in valid} == {0, 1}
    train, valid = training_splits(release_dir, "folds:0,1", "fold:2", 0)
    assert (len(train), len(valid)) == (31, 13)
    train, valid = training_splits(release_dir, "train_all", "share:0.25", 3)
    assert {s.subject for s in train}.isdisjoint({s.subject for s in valid}) and len(train) + len(valid) == 44
    prelim = read_named_split(release_dir, "prelim", labelled=True)
    assert [s.path.name for s in prelim] == [f"{n}.bmp" for n in range(1, 10)]
    assert all(s.subject and s.label in (0, 1) for s in prelim)
    final = read_named_split(release_dir, "final")
    assert [s.id for s in final] == [f"{ROOT}/testing_data/C-NMC_test_final_phase_data/{n}.bmp" for n in range(1, 19)]
    with pytest.raises(UserInputError, match="^csv: final has no labels; evaluate needs a labelled split"):
        read_named_split(release_dir, "final", labelled=True)
    with pytest.raises(UserInputError, match=r"^fold 7: no training_data/fold_7 in .* \(folds: 0, 1, 2\)$"):
        read_named_split(release_dir, "fold:7")
    with pytest.raises(UserInputError, match="^split: unknown split 'fold7'"):
        read_named_split(release_dir, "fold7")
    assert folder_image_size(release_dir) == 450


def test_kfold_groups_are_subject_disjoint_and_seeded(release_dir: Path) -> None:
    pool = read_named_split(release_dir, "train_all")
    groups = kfold_groups(pool, 3, seed=5)
    assert sorted(set(groups.values())) == [0, 1, 2] and groups == kfold_groups(pool, 3, seed=5)
    parts = [read_named_split(release_dir, f"kfold:3:{k}", seed=5) for k in range(3)]
    assert sum(map(len, parts)) == 44
    subjects = [{s.subject for s in part} for part in parts]
    assert not (subjects[0] & subjects[1]) and not (subjects[1] & subjects[2]) and not (subjects[0] & subjects[2])
    assert all({s.label for s in part} == {0, 1} for part in parts)


def test_cli_train_evaluate_predict_on_the_release(release_dir: Path, tmp_path: Path) -> None:
    """From the download folder (read-only) to the submission CSV, with named splits; nothing written beside the images."""
    before = tree_files(release_dir)
    runner = CliRunner()
    run_folder = tmp_path / "run"
    trained = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(release_dir),
            "--split",
            "folds:0,1",
            "--valid-split",
            "fold:2",
            "--epochs",
            "1",
            "--image-size",
            "48",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(run_folder),
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "valid loss" in trained.stdout
    evaluated = runner.invoke(
        main,
        [
            "evaluate",
            "--checkpoint",
            str(run_folder),
            "--data",
            str(release_dir),
            "--split",
            "prelim",
            "--out",
            str(tmp_path / "prelim"),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stdout.startswith("prelim: 9 images, accuracy ")
    assert evaluated.stdout.splitlines()[1].startswith("5 subjects: mean per-subject accuracy ")
    evaluation = json.loads((tmp_path / "prelim" / "evaluation.json").read_text())
    prelim = read_named_split(release_dir, "prelim")
    assert {row["subject"] for row in evaluation["subjects"]} == {s.subject for s in prelim}
    assert sum(row["images"] for row in evaluation["subjects"]) == 9
    with (tmp_path / "prelim" / "subjects.csv").open() as handle:
        assert next(csv.reader(handle)) == ["subject", "label", "images", "accuracy", "called_all", "mean_prob_1"]
    out = tmp_path / "submission.csv"
    predicted = runner.invoke(
        main, ["predict", "--checkpoint", str(run_folder), "--data", str(release_dir), "--split", "final", "--out", str(out)]
    )
    assert predicted.exit_code == 0, predicted.output
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["ID", "label"] and len(rows) == 19
    assert [r[0] for r in rows[1:]] == [f"{ROOT}/testing_data/C-NMC_test_final_phase_data/{n}.bmp" for n in range(1, 19)]
    assert {r[1] for r in rows[1:]} <= {"0", "1"}
    finetuned = runner.invoke(
        main,
        [
            "finetune",
            "--from",
            str(run_folder),
            "--data",
            str(release_dir),
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "finetuned"),
        ],
    )
    assert finetuned.exit_code == 0, finetuned.output  # default split train_all: every fold, no validation
    assert json.loads((tmp_path / "finetuned" / "metrics.json").read_text())["params"]["split"] == "train_all"
    assert tree_files(release_dir) == before

    wrong = runner.invoke(main, ["evaluate", "--checkpoint", str(run_folder), "--data", str(release_dir), "--split", "final"])
    assert (
        wrong.exit_code == 2
        and wrong.output == "error: csv: final has no labels; evaluate needs a labelled split (e.g. prelim, valid.csv)\n"
    )


def test_subject_table() -> None:
    table = subject_table(["a", "a", "a", "H1", "H1", None], [1, 1, 1, 0, 0, 1], [0.9, 0.2, 0.6, 0.1, 0.7, 0.9])
    assert table.to_dict(orient="records") == [
        {"subject": "H1", "label": 0, "images": 2, "accuracy": 0.5, "called_all": 0.5, "mean_prob_1": pytest.approx(0.4)},
        {
            "subject": "a",
            "label": 1,
            "images": 3,
            "accuracy": pytest.approx(2 / 3),
            "called_all": pytest.approx(2 / 3),
            "mean_prob_1": pytest.approx(1.7 / 3),
        },
    ]


def test_image_size_defaults_to_the_folders(synth_dir: Path, tmp_path: Path) -> None:
    """The synthetic folder is 48 px: training without --image-size runs at 48, not 450."""
    assert folder_image_size(synth_dir) == 48
    run_folder = tmp_path / "run"
    trained = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(synth_dir),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--split",
            "train",
            "--valid-split",
            "none",
            "--out",
            str(run_folder),
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert json.loads((run_folder / "metrics.json").read_text())["params"]["image_size"] == 48


def test_release_one_folder_down_and_two_is_ambiguous(writable_release: Path, tmp_path: Path) -> None:
    download = tmp_path / "download"
    download.mkdir()
    (download / "a").symlink_to(writable_release)
    assert len(read_named_split(download, "fold:0")) == 15
    (download / "b").symlink_to(writable_release)
    with pytest.raises(UserInputError, match=r"several C-NMC release folders \(a, b\); name the one to use$"):
        read_named_split(download, "fold:0")
    make_writable(download)


def test_evaluate_on_valid_uses_the_training_runs_held_out_subjects(release_dir: Path, tmp_path: Path) -> None:
    """A release's `valid` is a seeded subject share: evaluate must draw it with the run's own seed, else a
    run trained with another seed is scored on subjects it trained on."""
    runner = CliRunner()
    run_folder = tmp_path / "run"
    trained = runner.invoke(
        main,
        [
            "train",
            "--data",
            str(release_dir),
            "--split",
            "train",
            "--valid-split",
            "valid",
            "--seed",
            "7",
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(run_folder),
        ],
    )
    assert trained.exit_code == 0, trained.output
    held_out = {s.id for s in read_named_split(release_dir, "valid", seed=7)}
    assert held_out != {s.id for s in read_named_split(release_dir, "valid", seed=0)}  # the seed matters here
    evaluated = runner.invoke(
        main,
        [
            "evaluate",
            "--checkpoint",
            str(run_folder),
            "--data",
            str(release_dir),
            "--split",
            "valid",
            "--out",
            str(tmp_path / "valid"),
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    with (tmp_path / "valid" / "per_image.csv").open() as handle:
        assert {row["ID"] for row in csv.DictReader(handle)} == held_out
