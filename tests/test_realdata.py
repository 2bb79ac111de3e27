"""The 71 real C-NMC images through the same loader and the CLI: a checkpoint trained (via
`leukemia train`) on synthetic cells evaluates and predicts on them row for row."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.engine.data.layouts import read_csv_samples
from leukemia.cli import main

pytestmark = pytest.mark.usefixtures("isolated_home")


def test_real_images_evaluate_and_predict(realdata_dir: Path, synth_dir: Path, tmp_path: Path) -> None:
    samples = read_csv_samples(realdata_dir, "labels.csv", labelled=True)
    assert len(samples) == 71 and {s.label for s in samples} == {0, 1}

    runner = CliRunner()
    run_folder = tmp_path / "run"
    trained = runner.invoke(
        main,
        ["train", "--data", str(synth_dir), "--epochs", "1", "--image-size", "32", "--device", "cpu", "--out", str(run_folder)],
    )
    assert trained.exit_code == 0, trained.output
    assert "epoch 1/1: train loss" in trained.stdout and "valid loss" in trained.stdout
    resumed = runner.invoke(main, ["train", "--resume", str(run_folder)])  # finished: re-reports, trains nothing
    assert resumed.exit_code == 0 and resumed.stdout.count("epoch 1/1: train loss") == 1, resumed.output

    evaluation_dir = tmp_path / "evaluation"
    evaluated = runner.invoke(
        main,
        [
            "evaluate",
            "--checkpoint",
            str(run_folder),
            "--data",
            str(realdata_dir),
            "--csv",
            "labels.csv",
            "--out",
            str(evaluation_dir),
            "--tta",
        ],
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert evaluated.stdout.startswith("labels.csv: 71 images, accuracy ")
    metrics = json.loads((evaluation_dir / "evaluation.json").read_text())
    assert metrics["count"] == 71 and sum(map(sum, metrics["confusion"])) == 71
    positives = sum(s.label for s in samples)
    assert sum(metrics["confusion"][1]) == positives  # row 1 = truly ALL

    out = tmp_path / "preds.csv"
    predicted = runner.invoke(
        main,
        [
            "predict",
            "--checkpoint",
            str(run_folder / "last.pt"),
            "--data",
            str(realdata_dir),
            "--csv",
            "labels.csv",
            "--out",
            str(out),
            "--probabilities",
        ],
    )
    assert predicted.exit_code == 0, predicted.output
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    with (realdata_dir / "labels.csv").open(newline="") as file:
        expected_ids = [row["Path"] for row in csv.DictReader(file)]
    assert [row["ID"] for row in rows] == expected_ids
    assert {row["label"] for row in rows} <= {"0", "1"}
    assert all(0.0 <= float(row["prob_1"]) <= 1.0 for row in rows)
