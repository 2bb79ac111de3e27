"""Grad-CAM proved against its closed form for a ResNet (ReLU of the fc row of ALL applied to
the layer4 maps), batch independence, and evaluate/predict with heat maps, the per-image table,
a threshold chosen on valid.csv and recorded in the checkpoint, and the bad-input lines."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from core.engine.evaluation.explain import grad_cam, select_for_explanation
from core.engine.evaluation.predict import evaluate_csv, predict_csv
from core.engine.evaluation.threshold import THRESHOLD_KEY
from core.engine.model.checkpoint import load_checkpoint
from core.engine.model.resnet import build_model
from core.engine.params import EvaluateParams, PredictParams, TrainParams
from core.engine.run_folder.layout import classify_artifacts
from core.engine.training.loop import train
from leukemia.commands.engine import evaluate as evaluate_command
from tests.settings_override import overridden_settings

pytestmark = pytest.mark.usefixtures("isolated_home")


def test_grad_cam_is_the_closed_form_cam_of_a_resnet() -> None:
    torch.manual_seed(0)
    model = build_model("resnet18").eval()
    images = torch.randn(3, 3, 96, 96)
    maps = grad_cam(model, images)
    assert maps.shape == (3, 96, 96) and float(maps.min()) >= 0 and float(maps.max()) <= 1 + 1e-6
    # Global average pooling then fc: d(ALL logit)/dA_k = fc.weight[1, k] / (h*w) at every position.
    captured = {}
    model.layer4.register_forward_hook(lambda _m, _i, out: captured.setdefault("a", out))
    with torch.no_grad():
        model(images)
    expected = torch.relu(torch.einsum("k,nkhw->nhw", model.fc.weight[1], captured["a"]))
    expected = F.interpolate(expected[:, None], size=(96, 96), mode="bilinear", align_corners=False)[:, 0]
    expected = expected / expected.flatten(1).amax(dim=1)[:, None, None].clamp_min(1e-12)
    assert torch.allclose(maps, expected, atol=1e-5)


def test_grad_cam_of_an_image_does_not_depend_on_its_batch() -> None:
    torch.manual_seed(1)
    model = build_model("resnet18").eval()
    images = torch.randn(4, 3, 64, 64)
    together = grad_cam(model, images)
    alone = torch.cat([grad_cam(model, images[i : i + 1]) for i in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)
    with pytest.raises(ValueError, match="eval"):
        grad_cam(model.train(), images)


def test_selection_takes_confident_mistakes_then_the_least_confident() -> None:
    probabilities = np.array([0.95, 0.1, 0.55, 0.48, 0.9, 0.02])
    truth = np.array([0, 1, 1, 0, 1, 1])  # wrong at 0.5: image 0 (margin .45), 1 (.4), 5 (.48)
    assert select_for_explanation(probabilities, 0.5, truth, 2) == [
        (5, "confident mistake"),
        (0, "confident mistake"),
        (3, "least confident"),
        (2, "least confident"),
    ]
    assert select_for_explanation(probabilities, 0.5, None, 1) == [(3, "least confident")]
    assert len(select_for_explanation(probabilities, 0.5, None, None)) == 6
    assert select_for_explanation(probabilities, 0.5, truth, 0) == []


@pytest.fixture(scope="module")
def run_folder(synth_dir: Path, tmp_path_factory) -> Path:
    """A one-epoch resnet18 run at 48 px on the synthetic folder."""
    runs = tmp_path_factory.mktemp("runs")
    with overridden_settings(LEUKEMIA_HOME=str(tmp_path_factory.mktemp("home")), CACHE_DIR=None):
        train(TrainParams(data_dir=str(synth_dir), epochs=1, image_size=48, seed=0, device="cpu"), runs / "a")
    return runs / "a"


def test_evaluate_writes_per_image_results_curves_and_heat_maps(synth_dir: Path, run_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval"
    params = EvaluateParams(
        checkpoint=str(run_folder), data_dir=str(synth_dir), csv="valid.csv", device="cpu", explain="2", threshold=0.4
    )
    result = evaluate_csv(params, out_dir=out)
    scores = result.scores
    assert scores["threshold"]["value"] == 0.4 and scores["threshold"]["source"] == "given"
    rows = list(csv.DictReader((out / "per_image.csv").open()))
    assert len(rows) == 32 and list(rows[0]) == ["ID", "subject", "true_label", "prob_all", "predicted", "correct", "explanation"]
    for row in rows:
        assert row["predicted"] == ("1" if float(row["prob_all"]) >= 0.4 else "0")
        assert row["correct"] == str(int(row["predicted"] == row["true_label"]))
    wrong = sum(row["correct"] == "0" for row in rows)
    assert wrong == scores["confusion"][0][1] + scores["confusion"][1][0]
    explained = [row["explanation"] for row in rows if row["explanation"]]
    assert len(explained) == scores["explained"] == min(2, wrong) + 2
    with zipfile.ZipFile(out / "explanations.zip") as archive:
        names = set(archive.namelist())
        assert set(explained) | {"explanations.csv", "README.txt"} == names
        assert "ALL logit" in archive.read("README.txt").decode()
        picture = Image.open(out / "explanations" / explained[0])
        assert picture.size == (2 * 48, 48)  # the cell, and beside it the overlay
    for name in ("roc.png", "pr.png", "calibration.png", "probabilities.png", "evaluation.json"):
        assert (out / name).stat().st_size > 0
    written = sorted(path.name for path in out.iterdir() if path.is_file())
    classified = {path.name: kind for kind, path in classify_artifacts(out)}
    assert sorted(classified) == written  # the run-files table knows every file evaluate writes
    assert {classified[name] for name in ("per_image.csv", "subjects.csv", "evaluation.json") if name in classified} == {
        "evaluation"
    }
    saved = json.loads((out / "evaluation.json").read_text())
    interval = saved["clinical"]["interval"]
    assert (interval["unit"], interval["units"]) == ("subject", 3)  # valid.csv's synthetic patients (2 ALL, 1 hem)
    assert saved["clinical"]["metrics"]["sensitivity"]["value"] == pytest.approx(
        scores["confusion"][1][1] / sum(scores["confusion"][1])
    )


def test_threshold_chosen_on_valid_is_recorded_and_used_later(synth_dir: Path, run_folder: Path, tmp_path: Path) -> None:
    checkpoint = tmp_path / "best.pt"
    checkpoint.write_bytes((run_folder / "best.pt").read_bytes())
    chosen = evaluate_csv(
        EvaluateParams(
            checkpoint=str(checkpoint),
            data_dir=str(synth_dir),
            csv="valid.csv",
            device="cpu",
            threshold_from="valid",
            target_sensitivity=0.9,
        )
    )
    threshold = chosen.scores["threshold"]
    assert threshold["source"] == "valid" and threshold["method"] == "sensitivity"
    assert chosen.scores["clinical"]["metrics"]["sensitivity"]["value"] >= 0.9
    assert load_checkpoint(checkpoint)[THRESHOLD_KEY]["value"] == threshold["value"]
    out = tmp_path / "preds.csv"
    test_csv = dict(checkpoints=[str(checkpoint)], data_dir=str(synth_dir), csv="test.csv")
    later = predict_csv(PredictParams(**test_csv, probabilities=True, explain="1"), out, report_dir=tmp_path / "report")
    assert later.threshold["source"] == "recorded" and later.threshold["value"] == threshold["value"]
    for row in csv.DictReader(out.open()):
        if abs(float(row["prob_1"]) - threshold["value"]) > 1e-6:  # the CSV rounds to 6 decimals
            assert row["label"] == ("1" if float(row["prob_1"]) >= threshold["value"] else "0")
    summary = json.loads((tmp_path / "report" / "prediction.json").read_text())
    assert summary["class_counts"]["all"] == later.positives and sum(summary["histogram"]["counts"]) == 24
    assert summary["explained"] == 1 and (tmp_path / "report" / "explanations.zip").is_file()
    # Told otherwise, the given threshold wins over the recorded one.
    given = predict_csv(PredictParams(**test_csv, threshold=0.0), out)
    assert given.positives == 24 and given.threshold["source"] == "given"


def test_bad_options_and_a_one_class_set_are_one_line(synth_dir: Path, run_folder: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    base = ["--checkpoint", str(run_folder), "--data", str(synth_dir), "--device", "cpu"]
    for options, message in (
        (["--threshold-from", "valid", "--target-sensitivity", "1.5"], "target_sensitivity: 1.5 is not a sensitivity"),
        (["--explain", "-3"], "explain: '-3' is not a number of images"),
        (["--threshold", "1.2"], "threshold: Input should be less than or equal to 1"),
        (["--explain", "2"], "explain: the heat maps need an output folder (--out)"),
    ):
        outcome = runner.invoke(evaluate_command, base + options)
        assert outcome.exit_code == 2, outcome.output
        assert outcome.output.strip().splitlines() == [f"error: {outcome.output.split('error: ')[1].strip()}"]
        assert message in outcome.output
    # A set of ALL images only: AUC and specificity are undefined, said plainly; nothing crashes.
    rows = [r for r in csv.DictReader((synth_dir / "valid.csv").open()) if r["label"] == "1"]
    one_class = tmp_path / "one"
    one_class.mkdir()
    (one_class / "new_dataset").symlink_to(synth_dir / "new_dataset")
    with (one_class / "all_only.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["Path", "label", "patient"])
        writer.writeheader()
        writer.writerows(rows)
    outcome = runner.invoke(
        evaluate_command,
        base[:2] + ["--data", str(one_class), "--csv", "all_only.csv", "--device", "cpu", "--out", str(tmp_path / "e")],
    )
    assert outcome.exit_code == 0, outcome.output
    assert "note: ROC-AUC is undefined: the set holds one class only" in outcome.output
    assert "note: specificity is undefined: the set holds no hem (label 0) image" in outcome.output
    assert (tmp_path / "e" / "roc.png").is_file()
