"""Training and finetuning: one epoch loop that reports through a TrainingObserver, saves last.pt before it
reports an epoch (exactly-once epochs) and can resume where it stopped: `train`, `finetune` and
`resume_run` each return a RunResult (history, best and last paths; `stopped_epoch`/`stop_reason` when
early stopping ended the run: docs/queue.md, "Early stopping"). A run folder holds last.pt, best.pt,
metrics.csv, metrics.json, loss.png, accuracy.png and (with a validation split) confusion.png. The schedule
(core.engine.training.schedule), the resumable state (core.engine.training.run_state) and the metrics files
(core.engine.run_folder.history_files) have rooms of their own; docs/architecture.md has the contracts."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from core.common.errors import UserInputError
from core.engine.data.layouts import Sample
from core.engine.data.splits import training_splits
from core.engine.evaluation.clinical import roc_auc
from core.engine.evaluation.scores import classification_scores
from core.engine.inputs.pipeline import InputPipeline, compute_mean_std, flush_denormals_on_cpu, resolve_device
from core.engine.model.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint, without_resume_state
from core.engine.model.limits import require_fits_device
from core.engine.model.resnet import build_model
from core.engine.params import FinetuneParams, TrainParams, class_weight_values, parse_params
from core.engine.progress import BatchProgress, EpochRecord, RunStopped, TrainingObserver
from core.engine.run_folder.event_log import append_epoch, start_event_log
from core.engine.run_folder.history_files import write_metrics
from core.engine.run_folder.layout import BEST_CHECKPOINT, LAST_CHECKPOINT
from core.engine.run_folder.resolver import resolve_checkpoint
from core.engine.settings import engine_settings
from core.engine.training.run_state import RunLog, StartState, capture_checkpoint, floats, restore_checkpoint, seed_everything
from core.engine.training.schedule import build_optimizer, build_scheduler


@dataclass
class RunResult:
    run_folder: Path
    epochs_done: int
    history: list[EpochRecord]
    best_path: Path
    last_path: Path
    stopped_epoch: int | None = None  # the epoch an early stop ended the run at
    stop_reason: str | None = None


# ---------------------------------------------------------------- public entry points


def train(params: TrainParams, run_folder: Path, *, resume: bool = False, observer: TrainingObserver | None = None) -> RunResult:
    """Train from scratch into run_folder; with resume=True and a last.pt there, continue that run instead."""
    if resume and _holds_run(run_folder):
        return resume_run(run_folder, observer=observer)
    _refuse_existing_run(Path(run_folder))
    seed_everything(params.seed)
    device, (train_samples, valid_samples) = _device_and_splits(params)
    cache_dir = engine_settings().resolved_cache_dir
    mean, std = compute_mean_std(train_samples, params.image_size, cache_dir=cache_dir, num_workers=params.num_workers)
    start = StartState(model=build_model(params.arch), mean=floats(mean), std=floats(std))
    return _fit(params, Path(run_folder), device, train_samples, valid_samples, start, observer)


def finetune(
    params: FinetuneParams, run_folder: Path, *, resume: bool = False, observer: TrainingObserver | None = None
) -> RunResult:
    """Continue training a checkpoint's weights (its arch, mean/std, image size) with a fresh optimizer."""
    if resume and _holds_run(run_folder):
        return resume_run(run_folder, observer=observer)
    _refuse_existing_run(Path(run_folder))
    if not params.checkpoint.strip():
        raise UserInputError("checkpoint: a run folder or .pt file to finetune from is required", field="checkpoint")
    source = resolve_checkpoint(params.checkpoint, params.checkpoint_choice)
    checkpoint = load_checkpoint(source, expected_arch=params.arch)
    image_size = int(checkpoint["image_size"])
    if params.image_size is not None and params.image_size != image_size:
        raise UserInputError(
            f"image_size: {params.image_size} differs from the checkpoint's {image_size} ({source})", field="image_size"
        )
    params = params.model_copy(update={"arch": checkpoint["arch"], "image_size": image_size, "checkpoint": str(source)})
    seed_everything(params.seed)
    device, (train_samples, valid_samples) = _device_and_splits(params)
    model = model_from_checkpoint(checkpoint, source)
    start = StartState(model=model, mean=floats(checkpoint["mean"]), std=floats(checkpoint["std"]))
    return _fit(params, Path(run_folder), device, train_samples, valid_samples, start, observer)


