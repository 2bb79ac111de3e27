"""Image names that a spreadsheet runs as formulas (`=1+2.bmp`, `+SUM(1;2).bmp`, `@SUM(1).bmp`):
the CSVs meant for people write them with a leading apostrophe (core.engine.run_folder.spreadsheet_csv), the
dashboard reads them back exact, the submission CSV keeps them exact, and `leukemia check` warns."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.engine.data.check import check_folder
from core.engine.data.synth import write_synthetic_dataset
from core.engine.evaluation.predict import evaluate_csv, predict_csv
from core.engine.params import EvaluateParams, PredictParams, TrainParams
from core.engine.run_folder.spreadsheet_csv import csv_text, read_csv_frame, read_csv_rows, restored_cell, safe_cell, write_csv
from leukemia.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")

FORMULAS = ["=1+2.bmp", "+SUM(1;2).bmp", "@SUM(1).bmp", "-2+3.bmp"]  # the valid images
TEST_FORMULAS = ["=3+4.bmp", "+SUM(5;6).bmp", "@SUM(7).bmp", "-8+9.bmp"]  # the test images


def test_a_cell_that_starts_like_a_formula_gets_an_apostrophe_and_reads_back_exact(tmp_path: Path) -> None:
    values = [*FORMULAS, "\tx.bmp", "\rx.bmp", "'quoted.bmp", "''", "'", "plain.bmp", "a=b.bmp", "", "-"]
    assert [safe_cell(v) for v in values] == [
        "'=1+2.bmp",
        "'+SUM(1;2).bmp",
        "'@SUM(1).bmp",
        "'-2+3.bmp",
        "'\tx.bmp",
        "'\rx.bmp",
        "''quoted.bmp",
        "'''",
        "''",
        "plain.bmp",
        "a=b.bmp",
        "",
        "'-",
    ]
    assert [restored_cell(safe_cell(v)) for v in values] == values
    assert safe_cell(-1.5) == -1.5 and safe_cell(3) == 3  # numbers are written as numbers
    path = tmp_path / "people.csv"
    write_csv(path, ["ID", "n"], [[v, i] for i, v in enumerate(values)])
    with path.open(newline="") as handle:
        raw = list(csv.reader(handle))
    assert [row[0] for row in raw[1:5]] == ["'=1+2.bmp", "'+SUM(1;2).bmp", "'@SUM(1).bmp", "'-2+3.bmp"]
    assert [row["ID"] for row in read_csv_rows(path)] == values
    assert read_csv_frame(path)["ID"].fillna("").tolist() == values
    assert csv_text(["ID"], [["=x"]]) == "ID\r\n'=x\r\n"


@pytest.fixture(scope="module")
def formula_folder(tmp_path_factory) -> Path:
    """A lab folder whose valid and test images are named like formulas (and one subject too), at
    the top of the folder so that the name is the first character of the ID cell."""
    folder = tmp_path_factory.mktemp("formulas") / "lab"
    write_synthetic_dataset(folder, train=16, valid=4, test=4, image_size=32, seed=0)
    for split, names in (("valid", FORMULAS), ("test", TEST_FORMULAS)):
        for index, name in enumerate(names):
            shutil.move(folder / "new_dataset" / split / f"{index}.bmp", folder / name)
    labels = [line.split(",")[1] for line in (folder / "valid.csv").read_text().splitlines()[1:]]
    subjects = ["=HYPERLINK(1)", "=HYPERLINK(1)", "P2", "P2"]
    (folder / "valid.csv").write_text(
        "Path,label,patient\n"
        + "".join(f"{name},{label},{subject}\n" for name, label, subject in zip(FORMULAS, labels, subjects, strict=True))
    )
    (folder / "test.csv").write_text("Path\n" + "".join(f"{name}\n" for name in TEST_FORMULAS))
    (folder / "test_labels.csv").unlink()
    return folder


@pytest.fixture(scope="module")
def run_folder(formula_folder: Path, tmp_path_factory) -> Path:
    from core.engine.training.loop import train

    run = tmp_path_factory.mktemp("runs") / "a"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEUKEMIA_HOME", str(tmp_path_factory.mktemp("home")))
        train(TrainParams(data_dir=str(formula_folder), epochs=1, image_size=32, seed=0, device="cpu", batch_size=8), run)
    return run


def first_cells(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return [row[0] for row in list(csv.reader(handle))[1:]]


def test_the_csvs_for_people_neutralise_formulas_and_the_submission_keeps_ids_exact(
    formula_folder: Path, run_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "eval"
    evaluate_csv(
        EvaluateParams(checkpoint=str(run_folder), data_dir=str(formula_folder), csv="valid.csv", device="cpu", explain="all"),
        out_dir=out,
    )
    assert first_cells(out / "per_image.csv") == ["'" + name for name in FORMULAS]
    assert [row["ID"] for row in read_csv_rows(out / "per_image.csv")] == FORMULAS  # read back exact
    with (out / "explanations.csv").open(newline="") as handle:
        explained = list(csv.DictReader(handle))
    assert sorted(row["ID"] for row in explained) == sorted("'" + name for name in FORMULAS)
    assert "'=HYPERLINK(1)" in first_cells(out / "subjects.csv")
    assert "=HYPERLINK(1)" in [row["subject"] for row in read_csv_rows(out / "subjects.csv")]

    report = tmp_path / "report"
    submission = tmp_path / "predictions.csv"
    predict_csv(
        PredictParams(checkpoints=[str(run_folder)], data_dir=str(formula_folder), csv="test.csv", device="cpu", explain="all"),
        submission,
        report_dir=report,
    )
    assert first_cells(submission) == TEST_FORMULAS  # exact: a grader matches them
    with (report / "explanations.csv").open(newline="") as handle:
        assert sorted(row["ID"] for row in csv.DictReader(handle)) == sorted("'" + name for name in TEST_FORMULAS)


def test_the_dashboard_reads_the_ids_back_exact(
    formula_folder: Path, run_folder: Path, folder_path: str, client, tmp_path: Path
) -> None:
    """The API's per-image table (web.results reads per_image.csv through the same module) answers the exact IDs."""
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.settings import get_settings
    from tests.conftest import WEB_API_TOKEN
    from tests.web_helpers import finished_train_job

    out = tmp_path / "eval"
    evaluate_csv(
        EvaluateParams(checkpoint=str(run_folder), data_dir=str(formula_folder), csv="valid.csv", device="cpu"), out_dir=out
    )
    job_id = finished_train_job(folder_path)
    recorded = get_settings().resolved_artifacts_dir / f"job-{job_id}" / "per_image.csv"
    shutil.copy(out / "per_image.csv", recorded)
    with get_sessionmaker().begin() as session:
        jobs.add_artifact(session, job_id, "evaluation", recorded)
    answer = client.get(f"/api/jobs/{job_id}/images", headers={"Authorization": f"Bearer {WEB_API_TOKEN}"})
    assert answer.status_code == 200, answer.json
    assert [image["ID"] for image in answer.json["images"]] == FORMULAS
    assert [image["subject"] for image in answer.json["images"]] == ["=HYPERLINK(1)", "=HYPERLINK(1)", "P2", "P2"]


def test_check_warns_of_names_that_start_like_a_formula(formula_folder: Path) -> None:
    report = check_folder(formula_folder)
    assert report.ok, report.all_problems
    tail = (
        "; the CSVs for people (per_image.csv, explanations.csv, subjects.csv, oof.csv) write them with a "
        "leading ', the submission CSV (predictions.csv) keeps them exact"
    )
    assert report.warnings == [
        "valid.csv: 4 image name(s) begin like a spreadsheet formula (=, +, -, @, tab or CR): valid.csv row 1 "
        "'=1+2.bmp', valid.csv row 2 '+SUM(1;2).bmp', valid.csv row 3 '@SUM(1).bmp' and 1 more" + tail,
        "test.csv: 4 image name(s) begin like a spreadsheet formula (=, +, -, @, tab or CR): test.csv row 1 "
        "'=3+4.bmp', test.csv row 2 '+SUM(5;6).bmp', test.csv row 3 '@SUM(7).bmp' and 1 more" + tail,
    ]
    result = CliRunner().invoke(main, ["check", str(formula_folder)])
    assert result.exit_code == 0 and "warnings:\n  valid.csv: 4 image name(s) begin like a spreadsheet formula" in result.output
