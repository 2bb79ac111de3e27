"""Creating the rows a job or sweep request asks for (core.service.jobs.request): parameters validated by the
one schema, the parent checked, the caps (core.service.quotas) applied, options and tags stored; the caller
commits, then sends the ids (core.service.submissions.submit, worker.dispatch.submit)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.common.errors import UserInputError
from core.common.text import check_printable
from core.engine.data.layouts import read_split
from core.engine.data.splits import with_folder_image_size
from core.engine.params import parse_params
from core.service import quotas, retention
from core.service.job_options import JobOptions, extra_options
from core.service.jobs.request import JobRequest, Origin, SweepRequest
from core.service.records import (
    MAX_ID,
    MODEL_KINDS,
    PRIORITIES,
    Artifact,
    Job,
    JobStatus,
    JobTag,
    Sweep,
    SweepTag,
    utcnow,
)
from core.service.settings import Settings, get_settings

DEFAULT_QUEUES = {"train": "gpu", "finetune": "gpu", "evaluate": "cpu", "predict": "cpu"}


# Kinds that need a trained model: from a parent job or an explicit checkpoint path.


TRAINING_KINDS = ("train", "finetune")  # kinds whose memory and compute are estimated (core.service.quotas)


NEEDS_CHECKPOINT = ("finetune", "evaluate", "predict")


def _check_parent(session: Session, kind: str, parent_id: int | None, params: dict[str, Any], default_policy: str) -> None:
    """A parent must exist and have a checkpoint; a finetune/evaluate/predict needs a parent or a path.
    default_policy: the RETENTION setting, which tells whether the parent's last.pt was removed on purpose."""
    if parent_id is None:
        has_path = bool(params.get("checkpoint") or params.get("checkpoints"))
        if kind in NEEDS_CHECKPOINT and not has_path:
            field = "checkpoints" if kind == "predict" else "checkpoint"
            raise UserInputError(f"parent: a {kind} job needs a parent job id or a {field} path", field="parent_id")
        return
    if kind == "train":
        raise UserInputError("parent: a train job starts from scratch; use finetune to continue a job", field="parent_id")
    # FOR KEY SHARE until the caller commits: a delete of the parent (core.service.deletion locks it FOR
    # UPDATE) waits for this job's row and then refuses, or ran first and the parent is not found here.
    parent = (
        session.get(Job, parent_id, with_for_update={"read": True, "key_share": True}, populate_existing=True)
        if 1 <= parent_id <= MAX_ID
        else None
    )
    if parent is None:
        raise UserInputError(f"parent: job {parent_id} not found", field="parent_id")
    if parent.kind not in MODEL_KINDS:
        raise UserInputError(f"parent: job {parent_id} is a {parent.kind} job and has no model checkpoint", field="parent_id")
    if parent.status != JobStatus.succeeded and not _has_checkpoint(session, parent_id):
        raise UserInputError(f"parent: job {parent_id} is {parent.status} and has no checkpoint yet", field="parent_id")
    if params.get("checkpoint_choice") == "last" and retention.last_removed(parent, default_policy):
        raise UserInputError(retention.missing_checkpoint_message(parent, "last", default_policy), field="parent_id")