def resume_run(run_folder: Path, *, observer: TrainingObserver | None = None) -> RunResult:
    """Continue the run in run_folder from its last.pt with the params stored there (train or finetune)."""
    run_folder = Path(run_folder)
    last_path = run_folder / LAST_CHECKPOINT
    if not last_path.is_file():
        raise UserInputError(f"resume: {run_folder} has no {LAST_CHECKPOINT} to resume from", field="resume")
    checkpoint = load_checkpoint(last_path)
    stored = dict(checkpoint.get("params") or {})
    params = parse_params(stored.pop("kind", "train"), stored)
    device, (train_samples, valid_samples) = _device_and_splits(params)
    start = StartState(
        model=model_from_checkpoint(checkpoint, last_path),
        mean=floats(checkpoint["mean"]),
        std=floats(checkpoint["std"]),
        checkpoint=checkpoint,
    )
    return _fit(params, run_folder, device, train_samples, valid_samples, start, observer)


# ---------------------------------------------------------------- building blocks


def class_weights(spec: str, labels: list[int]) -> Tensor | None:
    """Loss weights per class: explicit "W0,W1", "auto" (inverse frequency, mean 1) or None for "none"."""
    explicit = class_weight_values(spec)
    if explicit is not None:
        return torch.tensor(explicit, dtype=torch.float32)
    if spec == "none":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=2)[:2]
    if (counts == 0).any():
        missing = int(np.flatnonzero(counts == 0)[0])
        raise UserInputError(
            f"class_weights: auto needs both classes, but the training split has no class {missing}", field="class_weights"
        )
    inverse = 1.0 / counts
    return torch.tensor(inverse / inverse.mean(), dtype=torch.float32)


def _fit(
    params: TrainParams,
    run_folder: Path,
    device: torch.device,
    train_samples: list[Sample],
    valid_samples: list[Sample] | None,
    start: StartState,
    observer: TrainingObserver | None,
) -> RunResult:
    """The epoch loop shared by train, finetune and resume."""
    observer = observer or TrainingObserver()
    use_amp = params.amp and device.type == "cuda"
    with flush_denormals_on_cpu(device):
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one input size per run: pick the fastest convolutions once
        model = start.model.to(device)
        if use_amp:
            model = model.to(memory_format=torch.channels_last)
        forward = torch.compile(model) if params.compile else model
        weights = class_weights(params.class_weights, [s.label for s in train_samples])
        criterion = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
        optimizer = build_optimizer(params, model)
        scheduler = build_scheduler(params, optimizer)
        log = RunLog.for_params(params)
        start_epoch = 1
        if start.checkpoint is not None:
            start_epoch = restore_checkpoint(start.checkpoint, optimizer, scheduler, log) + 1

        train_batches, valid_batches = _pipelines(params, train_samples, valid_samples, start, device, use_amp)

        run_folder.mkdir(parents=True, exist_ok=True)
        start_event_log(run_folder, log.history)  # anew: a resumed run's log then holds each epoch once
        observer.on_start(params.epochs, len(train_batches), start_epoch)
        for record in log.history:  # exactly-once: the observer upserts epochs it may already hold
            observer.on_epoch(record)
        for epoch in range(start_epoch, params.epochs + 1):
            if log.stopped_epoch is not None:  # a resumed run that had stopped early: nothing left to train
                break
            record = _run_epoch(epoch, params, forward, criterion, optimizer, train_batches, valid_batches, observer, use_amp)
            scheduler.step()
            log.add(record)  # may stop the run (patience)
            if log.stopped_epoch is None and epoch < params.epochs:
                reason = observer.early_stop_reason(record)
                if reason:
                    log.stop(epoch, reason)
            checkpoint = capture_checkpoint(params, model, optimizer, scheduler, epoch, start, log)
            _save_epoch(run_folder, checkpoint, params, log)
            observer.on_checkpoint(run_folder, checkpoint)  # e.g. a job's epoch_XXX.pt (core.service.retention)
            observer.on_epoch(record)  # only now: last.pt already holds this epoch
        if log.stopped_epoch is not None and log.stop_reason is not None:
            observer.on_stopped_early(log.stopped_epoch, log.stop_reason)
        return RunResult(
            run_folder,
            len(log.history),
            log.history,
            run_folder / BEST_CHECKPOINT,
            run_folder / LAST_CHECKPOINT,
            log.stopped_epoch,
            log.stop_reason,
        )


