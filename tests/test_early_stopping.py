"""Early stopping: patience on a validation metric that plateaus by construction (each validation
image is there twice, once per label, so any model scores exactly 0.5 accuracy), best.pt from the
best epoch by that metric, the counter kept across a resume; the one-line field errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.checkpoint import load_checkpoint
from core.errors import UserInputError
from core.params import parse_params
from core.progress import EpochRecord, RunStopped, TrainingObserver
from core.run_state import RunLog
from core.settings import get_settings
from core.training import train

SIZE = 32


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """One LEUKEMIA_HOME (image caches) for the module's runs."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LEUKEMIA_HOME", str(tmp_path_factory.mktemp("home")))
        patch.delenv("CACHE_DIR", raising=False)
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


def write_plateau_folder(folder: Path) -> Path:
    """A small synthetic folder whose valid.csv holds every validation image twice, as two files with
    opposite labels: a model gives both copies the same class, so exactly one of each pair is right and
    valid_accuracy is 0.5 at every epoch, whatever the weights (a plateau by construction)."""
    from core.synth import write_synthetic_dataset

    write_synthetic_dataset(folder, train=16, valid=4, test=2, image_size=SIZE, seed=1)
    rows = list(csv.DictReader((folder / "valid.csv").open()))
    twins = []
    for row in rows:
        source = folder / row["Path"]
        twin = source.with_name(f"{source.stem}_twin{source.suffix}")
        shutil.copyfile(source, twin)
        twins.append({"Path": row["Path"].replace(source.name, twin.name), "label": str(1 - int(row["label"]))})
    with (folder / "valid.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Path", "label"])
        writer.writeheader()
        writer.writerows(rows + twins)
    return folder


@pytest.fixture(scope="module")
def plateau_dir(tmp_path_factory) -> Path:
    return write_plateau_folder(tmp_path_factory.mktemp("plateau") / "data")


def plateau_options(data_dir: Path, **overrides) -> dict:
    return {"data_dir": str(data_dir), "epochs": 6, "image_size": SIZE, "batch_size": 8, "device": "cpu", "seed": 2,
            "early_stopping_metric": "valid_accuracy", "early_stopping_patience": 2, **overrides}