def _has_checkpoint(session: Session, job_id: int) -> bool:
    found = session.scalar(select(Artifact.id).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint").limit(1))
    return found is not None


def _validated(kind: str, params: dict[str, Any], settings: Settings, strict: bool = False) -> dict[str, Any]:
    """The params dict as the schema normalises it (defaults filled in), or a UserInputError;
    a training job must also fit the memory cap (core.service.quotas)."""
    parsed = parse_params(kind, params, strict=strict)
    if kind in TRAINING_KINDS and parsed.arch is not None:
        quotas.require_memory_within_cap(parsed.arch, parsed.image_size, parsed.batch_size, settings)
    return parsed.model_dump(mode="json")


def _sweep_gpu_hours(kind: str, points: list[dict[str, Any]], settings: Settings) -> float | None:
    """Estimated GPU-hours of a sweep's training jobs; None when unknown (a size taken from a
    checkpoint, or a data folder that cannot be read here: the worker reports that one)."""
    if kind not in TRAINING_KINDS:
        return None
    images: dict[tuple[str, str], int] = {}
    total = 0.0
    for point in points:
        if point.get("arch") is None or point.get("image_size") is None:
            return None
        key = (point["data_dir"], point["split"])
        if key not in images:
            try:
                images[key] = len(read_split(Path(key[0]), key[1]))
            except UserInputError:
                return None
        total += quotas.training_gpu_hours(
            point["arch"], point["image_size"], point["epochs"], images[key], settings.gpu_train_tflops
        )
    return total


def create_job(
    session: Session,
    request: JobRequest,
    *,
    submitted_by: int | None = None,
    origin: Origin = Origin.CLI,
    settings: Settings | None = None,
) -> Job:
    """Validate and insert the queued job a request asks for; the caller commits, then sends its id to the broker
    (core.service.submissions.submit and worker.dispatch.submit do both for every edge).

    submitted_by: the user's id (None: the CLI); origin: how its params are read and where its files may be
    (core.service.jobs.request.Origin); settings: the edge's (its caps, max_attempts, RETENTION), which
    submissions.submit passes; left out (a test, a script), this process's."""
    kind, settings = request.kind, settings or get_settings()
    dumped = _validated(kind, with_folder_image_size(kind, request.params), settings, origin.strict)
    _check_parent(session, kind, request.parent_id, dumped, settings.retention)
    queue = check_printable((request.queue or DEFAULT_QUEUES[kind]).strip(), "queue")
    if not queue or "," in queue:
        raise UserInputError(f"queue: {queue!r} is not a queue name", field="queue")
    job = Job(
        kind=kind,
        origin=origin.stored,
        status=JobStatus.queued,
        params=dumped,
        parent_id=request.parent_id,
        data_dir=dumped.get("data_dir", ""),
        queue=queue,
        attempts=0,
        max_attempts=settings.max_attempts,
        cancel_requested=False,
        progress=0.0,
        created_at=utcnow(),
        submitted_by=submitted_by,
    )
    session.add(job)
    session.flush()
    apply_options(session, job, request.options)
    return job


def apply_options(session: Session, target: Job | Sweep, options: JobOptions) -> None:
    """Store a job's or sweep's options: priority, notes, retention and tags in their columns and rows (tags
    replace the old ones), any other option in extra_options (core.service.job_options.COLUMN_OPTIONS)."""
    target.priority = PRIORITIES[options.priority]
    target.description = options.description
    target.retention = options.retention
    target.extra_options = extra_options(options) or None
    tag_table, key = (JobTag, JobTag.job_id) if isinstance(target, Job) else (SweepTag, SweepTag.sweep_id)
    session.execute(delete(tag_table).where(key == target.id))
    session.add_all(tag_table(**{key.key: target.id, "tag": tag}) for tag in options.tags)
    session.flush()


def parse_grid(items: list[str]) -> dict[str, list[str]]:
    """`["arch=resnet18,resnet50", "lr=0.001,0.0003"]` → a grid dict (values are validated per point)."""
    grid: dict[str, list[str]] = {}
    for item in items:
        name, sep, values = item.partition("=")
        name = name.strip().replace("-", "_")
        points = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not name or not points:
            raise UserInputError(f"grid: {item!r} must look like field=value1,value2")
        grid[name] = points
    return grid


def create_sweep(
    session: Session,
    request: SweepRequest,
    *,
    submitted_by: int | None = None,
    origin: Origin = Origin.CLI,
    settings: Settings | None = None,
) -> tuple[Sweep, list[Job]]:
    """One job per point of the grid's cartesian product; every point is validated before any insert.
    The sweep and each of its jobs carry the same options (priority, notes, tags, retention...);
    early_stopping is the sweep's median stopping rule (core.engine.training.early_stopping), train/finetune only.
    settings: as create_job takes them."""
    kind, grid, early_stopping = request.kind, request.grid, request.early_stopping
    settings = settings or get_settings()
    if request.name is not None:
        check_printable(request.name, "name")
    if early_stopping is not None and kind not in TRAINING_KINDS:
        raise UserInputError(
            f"early_stopping: {kind} sweeps have no epochs to stop; only train and finetune sweeps take it",
            field="early_stopping",
        )
    fields = list(grid)
    quotas.require_sweep_within_caps(math.prod(len(grid[f]) for f in fields), None, settings)
    points = [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]
    validated = []
    for point in points:
        try:
            validated.append(
                _validated(kind, with_folder_image_size(kind, {**request.base_params, **point}), settings, origin.strict)
            )
        except UserInputError as error:
            described = ", ".join(f"{k}={v}" for k, v in point.items())
            raise UserInputError(f"grid point {described}: {error}", field="grid") from None
    quotas.require_sweep_within_caps(len(points), _sweep_gpu_hours(kind, validated, settings), settings)
    sweep = Sweep(
        name=request.name or " x ".join(fields),
        kind=kind,
        base_params=request.base_params,
        grid=grid,
        created_at=utcnow(),
        submitted_by=submitted_by,
        early_stopping=None if early_stopping is None else early_stopping.model_dump(),
    )
    session.add(sweep)
    session.flush()
    apply_options(session, sweep, request.options)
    jobs = []
    for point in points:
        job = create_job(session, request.point(point), submitted_by=submitted_by, origin=origin, settings=settings)
        job.sweep_id = sweep.id
        jobs.append(job)
    session.flush()
    return sweep, jobs