def _pipelines(
    params: TrainParams,
    train_samples: list[Sample],
    valid_samples: list[Sample] | None,
    start: StartState,
    device: torch.device,
    channels_last: bool,
) -> tuple[InputPipeline, InputPipeline | None]:
    """Shuffled, augmented training batches and, with a validation split, plain validation batches."""
    options = dict(
        image_size=params.image_size,
        batch_size=params.batch_size,
        mean=start.mean,
        std=start.std,
        device=device,
        seed=params.seed,
        cache_dir=engine_settings().resolved_cache_dir,
        num_workers=params.num_workers,
        channels_last=channels_last,
    )
    # A last batch of one image breaks BatchNorm at small sizes (1x1 maps): drop it. On a GPU drop
    # any short last batch (shuffled, so another remainder each epoch): each new batch shape costs
    # a cuDNN search per layer; for the same reason validation pads its last batch there.
    on_gpu = device.type == "cuda"
    remainder = len(train_samples) % params.batch_size
    drop_last = remainder == 1 or (on_gpu and len(train_samples) > params.batch_size)
    train_batches = InputPipeline(train_samples, augment=params.augment, shuffle=True, drop_last=drop_last, **options)
    if not valid_samples:
        return train_batches, None
    return train_batches, InputPipeline(valid_samples, augment=False, shuffle=False, pad_last_batch=on_gpu, **options)


def _save_epoch(run_folder: Path, checkpoint: dict[str, Any], params: TrainParams, log: RunLog) -> None:
    """last.pt, best.pt when this epoch is the best, metrics.csv/json, the plots and the event log, in that order."""
    from core.engine.evaluation.plots import plot_history  # matplotlib: loaded when a run first draws, not on import

    save_checkpoint(checkpoint, run_folder / LAST_CHECKPOINT)
    if log.best_epoch == checkpoint["epoch"]:
        save_checkpoint(without_resume_state(checkpoint), run_folder / BEST_CHECKPOINT)
    write_metrics(
        run_folder,
        params,
        log.history,
        log.best_epoch,
        best_metric=log.metric,
        stopped_epoch=log.stopped_epoch,
        stop_reason=log.stop_reason,
    )
    plot_history([r.model_dump() for r in log.history], run_folder, log.best_epoch)
    append_epoch(run_folder, log.history[-1])


def _run_epoch(
    epoch: int,
    params: TrainParams,
    forward: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    train_batches: InputPipeline,
    valid_batches: InputPipeline | None,
    observer: TrainingObserver,
    use_amp: bool,
) -> EpochRecord:
    """Train one epoch, then score the validation split."""
    started = time.perf_counter()
    lr = optimizer.param_groups[0]["lr"]
    train_loss, train_accuracy, images_per_s = _train_one_epoch(
        epoch, params.epochs, forward, criterion, optimizer, train_batches, observer, use_amp
    )
    valid: dict[str, Any] = {}
    if valid_batches is not None:
        valid = _evaluate(forward, criterion, valid_batches, observer, use_amp, epoch - 1)
    return EpochRecord(
        epoch=epoch,
        train_loss=train_loss,
        train_accuracy=train_accuracy,
        valid_loss=valid.get("loss"),
        valid_accuracy=valid.get("accuracy"),
        valid_balanced_accuracy=valid.get("balanced_accuracy"),
        valid_f1=valid.get("weighted_f1"),
        confusion=valid.get("confusion"),
        valid_roc_auc=valid.get("roc_auc"),
        lr=lr,
        seconds=time.perf_counter() - started,
        images_per_s=images_per_s,
    )


