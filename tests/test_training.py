"""Metrics, schedules, class weights, checkpoints, and short CPU training runs: files written,
exact resume after a stop, finetuning, refusing to overwrite a run; one slow run that learns."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch

from core.common.errors import UserInputError
from core.engine.data.layouts import read_split
from core.engine.evaluation.clinical import roc_auc
from core.engine.evaluation.predict import predict_probabilities
from core.engine.evaluation.scores import accuracy, balanced_accuracy, classification_scores, confusion_matrix, weighted_f1
from core.engine.model.checkpoint import load_checkpoint, save_checkpoint
from core.engine.params import FinetuneParams, TrainParams
from core.engine.progress import EpochRecord, RunStopped, TrainingObserver
from core.engine.run_folder.event_log import append_epoch
from core.engine.run_folder.resolver import resolve_checkpoint
from core.engine.training.loop import class_weights, finetune, train
from core.engine.training.schedule import lr_factor
from tests.settings_override import overridden_settings

SIZE = 32
TIMING_FIELDS = {"seconds", "images_per_s"}


# ---------------------------------------------------------------- metrics, by hand


def test_metrics_match_a_hand_count() -> None:
    truth = [0, 0, 0, 1, 1, 1, 1, 1]
    predicted = [0, 1, 0, 1, 1, 0, 1, 1]
    confusion = confusion_matrix(truth, predicted)
    assert confusion == [[2, 1], [1, 4]]  # [[tn, fp], [fn, tp]]
    assert accuracy(confusion) == pytest.approx(6 / 8)
    assert balanced_accuracy(confusion) == pytest.approx((2 / 3 + 4 / 5) / 2)
    # F1 class 0 = 2*2/(2*2+1+1) = 2/3, class 1 = 2*4/(2*4+1+1) = 4/5; weights 3 and 5.
    assert weighted_f1(confusion) == pytest.approx((3 * 2 / 3 + 5 * 4 / 5) / 8)


def test_scores_of_one_sided_predictions() -> None:
    scores = classification_scores([1, 1, 1, 0], [1, 1, 1, 1])
    assert scores["confusion"] == [[0, 1], [0, 3]] and scores["count"] == 4
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["balanced_accuracy"] == pytest.approx(0.5)  # recall 0 for class 0, 1 for class 1
    assert scores["weighted_f1"] == pytest.approx(0.75 * (2 * 3 / (2 * 3 + 1)))  # class 0's F1 is 0
    # A class absent from the truth does not count in the balanced accuracy.
    assert balanced_accuracy(confusion_matrix([1, 1], [1, 0])) == pytest.approx(0.5)


# ---------------------------------------------------------------- schedules, class weights


def factors(**values) -> list[float]:
    params = TrainParams(data_dir="unused", **values)
    factor = lr_factor(params)
    return [factor(index) for index in range(params.epochs)]


def test_step_schedule_defaults_to_half_way_and_warmup_ramps() -> None:
    assert factors(epochs=10) == [1.0] * 5 + [0.1] * 5
    assert factors(epochs=3, lr_step_epoch=2, lr_gamma=0.5) == [1.0, 0.5, 0.5]
    assert factors(epochs=1) == [1.0]
    assert factors(epochs=4, schedule="constant", warmup_epochs=1) == [0.5, 1.0, 1.0, 1.0]
    cosine = factors(epochs=4, schedule="cosine")
    assert cosine[0] == 1.0 and cosine == sorted(cosine, reverse=True) and cosine[-1] > 0
    assert cosine[2] == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 4)))


def test_class_weights() -> None:
    assert class_weights("1.2,1", [0, 1]).tolist() == pytest.approx([1.2, 1.0])
    assert class_weights("none", [0, 1]) is None
    # Three of class 1 per one of class 0: inverse frequency, normalised to mean 1.
    assert class_weights("auto", [0, 1, 1, 1]).tolist() == pytest.approx([1.5, 0.5])
    with pytest.raises(UserInputError, match="class_weights: .* no class 0"):
        class_weights("auto", [1, 1])


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_errors_name_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 20)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path, reason in [
        (tmp_path / "missing.pt", "no such file"),
        (garbage, "unreadable \\(corrupt, truncated"),
        (foreign, "not a checkpoint of this service"),
    ]:
        with pytest.raises(UserInputError, match=f"{path.name}.*{reason}"):
            load_checkpoint(path)
    with pytest.raises(UserInputError, match="has no best.pt"):
        resolve_checkpoint(tmp_path)


def test_one_resolver_for_files_and_run_folders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"x")  # a run stopped between writing last.pt and best.pt
    assert resolve_checkpoint(run, "last") == run / "last.pt"
    with pytest.raises(UserInputError, match="has no best.pt"):  # never silently the other file
        resolve_checkpoint(run, "best")
    (run / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(run, "best") == run / "best.pt"
    assert resolve_checkpoint(run / "last.pt", "best") == run / "last.pt"  # a file is itself
    with pytest.raises(UserInputError, match="checkpoint_choice: 'first'"):
        resolve_checkpoint(run, "first")


def test_checkpoint_save_is_atomic_and_arch_checked(tmp_path: Path) -> None:
    path = tmp_path / "ours.pt"
    checkpoint = {
        "format": 1,
        "arch": "resnet18",
        "num_classes": 2,
        "model": {},
        "mean": [0.5] * 3,
        "std": [0.2] * 3,
        "image_size": 32,
    }
    save_checkpoint(checkpoint, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ours.pt"]  # no temporary file left
    assert load_checkpoint(path, expected_arch="resnet18")["image_size"] == 32
    with pytest.raises(UserInputError, match="ours.pt: architecture resnet18, expected resnet50"):
        load_checkpoint(path, expected_arch="resnet50")


# ---------------------------------------------------------------- training runs


class Recorder(TrainingObserver):
    """Keeps what a run reports; optionally asks to stop once `stop_after` epochs are reported."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.epochs: list[int] = []
        self.records: dict[int, EpochRecord] = {}  # what an idempotent upsert keyed by epoch keeps
        self.batches = 0
        self.stop_after = stop_after
        self.start: tuple[int, int, int] | None = None

    def on_start(self, total_epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
        self.start = (total_epochs, batches_per_epoch, start_epoch)

    def on_batch(self, progress) -> None:
        self.batches += 1

    def on_epoch(self, record: EpochRecord) -> None:
        self.epochs.append(record.epoch)
        self.records[record.epoch] = record

    def should_stop(self) -> bool:
        return self.stop_after is not None and len(self.epochs) >= self.stop_after


def logged_scalars(run_folder: Path) -> list[tuple[int, dict[str, float]]]:
    """The run's TensorBoard event log read as TensorBoard reads it (each record's length and data
    checked against their CRC32C): (step, {tag: value}) per epoch event, in file order."""
    import struct

    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    data, offset, events = (run_folder / "events.out.tfevents.leukemia").read_bytes(), 0, []
    while offset < len(data):
        header = data[offset : offset + 8]
        (length,), (header_crc,) = struct.unpack("<Q", header), struct.unpack("<I", data[offset + 8 : offset + 12])
        body = data[offset + 12 : offset + 12 + length]
        (body_crc,) = struct.unpack("<I", data[offset + 12 + length : offset + 16 + length])
        assert (header_crc, body_crc) == (masked_crc32c(header), masked_crc32c(body))
        events.append(Event.FromString(body))
        offset += 16 + length
    assert events[0].file_version == "brain.Event:2"
    return [(event.step, {value.tag: value.simple_value for value in event.summary.value}) for event in events[1:]]


@pytest.fixture(scope="module")
def module_home(tmp_path_factory):
    """One LEUKEMIA_HOME (image caches) for the module's runs."""
    with overridden_settings(LEUKEMIA_HOME=str(tmp_path_factory.mktemp("home")), CACHE_DIR=None):
        yield


def small_params(data_dir: Path, **overrides) -> TrainParams:
    values = dict(data_dir=str(data_dir), epochs=3, image_size=SIZE, device="cpu", seed=3)
    return TrainParams(**(values | overrides))


@pytest.fixture(scope="module")
def uninterrupted(synth_dir: Path, module_home, tmp_path_factory) -> tuple[Path, Recorder]:
    """A 3-epoch resnet18 run at 32 px, with validation."""
    run_folder = tmp_path_factory.mktemp("runs") / "uninterrupted"
    recorder = Recorder()
    train(small_params(synth_dir), run_folder, observer=recorder)
    return run_folder, recorder


def test_run_writes_checkpoints_metrics_and_plots(uninterrupted, synth_dir: Path) -> None:
    run_folder, recorder = uninterrupted
    assert recorder.epochs == [1, 2, 3] and recorder.start == (3, 6, 1) and recorder.batches == 18
    rows = list(csv.DictReader((run_folder / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [float(r["lr"]) for r in rows] == pytest.approx([1e-3, 1e-3, 1e-4])  # step at ceil(3/2)+1
    history = json.loads((run_folder / "metrics.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for row in history:
        assert sum(map(sum, row["confusion"])) == 32  # the whole valid split
        assert row["valid_accuracy"] == pytest.approx((row["confusion"][0][0] + row["confusion"][1][1]) / 32)
    for name in ("loss.png", "accuracy.png", "confusion.png"):
        assert (run_folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    logged = logged_scalars(run_folder)  # the TensorBoard event log holds what metrics.json holds
    assert [step for step, _ in logged] == [1, 2, 3]
    for (_, scalars), row in zip(logged, history):
        assert scalars["loss/train"] == pytest.approx(row["train_loss"]) and scalars["learning_rate"] == pytest.approx(row["lr"])
        assert scalars["accuracy/valid"] == pytest.approx(row["valid_accuracy"])
        assert scalars["roc_auc/valid"] == pytest.approx(row["valid_roc_auc"])
    last = load_checkpoint(run_folder / "last.pt", expected_arch="resnet18")
    # Each epoch's ROC-AUC is that of the epoch's model on the valid split: the last one's, re-scored.
    valid = read_split(synth_dir, "valid")
    scores = predict_probabilities(run_folder / "last.pt", valid, device=torch.device("cpu"))
    assert history[-1]["valid_roc_auc"] == pytest.approx(roc_auc([v.label for v in valid], scores), abs=1e-6)
    assert [r["valid_roc_auc"] for r in rows] and all(0 <= float(r["valid_roc_auc"]) <= 1 for r in rows)

    best = load_checkpoint(run_folder / "best.pt")
    assert last["epoch"] == 3 and last["image_size"] == SIZE and len(last["mean"]) == 3
    best_epoch = max(history, key=lambda h: h["valid_accuracy"])["epoch"]  # the first of equals
    assert best["epoch"] == best_epoch and best["best_accuracy"] == history[best_epoch - 1]["valid_accuracy"]
    # best.pt is for evaluate/predict/finetune: no optimizer, schedule or RNG state; last.pt keeps them to resume.
    assert not {"optimizer", "scheduler", "scaler", "rng"} & set(best) and {"optimizer", "scheduler", "rng"} <= set(last)
    assert {"model", "mean", "std", "arch", "image_size", "params", "history"} <= set(best)
    assert (run_folder / "best.pt").stat().st_size < 0.5 * (run_folder / "last.pt").stat().st_size  # Adam: 2 moments per weight
    # Denormals were flushed for the run only: the flag is process-wide (hypothesis, a worker's next job).
    assert torch.tensor(1e-40, dtype=torch.float32).item() != 0.0


def test_resume_after_a_stop_matches_the_uninterrupted_run(synth_dir: Path, uninterrupted, tmp_path: Path) -> None:
    run_folder = tmp_path / "interrupted"
    stopping = Recorder(stop_after=1)
    with pytest.raises(RunStopped):
        train(small_params(synth_dir), run_folder, observer=stopping)
    assert stopping.epochs == [1] and load_checkpoint(run_folder / "last.pt")["epoch"] == 1
    append_epoch(run_folder, stopping.records[1])  # as if the kill came after a second write of epoch 1's event

    resumed = Recorder()
    # The params passed are ignored on resume: the run's own come from last.pt.
    result = train(small_params(synth_dir, seed=99), run_folder, resume=True, observer=resumed)
    assert resumed.start == (3, 6, 2)
    assert resumed.epochs == [1, 2, 3]  # epoch 1 re-reported once (upsert), 2 and 3 trained
    assert [r.epoch for r in result.history] == [1, 2, 3]
    rows = list(csv.DictReader((run_folder / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert [step for step, _ in logged_scalars(run_folder)] == [1, 2, 3]  # written anew at the resume: each epoch once

    reference = uninterrupted[1].records
    for epoch, record in resumed.records.items():
        for name, value in vars(record).items():
            if name == "confusion":
                assert value == reference[epoch].confusion, epoch
            elif name not in TIMING_FIELDS:
                assert value == pytest.approx(getattr(reference[epoch], name), rel=1e-6, abs=1e-7), (epoch, name)
    ours = load_checkpoint(run_folder / "last.pt")["model"]
    theirs = load_checkpoint(uninterrupted[0] / "last.pt")["model"]
    for key, tensor in theirs.items():
        assert torch.allclose(ours[key].float(), tensor.float(), atol=1e-6), key


def test_a_finished_run_is_not_overwritten(synth_dir: Path, uninterrupted) -> None:
    with pytest.raises(UserInputError, match="already holds a run"):
        train(small_params(synth_dir), uninterrupted[0])


def test_finetune_from_a_run_folder(synth_dir: Path, uninterrupted, tmp_path: Path) -> None:
    source = uninterrupted[0]
    params = FinetuneParams(data_dir=str(synth_dir), checkpoint=str(source), epochs=1, device="cpu")
    recorder = Recorder()
    result = finetune(params, tmp_path / "finetuned", observer=recorder)
    record = result.history[0]
    assert recorder.start == (1, 8, 1)  # train_all: 96 + 32 images in batches of 16
    assert record.valid_accuracy is None and record.confusion is None and record.lr == pytest.approx(1e-4)
    checkpoint = load_checkpoint(result.last_path)
    source_checkpoint = load_checkpoint(source / "best.pt")
    assert checkpoint["arch"] == "resnet18" and checkpoint["image_size"] == SIZE
    assert checkpoint["mean"] == source_checkpoint["mean"] and checkpoint["params"]["checkpoint"].endswith("best.pt")
    assert result.best_path.is_file()  # no validation split: best is last
    with pytest.raises(UserInputError, match="architecture resnet18, expected resnet50"):
        finetune(params.model_copy(update={"arch": "resnet50"}), tmp_path / "other")


@pytest.mark.slow
def test_training_learns_the_synthetic_classes(module_home, tmp_path: Path) -> None:
    """64 px, 160 training images, 4 epochs: validation accuracy clearly above the majority class."""
    from core.engine.data.synth import write_synthetic_dataset

    data_dir = tmp_path / "data"
    write_synthetic_dataset(data_dir, train=160, valid=64, test=8, image_size=64, seed=5)
    params = TrainParams(data_dir=str(data_dir), epochs=4, image_size=64, device="cpu", seed=0, lr=1e-3)
    result = train(params, tmp_path / "run")
    labels = [int(r["label"]) for r in csv.DictReader((data_dir / "valid.csv").open())]
    majority = max(labels.count(0), labels.count(1)) / len(labels)
    best = max(r.valid_accuracy for r in result.history)
    assert best >= majority + 0.15, (best, majority, [r.valid_accuracy for r in result.history])
