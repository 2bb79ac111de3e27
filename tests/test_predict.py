"""Evaluation and prediction with small checkpoints trained on the synthetic folder: the
submission CSV row for row, probabilities, TTA, ensembles, metrics against a hand count."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from core.engine.evaluation.predict import dihedral_views, evaluate_csv, predict_csv
from core.engine.params import EvaluateParams, PredictParams, TrainParams
from core.engine.progress import PredictionObserver, RunStopped
from core.engine.training.loop import train
from core.service.settings import get_settings
from leukemia.commands.engine import predict as predict_command
from tests.settings_override import overridden_settings

pytestmark = pytest.mark.usefixtures("isolated_home")


@pytest.fixture(scope="module")
def checkpoints(synth_dir: Path, tmp_path_factory) -> tuple[Path, Path]:
    """Two one-epoch resnet18 runs: A at 48 px (the images' own size), B at 32 px with another seed."""
    runs = tmp_path_factory.mktemp("runs")
    with overridden_settings(LEUKEMIA_HOME=str(tmp_path_factory.mktemp("home")), CACHE_DIR=None):
        for name, size, seed in (("a", 48, 0), ("b", 32, 1)):
            params = TrainParams(data_dir=str(synth_dir), epochs=1, image_size=size, seed=seed, device="cpu")
            train(params, runs / name)
    return runs / "a", runs / "b"


def predict_params(checkpoints, data_dir: Path, csv_name: str, **options) -> PredictParams:
    return PredictParams(data_dir=str(data_dir), csv=csv_name, checkpoints=[str(c) for c in checkpoints], **options)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def test_submission_matches_the_test_csv_row_for_row(synth_dir: Path, checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    result = predict_csv(predict_params([checkpoints[0]], synth_dir, "test.csv", probabilities=True), out)
    rows = read_rows(out)
    test_ids = [row["Path"] for row in read_rows(synth_dir / "test.csv")]
    assert list(rows[0]) == ["ID", "label", "prob_1"]
    assert [row["ID"] for row in rows] == test_ids  # unchanged (./new_dataset/...), same order
    assert {row["label"] for row in rows} <= {"0", "1"} and result.count == len(test_ids) == 24
    for row in rows:
        assert 0.0 <= float(row["prob_1"]) <= 1.0
        assert row["label"] == ("1" if float(row["prob_1"]) >= 0.5 else "0")
    assert result.positives == sum(row["label"] == "1" for row in rows)
    assert torch.tensor(1e-40, dtype=torch.float32).item() != 0.0  # denormals flushed for the run only


def test_cli_predict_writes_id_label_only(synth_dir: Path, checkpoints, tmp_path: Path) -> None:
    out = tmp_path / "preds.csv"
    args = ["--checkpoint", str(checkpoints[1]), "--data", str(synth_dir), "--csv", "test.csv", "--out", str(out)]
    result = CliRunner().invoke(predict_command, args)
    assert result.exit_code == 0, result.output
    assert "wrote 24 predictions" in result.stdout
    rows = read_rows(out)
    assert list(rows[0]) == ["ID", "label"] and len(rows) == 24


class ProgressLog(PredictionObserver):
    """Keeps every progress report; asks to stop once stop_after images are done."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.reports: list[tuple[int, int]] = []
        self.stop_after = stop_after

    def on_progress(self, progress) -> None:
        assert progress.images_per_s > 0 and progress.eta_s >= 0
        self.reports.append((progress.done, progress.total))

    def should_stop(self) -> bool:
        return self.stop_after is not None and bool(self.reports) and self.reports[-1][0] >= self.stop_after


def test_an_ensemble_reports_images_not_epochs_and_stops_on_request(synth_dir: Path, checkpoints, tmp_path: Path) -> None:
    log = ProgressLog()
    params = predict_params(list(checkpoints), synth_dir, "test.csv", batch_size=10)
    predict_csv(params, tmp_path / "both.csv", observer=log)
    # 24 images, 2 checkpoints, batches of 10: 10, 20, 24 per checkpoint, counted over the whole ensemble.
    assert log.reports == [(10, 48), (20, 48), (24, 48), (34, 48), (44, 48), (48, 48)]

    stopping = ProgressLog(stop_after=20)
    with pytest.raises(RunStopped, match="after 20 of 48 images"):
        predict_csv(params, tmp_path / "stopped.csv", observer=stopping)
    assert stopping.reports[-1] == (20, 48) and not (tmp_path / "stopped.csv").exists()


def test_ensemble_averages_each_checkpoints_probabilities(synth_dir: Path, checkpoints, tmp_path: Path) -> None:
    single = []
    for index, checkpoint in enumerate(checkpoints):
        predict_csv(predict_params([checkpoint], synth_dir, "test.csv", probabilities=True), tmp_path / f"{index}.csv")
        single.append(np.array([float(r["prob_1"]) for r in read_rows(tmp_path / f"{index}.csv")]))
    predict_csv(predict_params(list(checkpoints), synth_dir, "test.csv", probabilities=True), tmp_path / "both.csv")
    both = np.array([float(r["prob_1"]) for r in read_rows(tmp_path / "both.csv")])
    assert not np.allclose(single[0], single[1], atol=1e-3)  # two different models (48 px and 32 px)
    assert np.allclose(both, (single[0] + single[1]) / 2, atol=2e-6)


def test_dihedral_views_are_the_eight_symmetries() -> None:
    import torch

    image = torch.arange(9.0).view(1, 1, 3, 3)
    views = {tuple(v.flatten().tolist()) for v in dihedral_views(image)}
    assert len(views) == 8


def test_tta_prediction_is_invariant_to_rotating_the_images(synth_dir: Path, checkpoints, tmp_path: Path) -> None:
    """TTA sees the same 8 views of an image turned by 90°, so its probabilities must not change."""
    rotated_dir = tmp_path / "rotated"
    (rotated_dir / "cells").mkdir(parents=True)
    ids = [row["Path"] for row in read_rows(synth_dir / "test.csv")]
    with (rotated_dir / "test.csv").open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["Path"])
        for number, cell in enumerate(ids):
            with Image.open(synth_dir / cell) as image:
                image.transpose(Image.Transpose.ROTATE_90).save(rotated_dir / "cells" / f"{number}.bmp")
            writer.writerow([f"cells/{number}.bmp"])

    def probabilities(data_dir: Path, tta: bool) -> np.ndarray:
        out = tmp_path / f"{data_dir.name}-{tta}.csv"
        predict_csv(predict_params([checkpoints[0]], data_dir, "test.csv", tta=tta, probabilities=True), out)
        return np.array([float(r["prob_1"]) for r in read_rows(out)])

    with_tta = probabilities(synth_dir, True)
    assert np.allclose(with_tta, probabilities(rotated_dir, True), atol=1e-5)
    assert not np.allclose(with_tta, probabilities(synth_dir, False), atol=1e-4)  # TTA did change something


def test_evaluate_agrees_with_a_hand_count(synth_dir: Path, checkpoints, tmp_path: Path) -> None:
    # valid.csv has a label column: predict accepts it and ignores the labels.
    predict_csv(predict_params([checkpoints[0]], synth_dir, "valid.csv"), tmp_path / "valid-preds.csv")
    predicted = [int(r["label"]) for r in read_rows(tmp_path / "valid-preds.csv")]
    truth = [int(r["label"]) for r in read_rows(synth_dir / "valid.csv")]
    pairs = list(zip(truth, predicted))
    hand = [[pairs.count((0, 0)), pairs.count((0, 1))], [pairs.count((1, 0)), pairs.count((1, 1))]]

    result = evaluate_csv(
        EvaluateParams(data_dir=str(synth_dir), csv="valid.csv", checkpoint=str(checkpoints[0])), out_dir=tmp_path / "evaluation"
    )
    scores = result.scores
    assert scores["confusion"] == hand and scores["count"] == 32
    assert scores["accuracy"] == pytest.approx(sum(t == p for t, p in pairs) / 32)
    saved = json.loads((tmp_path / "evaluation" / "evaluation.json").read_text())
    assert saved["confusion"] == hand and saved["checkpoint"].endswith("best.pt")
    confusion_rows = list(csv.reader((tmp_path / "evaluation" / "confusion.csv").open()))
    assert [[int(c) for c in row[1:]] for row in confusion_rows[1:]] == hand
    assert (tmp_path / "evaluation" / "confusion.png").read_bytes()[:4] == b"\x89PNG"


def test_predictions_are_identical_cold_and_warm_and_write_no_cache(synth_dir: Path, checkpoints, tmp_path: Path) -> None:
    from core.engine.data.layouts import read_csv_samples
    from core.engine.inputs.cache import load_image_cache

    cache_dir = get_settings().resolved_cache_dir
    params = predict_params([checkpoints[0]], synth_dir, "test.csv", tta=True, probabilities=True)
    cold = tmp_path / "cold.csv"
    predict_csv(params, cold)
    assert not cache_dir.exists() or not list(cache_dir.glob("*.npy"))  # one pass decodes in memory
    warm = tmp_path / "warm.csv"
    predict_csv(params, warm)
    load_image_cache(read_csv_samples(synth_dir, "test.csv", labelled=False), 48, cache_dir=cache_dir)
    cached = tmp_path / "cached.csv"
    predict_csv(params, cached)
    assert cold.read_text() == warm.read_text() == cached.read_text()
