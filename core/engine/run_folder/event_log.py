"""A run folder's TensorBoard event log (layout.EVENT_LOG): every epoch's losses, accuracies,
learning rate and throughput as scalars, so `tensorboard --logdir ARTIFACTS_DIR/jobs` shows and
compares runs, live while they train.

Appended after each epoch's checkpoint; a run that starts or resumes writes it anew from the epochs
its checkpoint holds, so the log holds each epoch once, even after a kill between the two writes.
tensorboardX supplies the format (the Event protobuf and the masked CRC32C of its TFRecord framing):
writing needs neither TensorFlow nor a TensorBoard server. docs/cli.md, "TensorBoard"."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterable
from pathlib import Path

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.proto.summary_pb2 import Summary
from tensorboardX.record_writer import masked_crc32c

from core.common.atomic import open_atomic
from core.engine.progress import EpochRecord
from core.engine.run_folder.layout import EVENT_LOG

FILE_VERSION = "brain.Event:2"  # the first event of every event file, as TensorBoard expects
SCALARS = {  # TensorBoard tag → EpochRecord field; a None field (no validation split) is left out
    "loss/train": "train_loss",
    "loss/valid": "valid_loss",
    "accuracy/train": "train_accuracy",
    "accuracy/valid": "valid_accuracy",
    "balanced_accuracy/valid": "valid_balanced_accuracy",
    "weighted_f1/valid": "valid_f1",
    "roc_auc/valid": "valid_roc_auc",
    "learning_rate": "lr",
    "images_per_s": "images_per_s",
    "epoch_seconds": "seconds",
}


def framed(event: Event) -> bytes:
    """One TFRecord: length, its masked CRC32C, the serialized event, its masked CRC32C."""
    data = event.SerializeToString()
    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def epoch_event(record: EpochRecord) -> Event:
    values = [
        Summary.Value(tag=tag, simple_value=float(value))
        for tag, field in SCALARS.items()
        if (value := getattr(record, field)) is not None
    ]
    return Event(wall_time=time.time(), step=record.epoch, summary=Summary(value=values))


def start_event_log(run_folder: Path, history: Iterable[EpochRecord]) -> None:
    """Write the log anew (atomically) with the epochs done so far: none for a new run."""
    with open_atomic(run_folder / EVENT_LOG, "wb") as file:
        file.write(framed(Event(wall_time=time.time(), file_version=FILE_VERSION)))
        for record in history:
            file.write(framed(epoch_event(record)))


def append_epoch(run_folder: Path, record: EpochRecord) -> None:
    """Add one finished epoch; a reader (TensorBoard) picks it up from where it had read."""
    with (run_folder / EVENT_LOG).open("ab") as file:
        file.write(framed(epoch_event(record)))