def _train_one_epoch(
    epoch: int,
    total_epochs: int,
    forward: nn.Module,
    criterion: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: InputPipeline,
    observer: TrainingObserver,
    use_amp: bool,
) -> tuple[float, float, float]:
    """Mean loss, accuracy and images/s of one pass over the training split."""
    forward.train()
    batches.set_epoch(epoch)
    # Sums stay on the device: a .item() per batch would make the CPU wait for the GPU.
    loss_sum = torch.zeros((), device=batches.device)
    correct = torch.zeros((), dtype=torch.int64, device=batches.device)
    divergence = _Divergence(epoch, len(batches), batches.device)
    seen = 0
    started = time.perf_counter()
    for index, batch in enumerate(batches, start=1):
        if observer.should_stop():
            raise RunStopped(f"training stopped on request after {epoch - 1} completed epoch(s)")
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
            logits = forward(batch.images)
            loss = criterion(logits.float(), batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        divergence.watch(index, loss.detach())
        count = batch.labels.numel()
        loss_sum += loss.detach() * count
        correct += (logits.argmax(dim=1) == batch.labels).sum()
        seen += count
        elapsed = time.perf_counter() - started
        batches_left = (len(batches) - index) + (total_epochs - epoch) * len(batches)
        observer.on_batch(BatchProgress(epoch, index, len(batches), seen / elapsed, elapsed / index * batches_left))
    if seen == 0:
        raise UserInputError("training split: no batch to train on (fewer images than one batch?)")
    divergence.check()
    return loss_sum.item() / seen, correct.item() / seen, seen / (time.perf_counter() - started)


NONFINITE_CHECK_EVERY = 50  # batches between looks at the device-side divergence flag (one sync each)


def _diverged(split: str, loss: float, epoch: int, batch: int) -> str:
    return (
        f"{split} loss is not finite ({loss}) at epoch {epoch}, batch {batch}: the run diverged and was "
        "stopped; lower lr or check class_weights"
    )


class _Divergence:
    """Remembers the first training batch whose loss is NaN or infinite, on the device (no sync per
    batch), and fails the run when it looks: every NONFINITE_CHECK_EVERY batches and at the epoch's end,
    before last.pt could keep the broken weights."""

    def __init__(self, epoch: int, batches: int, device: torch.device) -> None:
        self.epoch, self.batches = epoch, batches
        self.first_batch = torch.zeros((), dtype=torch.int64, device=device)
        self.first_loss = torch.zeros((), device=device)

    def watch(self, index: int, loss: Tensor) -> None:
        newly_bad = ~torch.isfinite(loss) & (self.first_batch == 0)
        self.first_batch.masked_fill_(newly_bad, index)
        self.first_loss = torch.where(newly_bad, loss.float(), self.first_loss)
        if index % NONFINITE_CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        batch = int(self.first_batch.item())
        if batch:
            raise UserInputError(_diverged("train", float(self.first_loss.item()), self.epoch, batch))


def _evaluate(
    forward: nn.Module,
    criterion: nn.Module,
    batches: InputPipeline,
    observer: TrainingObserver,
    use_amp: bool,
    completed_epochs: int,
) -> dict[str, Any]:
    """Loss and classification metrics on a labelled split, in eval mode."""
    forward.eval()
    loss_sum, predictions, scores, truth = 0.0, [], [], []
    with torch.inference_mode():
        for index, batch in enumerate(batches, start=1):
            if observer.should_stop():
                raise RunStopped(f"training stopped on request after {completed_epochs} completed epoch(s)")
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=use_amp):
                logits = batch.real(forward(batch.images)).float()
            loss = criterion(logits, batch.labels).item()
            if not math.isfinite(loss):
                raise UserInputError(_diverged("valid", loss, completed_epochs + 1, index))
            loss_sum += loss * batch.labels.numel()
            predictions.append(logits.argmax(dim=1).cpu())
            scores.append(torch.softmax(logits, dim=1)[:, 1].cpu())
            truth.append(batch.labels.cpu())
    labels = torch.cat(truth).numpy()
    metrics = classification_scores(labels, torch.cat(predictions).numpy())
    metrics["loss"] = loss_sum / max(1, metrics["count"])
    metrics["roc_auc"] = roc_auc(labels, torch.cat(scores).numpy())  # cheap: one sort of the split's scores
    return metrics


# ---------------------------------------------------------------- state, files


def _holds_run(run_folder: Path) -> bool:
    return (Path(run_folder) / LAST_CHECKPOINT).is_file()


def _device_and_splits(params: TrainParams) -> tuple[torch.device, tuple[list[Sample], list[Sample] | None]]:
    """The device, checked to hold this model, size and batch before any image is read; then the splits."""
    device = resolve_device(params.device)
    require_fits_device(params.arch, params.image_size, params.batch_size, device)
    return device, _read_splits(params)


def _read_splits(params: TrainParams) -> tuple[list[Sample], list[Sample] | None]:
    """The training split and the validation split (or None), as named in the parameters."""
    train_samples, valid_samples = training_splits(params.data_dir, params.split, params.valid_split, params.seed)
    if params.early_stopping_metric is not None and not valid_samples:
        raise UserInputError(
            f"early_stopping_metric: {params.early_stopping_metric} needs a validation split, and {params.data_dir} "
            f"has none for split {params.split}; set valid_split",
            field="early_stopping_metric",
        )
    return train_samples, valid_samples


def _refuse_existing_run(run_folder: Path) -> None:
    """Never overwrite a run by accident: a folder holding last.pt needs --resume or another --out."""
    if (run_folder / LAST_CHECKPOINT).exists():
        raise UserInputError(
            f"run folder {run_folder} already holds a run ({LAST_CHECKPOINT}); resume it or choose another output folder"
        )