def test_cli_train_stops_after_patience_with_best_from_the_best_epoch(plateau_dir: Path, module_home, tmp_path: Path) -> None:
    from leukemia.cli import main

    run_dir = tmp_path / "run"
    outcome = CliRunner().invoke(main, [
        "train", "--data", str(plateau_dir), "--epochs", "6", "--image-size", str(SIZE), "--batch-size", "8",
        "--device", "cpu", "--seed", "2", "--early-stopping-metric", "valid_accuracy",
        "--early-stopping-patience", "2", "--out", str(run_dir),
    ])  # fmt: skip
    assert outcome.exit_code == 0, outcome.output
    reason = "stopped early at epoch 3: valid_accuracy did not improve for 2 epochs (best 0.5 at epoch 1)"
    assert reason in outcome.output.splitlines()
    assert "epoch 4/6" not in outcome.output and "3 epoch(s) in" in outcome.output

    summary = json.loads((run_dir / "metrics.json").read_text())
    assert [row["valid_accuracy"] for row in summary["history"]] == [0.5, 0.5, 0.5]  # the plateau, exactly
    assert summary["stopped_epoch"] == 3 and summary["stop_reason"] == reason
    assert summary["best_epoch"] == 1 and summary["best_metric"] == "valid_accuracy"
    best, last = load_checkpoint(run_dir / "best.pt"), load_checkpoint(run_dir / "last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 3
    assert last["early_stopping"]["stopped_epoch"] == 3 and last["early_stopping"]["bad_epochs"] == 2
    # The weights did change after epoch 1 (lr 1e-3): best.pt really is epoch 1's model, not the last one.
    assert any((best["model"][k].float() != last["model"][k].float()).any() for k in best["model"] if "weight" in k)

    # Resuming a run that stopped early trains nothing more.
    again = train(parse_params("train", plateau_options(plateau_dir)), run_dir, resume=True)
    assert again.epochs_done == 3 and again.stopped_epoch == 3 and again.stop_reason == reason


class StopAfter(TrainingObserver):
    """Asks the run to stop (as a worker shutting down would) once `epochs` epochs are reported."""

    def __init__(self, epochs: int | None = None) -> None:
        self.epochs: list[int] = []
        self.limit = epochs
        self.stopped: tuple[int, str] | None = None

    def on_epoch(self, record: EpochRecord) -> None:
        self.epochs.append(record.epoch)

    def should_stop(self) -> bool:
        return self.limit is not None and len(self.epochs) >= self.limit

    def on_stopped_early(self, epoch: int, reason: str) -> None:
        self.stopped = (epoch, reason)


def test_patience_counts_on_across_a_resume(plateau_dir: Path, module_home, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    params = parse_params("train", plateau_options(plateau_dir, early_stopping_patience=2))
    with pytest.raises(RunStopped):
        train(params, run_dir, observer=StopAfter(2))
    assert load_checkpoint(run_dir / "last.pt")["early_stopping"]["bad_epochs"] == 1  # epoch 2 did not improve
    resumed = StopAfter()
    result = train(params, run_dir, resume=True, observer=resumed)
    # Counted on from last.pt: epoch 3 is the second without improvement. A counter reset by the
    # resume would have taken epoch 3 as a new best and stopped at epoch 5.
    assert result.stopped_epoch == 3 and resumed.epochs == [1, 2, 3] and resumed.stopped is not None
    assert resumed.stopped[0] == 3 and "did not improve for 2 epochs (best 0.5 at epoch 1)" in resumed.stopped[1]
    assert load_checkpoint(run_dir / "best.pt")["epoch"] == 1


def record(epoch: int, accuracy: float | None, loss: float | None) -> EpochRecord:
    return EpochRecord(epoch=epoch, train_loss=1.0, train_accuracy=0.5, valid_loss=loss, valid_accuracy=accuracy,
                       valid_balanced_accuracy=accuracy, valid_f1=accuracy, confusion=None, lr=1e-3, seconds=1.0,
                       images_per_s=1.0)  # fmt: skip


def test_best_follows_the_chosen_metric_and_min_delta() -> None:
    base = {"data_dir": "unused", "epochs": 10}
    by_loss = RunLog.for_params(parse_params("train", {**base, "early_stopping_metric": "valid_loss",
                                                       "early_stopping_patience": 2}))  # fmt: skip
    for epoch, (accuracy, loss) in enumerate([(0.6, 0.9), (0.8, 0.7), (0.9, 0.75), (0.7, 0.5), (0.95, 0.6)], 1):
        by_loss.add(record(epoch, accuracy, loss))
    assert by_loss.best_epoch == 4 and by_loss.best_value == 0.5 and by_loss.best_accuracy == 0.7
    assert by_loss.stopped_epoch is None and by_loss.bad_epochs == 1
    by_loss.add(record(6, 0.99, 0.51))
    assert by_loss.stopped_epoch == 6 and by_loss.stop_reason == (
        "stopped early at epoch 6: valid_loss did not improve for 2 epochs (best 0.5 at epoch 4)")

    # An improvement must exceed min_delta; without early stopping, best is valid_accuracy and the run never stops.
    with_delta = RunLog.for_params(parse_params("train", {**base, "early_stopping_metric": "valid_f1",
                                                          "early_stopping_min_delta": 0.05}))  # fmt: skip
    for epoch, f1 in enumerate([0.5, 0.54, 0.56, 0.57], 1):
        with_delta.add(record(epoch, f1, 1.0))
    assert with_delta.best_epoch == 3 and with_delta.bad_epochs == 1 and with_delta.patience == 3
    plain = RunLog.for_params(parse_params("train", base))
    for epoch in range(1, 10):
        plain.add(record(epoch, 0.5, 1.0))
    assert plain.best_epoch == 1 and plain.stopped_epoch is None
    # Patience running out at the last planned epoch is not an early stop.
    last = RunLog.for_params(parse_params("train", {**base, "epochs": 2, "early_stopping_metric": "valid_f1",
                                                    "early_stopping_patience": 1}))  # fmt: skip
    last.add(record(1, 0.5, 1.0))
    last.add(record(2, 0.5, 1.0))
    assert last.bad_epochs == 1 and last.stopped_epoch is None


@pytest.mark.parametrize(("values", "field", "message"), [
    ({"early_stopping_patience": 2}, "early_stopping_patience", "only applies with early_stopping_metric"),
    ({"early_stopping_min_delta": 0.1}, "early_stopping_min_delta", "only applies with early_stopping_metric"),
    ({"early_stopping_metric": "valid_f1", "valid_split": "none"}, "early_stopping_metric", "needs a validation split"),
    ({"early_stopping_metric": "accuracy"}, "early_stopping_metric", "Input should be 'valid_accuracy'"),
    ({"early_stopping_metric": "valid_f1", "early_stopping_patience": 0}, "early_stopping_patience", ">= 1|greater than"),
    ({"early_stopping_metric": "valid_f1", "early_stopping_min_delta": -1}, "early_stopping_min_delta", "greater than"),
])  # fmt: skip
def test_bad_early_stopping_options_are_one_line_naming_the_field(values: dict, field: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as caught:
        parse_params("train", {"data_dir": "unused", **values})
    assert caught.value.field == field and "\n" not in str(caught.value) and str(caught.value).startswith(field)
    with pytest.raises(UserInputError, match="needs a validation split; set valid_split"):
        parse_params("finetune", {"data_dir": "unused", "early_stopping_metric": "valid_f1"})  # train_all has none


def test_a_folder_without_validation_is_refused_before_training(tmp_path: Path, module_home) -> None:
    from core.synth import write_synthetic_dataset

    folder = tmp_path / "data"
    write_synthetic_dataset(folder, train=8, valid=2, test=2, image_size=SIZE, seed=1)
    (folder / "valid.csv").unlink()
    params = parse_params("train", {"data_dir": str(folder), "image_size": SIZE, "device": "cpu",
                                    "early_stopping_metric": "valid_f1"})  # fmt: skip
    with pytest.raises(UserInputError, match="early_stopping_metric: valid_f1 needs a validation split") as caught:
        train(params, tmp_path / "run")
    assert caught.value.field == "early_stopping_metric" and not (tmp_path / "run" / "last.pt").exists()
