"""The job service: create, claim (lease), heartbeat, record, finish, cancel, retry, requeue.

Every function takes the session as a keyword and leaves commit to the caller
(`with get_sessionmaker().begin() as session:`). A job row is claimed by one atomic
conditional UPDATE, which is what makes a twice-delivered message run once."""

from __future__ import annotations

import hashlib
import itertools
import math
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from core.service import quotas

from core.service import retention, webhooks
from core.engine.data import read_split
from core.service.sweep_stopping import MedianStopRule
from core.common.errors import StateConflict, UserInputError
from core.service.job_options import JobOptions, check_tag
from core.common.text import check_printable
from core.engine.params import parse_params
from core.engine.progress import EpochRecord
from core.service.records import (
    ARTIFACT_KINDS,
    FINISHED_STATUSES,
    JOB_KINDS,
    JOB_ORIGINS,
    JOB_STATUSES,
    MODEL_KINDS,
    PRIORITIES,
    PRIORITY_NAMES,
    RETRYABLE_STATUSES,
    Artifact,
    EpochMetric,
    Job,
    JobTag,
    Sweep,
    SweepTag,
    WorkerRecord,
    utcnow,
)
from core.engine.run_folder import checkpoint_names, resolve_checkpoint
from core.service.run_dirs import job_run_dir
from core.service.settings import get_settings
from core.engine.splits import with_folder_image_size

DEFAULT_QUEUES = {"train": "gpu", "finetune": "gpu", "evaluate": "cpu", "predict": "cpu"}
# Kinds that need a trained model: from a parent job or an explicit checkpoint path.
MAX_ID = 2**31 - 1  # ids are INTEGER columns, 32-bit on PostgreSQL: a larger number names no row (and overflows the column)
TRAINING_KINDS = ("train", "finetune")  # kinds whose memory and compute are estimated (core.service.quotas)
NEEDS_CHECKPOINT = ("finetune", "evaluate", "predict")
LATE_CANCEL = "cancel arrived after the last batch: the run had finished (its checkpoints are kept)"
PROGRESS_FIELDS = ("progress", "epoch", "epochs_total", "images_per_s", "eta_s", "log_tail", "best_valid_accuracy")


# --- creating jobs ---------------------------------------------------------------------


def _check_parent(session: Session, kind: str, parent_id: int | None, params: dict[str, Any]) -> None:
    """A parent must exist and have a checkpoint; a finetune/evaluate/predict needs a parent or a path."""
    if parent_id is None:
        has_path = bool(params.get("checkpoint") or params.get("checkpoints"))
        if kind in NEEDS_CHECKPOINT and not has_path:
            field = "checkpoints" if kind == "predict" else "checkpoint"
            raise UserInputError(f"parent: a {kind} job needs a parent job id or a {field} path", field="parent_id")
        return
    if kind == "train":
        raise UserInputError(
            "parent: a train job starts from scratch; use finetune to continue a job", field="parent_id"
        )
    # FOR KEY SHARE until the caller commits: a delete of the parent (core.service.deletion locks it FOR
    # UPDATE) waits for this job's row and then refuses, or ran first and the parent is not found here.
    parent = (session.get(Job, parent_id, with_for_update={"read": True, "key_share": True}, populate_existing=True)
              if 1 <= parent_id <= MAX_ID else None)
    if parent is None:
        raise UserInputError(f"parent: job {parent_id} not found", field="parent_id")
    if parent.kind not in MODEL_KINDS:
        raise UserInputError(
            f"parent: job {parent_id} is a {parent.kind} job and has no model checkpoint", field="parent_id"
        )
    if parent.status != "succeeded" and not _has_checkpoint(session, parent_id):
        raise UserInputError(f"parent: job {parent_id} is {parent.status} and has no checkpoint yet", field="parent_id")
    if params.get("checkpoint_choice") == "last" and retention.last_removed(parent):
        raise UserInputError(retention.missing_checkpoint_message(parent, "last"), field="parent_id")


def _has_checkpoint(session: Session, job_id: int) -> bool:
    found = session.scalar(select(Artifact.id).where(Artifact.job_id == job_id, Artifact.kind == "checkpoint").limit(1))
    return found is not None


def _validated(kind: str, params: dict[str, Any], strict: bool = False) -> dict[str, Any]:
    """The params dict as the schema normalises it (defaults filled in), or a UserInputError;
    a training job must also fit the memory cap (core.service.quotas)."""
    parsed = parse_params(kind, params, strict=strict)
    if kind in TRAINING_KINDS and parsed.arch is not None:
        quotas.require_memory_within_cap(parsed.arch, parsed.image_size, parsed.batch_size)
    return parsed.model_dump(mode="json")


def _sweep_gpu_hours(kind: str, points: list[dict[str, Any]]) -> float | None:
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
        total += quotas.training_gpu_hours(point["arch"], point["image_size"], point["epochs"], images[key])
    return total


def create_job(
    session: Session,
    kind: str,
    params: dict[str, Any],
    *,
    parent_id: int | None = None,
    queue: str | None = None,
    sweep_id: int | None = None,
    max_attempts: int | None = None,
    strict: bool = False,
    origin: str = "cli",
    submitted_by: int | None = None,
    options: JobOptions | None = None,
) -> Job:
    """Validate and insert a queued job; the caller commits, then sends its id to the broker.

    strict: params are JSON values taken as their types (the API), not text to parse (CLI, forms).
    origin "web" confines the job's files to DATA_ROOTS when it runs (see worker.tasks).
    submitted_by: the user's id (None: the CLI); options: priority, notes, tags, retention."""
    if origin not in JOB_ORIGINS:
        raise ValueError(f"create_job: origin {origin!r} is not one of {JOB_ORIGINS}")
    dumped = _validated(kind, with_folder_image_size(kind, params), strict)
    _check_parent(session, kind, parent_id, dumped)
    queue = check_printable((queue or DEFAULT_QUEUES[kind]).strip(), "queue")
    if not queue or "," in queue:
        raise UserInputError(f"queue: {queue!r} is not a queue name", field="queue")
    job = Job(
        kind=kind,
        origin=origin,
        status="queued",
        params=dumped,
        parent_id=parent_id,
        sweep_id=sweep_id,
        data_dir=dumped.get("data_dir", ""),
        queue=queue,
        attempts=0,
        max_attempts=max_attempts or get_settings().max_attempts,
        cancel_requested=False,
        progress=0.0,
        created_at=utcnow(),
        submitted_by=submitted_by,
    )
    session.add(job)
    session.flush()
    apply_options(session, job, options or JobOptions())
    return job


def apply_options(session: Session, target: Job | Sweep, options: JobOptions) -> None:
    """Store priority, notes, retention and tags on a job or a sweep (tags replace the old ones)."""
    target.priority = PRIORITIES[options.priority]
    target.description = options.description
    target.retention = options.retention
    tag_table, key = (JobTag, JobTag.job_id) if isinstance(target, Job) else (SweepTag, SweepTag.sweep_id)
    session.execute(delete(tag_table).where(key == target.id))
    session.add_all(tag_table(**{key.key: target.id, "tag": tag}) for tag in options.tags)
    session.flush()


def tags_of(session: Session, jobs: list[Job]) -> dict[int, list[str]]:
    """Each job's tags, sorted (one query for the whole list)."""
    found: dict[int, list[str]] = {job.id: [] for job in jobs}
    rows = session.execute(select(JobTag.job_id, JobTag.tag).where(JobTag.job_id.in_(list(found))).order_by(JobTag.tag))
    for job_id, tag in rows:
        found[job_id].append(tag)
    return found


def tag_filter(tag: str) -> str:
    """A tag to filter by, as stored (lower-cased), or a UserInputError naming the field `tag`."""
    try:
        return check_tag(tag.strip())
    except ValueError as error:
        raise UserInputError(f"tag: {error}", field="tag") from None


def sweep_tags(session: Session, sweep_id: int) -> list[str]:
    return list(session.scalars(select(SweepTag.tag).where(SweepTag.sweep_id == sweep_id).order_by(SweepTag.tag)))


def options_of(session: Session, target: Job | Sweep) -> JobOptions:
    """The options stored on a job or sweep, as the shape they were set with."""
    tags = tags_of(session, [target])[target.id] if isinstance(target, Job) else sweep_tags(session, target.id)
    return JobOptions(priority=PRIORITY_NAMES[target.priority], description=target.description, tags=tags,
                      retention=target.retention)


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
    kind: str,
    base_params: dict[str, Any],
    grid: dict[str, list[Any]],
    *,
    name: str | None = None,
    parent_id: int | None = None,
    queue: str | None = None,
    strict: bool = False,
    origin: str = "cli",
    submitted_by: int | None = None,
    options: JobOptions | None = None,
    early_stopping: MedianStopRule | None = None,
) -> tuple[Sweep, list[Job]]:
    """One job per point of the grid's cartesian product; every point is validated before any insert.
    The sweep and each of its jobs carry the same options (priority, notes, tags, retention);
    early_stopping is the sweep's median stopping rule (core.engine.early_stopping), train/finetune only."""
    if name is not None:
        check_printable(name, "name")
    if early_stopping is not None and kind not in TRAINING_KINDS:
        raise UserInputError(f"early_stopping: {kind} sweeps have no epochs to stop; only train and finetune sweeps take it",
                             field="early_stopping")  # fmt: skip
    if not grid or any(not isinstance(v, list) or not v for v in grid.values()):
        raise UserInputError("grid: give at least one field with at least one value", field="grid")
    fields = list(grid)
    quotas.require_sweep_within_caps(math.prod(len(grid[f]) for f in fields), None)
    points = [dict(zip(fields, values)) for values in itertools.product(*(grid[f] for f in fields))]
    validated = []
    for point in points:
        try:
            validated.append(_validated(kind, with_folder_image_size(kind, {**base_params, **point}), strict))
        except UserInputError as error:
            described = ", ".join(f"{k}={v}" for k, v in point.items())
            raise UserInputError(f"grid point {described}: {error}", field="grid") from None
    quotas.require_sweep_within_caps(len(points), _sweep_gpu_hours(kind, validated))
    sweep = Sweep(
        name=name or " x ".join(fields), kind=kind, base_params=base_params, grid=grid, created_at=utcnow(),
        submitted_by=submitted_by, early_stopping=None if early_stopping is None else early_stopping.model_dump(),
    )
    session.add(sweep)
    session.flush()
    apply_options(session, sweep, options or JobOptions())
    jobs = [
        create_job(session, kind, {**base_params, **point}, parent_id=parent_id, queue=queue, sweep_id=sweep.id,
                   strict=strict, origin=origin, submitted_by=submitted_by, options=options)  # fmt: skip
        for point in points
    ]
    return sweep, jobs


# --- reading jobs ----------------------------------------------------------------------


def get_job(session: Session, job_id: int, *, lock: bool = False) -> Job:
    """The job as the database has it now, or a UserInputError naming the id; lock: its row locked
    (FOR UPDATE) until the transaction ends, as a delete does."""
    job = (session.get(Job, job_id, populate_existing=True, with_for_update=lock or None)
           if 1 <= job_id <= MAX_ID else None)
    if job is None:
        raise UserInputError(f"job {job_id} not found")
    return job


def list_jobs(
    session: Session,
    *,
    status: str | None = None,
    kind: str | None = None,
    sweep_id: int | None = None,
    tag: str | None = None,
    page: int = 1,
    per_page: int = 50,
) -> tuple[list[Job], int]:
    """A page of jobs, newest first, and the total matching (served by the (status|kind|sweep, id) indexes
    and the job_tags tag index)."""
    if status is not None and status not in JOB_STATUSES:
        raise UserInputError(f"status: {status!r} is not one of {', '.join(JOB_STATUSES)}", field="status")
    if kind is not None and kind not in JOB_KINDS:
        raise UserInputError(f"kind: {kind!r} is not one of {', '.join(JOB_KINDS)}", field="kind")
    if page < 1 or not 1 <= per_page <= 1000:
        raise UserInputError("page: page must be >= 1 and per_page between 1 and 1000", field="page")
    conditions = []
    if status is not None:
        conditions.append(Job.status == status)
    if kind is not None:
        conditions.append(Job.kind == kind)
    if sweep_id is not None:
        if not 1 <= sweep_id <= MAX_ID:
            raise UserInputError(f"sweep_id: {sweep_id} is not a sweep id", field="sweep_id")
        conditions.append(Job.sweep_id == sweep_id)
    if tag is not None:
        conditions.append(Job.id.in_(select(JobTag.job_id).where(JobTag.tag == tag_filter(tag))))
    total = session.scalar(select(func.count(Job.id)).where(*conditions)) or 0
    query = select(Job).where(*conditions).order_by(Job.id.desc()).limit(per_page).offset((page - 1) * per_page)
    return list(session.scalars(query)), total


def epoch_metrics(session: Session, job_id: int) -> list[EpochMetric]:
    """The job's epoch rows, in epoch order."""
    return list(session.scalars(select(EpochMetric).where(EpochMetric.job_id == job_id).order_by(EpochMetric.epoch)))


def artifacts(session: Session, job_id: int) -> list[Artifact]:
    """The job's recorded files, by name."""
    return list(session.scalars(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.name)))


def queue_positions(session: Session, listed: list[Job]) -> dict[int, int]:
    """1-based place of each queued job of a page among the queued jobs of its queue, in the order
    they start (CLAIM_ORDER: higher priority first, then oldest); jobs not queued are left out.
    One query for the whole page: the queued jobs of its queues numbered once (a window)."""
    queued = [job for job in listed if job.status == "queued"]
    if not queued:
        return {}
    place = func.row_number().over(partition_by=Job.queue, order_by=CLAIM_ORDER)
    ranked = (
        select(Job.id.label("id"), place.label("place"))
        .where(Job.status == "queued", Job.cancel_requested.is_(False), Job.queue.in_(sorted({j.queue for j in queued})))
        .subquery()
    )
    rows = session.execute(select(ranked.c.id, ranked.c.place).where(ranked.c.id.in_([job.id for job in queued])))
    return {job_id: place for job_id, place in rows}


def queue_position(session: Session, job: Job) -> int | None:
    """queue_positions of one job; None unless queued."""
    return queue_positions(session, [job]).get(job.id)


def live_workers(session: Session) -> list[WorkerRecord]:
    """Workers seen within stale_after_seconds."""
    recent = WorkerRecord.last_seen >= _stale_cutoff()
    return list(session.scalars(select(WorkerRecord).where(recent).order_by(WorkerRecord.hostname)))


def live_queues(session: Session) -> set[str]:
    """Queues consumed by at least one live worker: a queued job on any other queue waits for nobody."""
    return {queue for worker in live_workers(session) for queue in worker.queue_names}


# --- the worker's side: lease, progress, outcome ------------------------------------------


def _stale_cutoff():  # type: ignore[no-untyped-def]
    return utcnow() - timedelta(seconds=get_settings().stale_after_seconds)


# The order queued jobs of one queue start in: higher priority first, then oldest (by id) first.
CLAIM_ORDER = (Job.priority.desc(), Job.id.asc())
CLAIM_CANDIDATES = 20  # queued jobs tried per look at the queue (others may win some of them meanwhile)


def waiting():  # type: ignore[no-untyped-def]
    """Jobs a worker may start now: queued, and no cancel asked (claims; the queue depth metric)."""
    return and_(Job.status == "queued", Job.cancel_requested.is_(False))


def _waiting_in(queue: str):  # type: ignore[no-untyped-def]
    """Jobs of this queue a worker may start now."""
    return and_(Job.queue == queue, waiting())


def _take_lease(session: Session, job_id: int, claimable: Any, *, owner: str, host: str) -> Job | None:
    """The one conditional UPDATE of a claim: the job becomes ours if it is still claimable."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.cancel_requested.is_(False), claimable)
        .values(
            status="running",
            attempts=Job.attempts + 1,
            lease_owner=owner,
            worker_host=host,
            heartbeat_at=now,
            started_at=now,
            finished_at=None,
            error=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    return session.get(Job, job_id, populate_existing=True)


def claim_job(session: Session, job_id: int, *, owner: str, host: str) -> Job | None:
    """Take the lease on this very job with one conditional UPDATE; None if it is not ours to run.

    Claimable: queued, or running with a stale heartbeat and attempts left (its worker died).
    A live lease, a finished job or a cancel request all make the claim fail."""
    claimable = or_(
        Job.status == "queued",
        and_(Job.status == "running", Job.heartbeat_at < _stale_cutoff(), Job.attempts < Job.max_attempts),
    )
    return _take_lease(session, job_id, claimable, owner=owner, host=host)


def claim_next_job(session: Session, job_id: int, *, owner: str, host: str) -> Job | None:
    """What a worker does with a message naming job X: take the lease on the best queued job of X's
    queue (CLAIM_ORDER), which may be X or another; None if there is nothing to run.

    Every job that becomes queued sends its own message, so a queue never holds fewer messages
    than queued jobs, and whichever message comes first starts the job that should start first:
    priority works the same on Redis and on the embedded broker, and a priority changed while
    queued takes effect with no re-send. Each candidate is one conditional UPDATE (a job another
    worker won is skipped). With nothing queued, X itself is claimed if its worker died (a stale
    lease, see claim_job); a surplus message (a cancelled or twice-sent job) finds nothing."""
    queue = session.scalar(select(Job.queue).where(Job.id == job_id)) if 1 <= job_id <= MAX_ID else None
    if queue is None:
        return None
    while True:
        candidates = _next_candidates(session, queue)
        if not candidates:
            return claim_job(session, job_id, owner=owner, host=host)
        for candidate in candidates:
            job = _take_lease(session, candidate, Job.status == "queued", owner=owner, host=host)
            if job is not None:
                return job
        # every candidate went to another worker meanwhile: look at the queue again


def _next_candidates(session: Session, queue: str) -> list[int]:
    """The first CLAIM_CANDIDATES queued jobs of a queue in CLAIM_ORDER. One query per priority,
    highest first, each an ordered range of the (queue, status, priority, id) index: ORDER BY
    priority DESC, id ASC in one query would sort every queued job of the queue."""
    found: list[int] = []
    for priority in sorted(PRIORITY_NAMES, reverse=True):
        found += session.scalars(
            select(Job.id).where(_waiting_in(queue), Job.priority == priority).order_by(Job.id)
            .limit(CLAIM_CANDIDATES - len(found))
        )  # fmt: skip
        if len(found) >= CLAIM_CANDIDATES:
            break
    return found


def heartbeat(session: Session, job_id: int, owner: str, **progress: Any) -> bool:
    """Refresh the lease and progress; False if the lease is no longer ours or a cancel was asked."""
    unknown = set(progress) - set(PROGRESS_FIELDS)
    if unknown:
        raise ValueError(f"heartbeat: unknown fields {sorted(unknown)}")
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
        .values(heartbeat_at=utcnow(), **progress)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return False
    cancel_requested = session.scalar(select(Job.cancel_requested).where(Job.id == job_id))
    return not cancel_requested


def _upsert(session: Session, model: type, values: dict[str, Any], keys: list[str]) -> None:
    """INSERT … ON CONFLICT (keys) DO UPDATE, for PostgreSQL and SQLite alike."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise RuntimeError(f"unsupported database dialect {dialect}")
    statement = insert(model).values(**values)
    changed = {k: statement.excluded[k] for k in values if k not in keys}
    session.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed))


def record_epoch(session: Session, job_id: int, record: EpochRecord) -> None:
    """Upsert one epoch's metrics (re-reporting an epoch after a resume changes nothing)."""
    _upsert(session, EpochMetric, {"job_id": job_id, **record.model_dump()}, ["job_id", "epoch"])
    accuracy = record.valid_accuracy
    if accuracy is not None:
        session.execute(
            update(Job)
            .where(Job.id == job_id, or_(Job.best_valid_accuracy.is_(None), Job.best_valid_accuracy < accuracy))
            .values(best_valid_accuracy=accuracy)
            .execution_options(synchronize_session=False)
        )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def add_artifact(session: Session, job_id: int, kind: str, path: Path) -> None:
    """Record (or refresh) a file the job produced, with its size and sha256; the path must lie in artifacts_dir."""
    if kind not in ARTIFACT_KINDS:
        raise ValueError(f"artifact kind {kind!r} is not one of {ARTIFACT_KINDS}")
    root = get_settings().resolved_artifacts_dir.resolve()
    path = Path(path).resolve()
    relative = path.relative_to(root)  # ValueError for a file outside: a bug, never user input
    values = {
        "job_id": job_id,
        "kind": kind,
        "name": path.name,
        "path": relative.as_posix(),
        "size_bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "created_at": utcnow(),
    }
    _upsert(session, Artifact, values, ["job_id", "name"])


def recorded_file(artifact: Artifact | None) -> Path | None:
    """The one answer to "where is this recorded artifact": its file, only if the recorded path lies
    inside the artifacts dir and the file exists (a row whose file was removed gives None)."""
    if artifact is None:
        return None
    root = get_settings().resolved_artifacts_dir.resolve()
    relative = PurePosixPath(artifact.path)
    if relative.is_absolute() or ".." in relative.parts:
        return None
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path.is_file() else None


def named_artifact_file(session: Session, job_id: int, name: str) -> Path | None:
    """The file of a job's artifact of that name (evaluation.json, oof.csv...), or None."""
    return recorded_file(session.scalar(select(Artifact).where(Artifact.job_id == job_id, Artifact.name == name)))


def artifact_path(session: Session, job_id: int, name: str | None = None) -> tuple[Artifact, Path]:
    """A recorded artifact of a job and its absolute path (default: its best checkpoint, else its only file)."""
    recorded = artifacts(session, get_job(session, job_id).id)
    if not recorded:
        raise UserInputError(f"job {job_id} has no recorded artifacts")
    if name is None:
        by_name = {a.name: a for a in recorded}
        preferred = [by_name[n] for n in checkpoint_names("best") if n in by_name]
        chosen = preferred[0] if preferred else (recorded[0] if len(recorded) == 1 else None)
        if chosen is None:
            raise UserInputError(
                f"artifact: job {job_id} has several; name one of {', '.join(by_name)}", field="artifact"
            )
    else:
        chosen = next((a for a in recorded if a.name == name), None)
        if chosen is None:
            raise UserInputError(
                f"artifact: job {job_id} has no artifact {name!r}; it has {', '.join(a.name for a in recorded)}", field="artifact"
            )
    path = recorded_file(chosen)
    if path is None:
        raise UserInputError(
            f"artifact: {chosen.path} is recorded for job {job_id} but missing on disk", field="artifact"
        )
    return chosen, path


def job_checkpoint(session: Session, job_id: int, choice: str = "best") -> Path:
    """A job's best.pt or last.pt (a parent's model, a cross-validation fold's), resolved in its run folder."""
    job = session.get(Job, job_id) if 1 <= job_id <= MAX_ID else None
    if job is None:
        raise UserInputError(f"parent: job {job_id} not found", field="parent_id")
    try:
        return resolve_checkpoint(job_run_dir(job.id, job.run_key), choice)
    except UserInputError:
        raise UserInputError(retention.missing_checkpoint_message(job, choice), field="parent_id") from None


def finish_job(session: Session, job_id: int, owner: str, status: str, error: str | None = None) -> bool:
    """End a job we hold the lease on; False if the lease was lost (another worker took it over).

    "succeeded" becomes "cancelled" (error LATE_CANCEL) when a cancel was requested meanwhile."""
    if status not in FINISHED_STATUSES:
        raise ValueError(f"finish_job: {status!r} is not a finished status")
    ours = and_(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
    values: dict[str, Any] = {"status": status, "finished_at": utcnow(), "error": _one_line(error), "eta_s": None}
    if status == "succeeded":
        # The run polls for a cancel before each batch; one that came during the last batch (or
        # while the outcome was being recorded) still wins, and the row says why.
        late_cancel = session.execute(
            update(Job)
            .where(ours, Job.cancel_requested.is_(True))
            .values({**values, "status": "cancelled", "error": LATE_CANCEL, "progress": 1.0})
            .execution_options(synchronize_session=False)
        )
        if late_cancel.rowcount == 1:
            webhooks.job_ended(session, job_id)
            return True
        values["progress"] = 1.0
    result = session.execute(update(Job).where(ours).values(**values).execution_options(synchronize_session=False))
    if result.rowcount == 1:
        webhooks.job_ended(session, job_id)
    return result.rowcount == 1


def record_early_stop(session: Session, job_id: int, owner: str, epoch: int, reason: str) -> bool:
    """Note that the run ended early, at `epoch`, and why (patience or the sweep's median rule);
    written with the outcome, while we hold the lease."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
        .values(stopped_epoch=epoch, stop_reason=_one_line(reason))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def release_job(session: Session, job_id: int, owner: str) -> str | None:
    """Hand a running job back to its queue (its worker is shutting down); the attempt is not counted.

    A job whose cancel arrived meanwhile ends cancelled instead. Returns the new status, or None
    if the lease was no longer ours."""
    ours = and_(Job.id == job_id, Job.lease_owner == owner, Job.status == "running")
    outcomes = [
        (Job.cancel_requested.is_(True), {"status": "cancelled", "finished_at": utcnow()}),
        (Job.cancel_requested.is_(False), {"status": "queued", "attempts": Job.attempts - 1}),
    ]
    for condition, values in outcomes:
        result = session.execute(
            update(Job)
            .where(ours, condition)
            .values(lease_owner=None, heartbeat_at=None, eta_s=None, **values)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            if values["status"] == "cancelled":
                webhooks.job_ended(session, job_id)
            return values["status"]
    return None


def _one_line(text: str | None, limit: int = 1000) -> str | None:
    if text is None:
        return None
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# --- the user's side: cancel, retry -----------------------------------------------------


def fail_unsent_job(session: Session, job_id: int, reason: str) -> bool:
    """A queued job whose message could not be sent: failed with the reason (retry re-sends it),
    rather than left queued forever. False if it was no longer queued (a worker had it already)."""
    failed = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="failed", error=_one_line(reason), finished_at=utcnow())
    )
    if failed.rowcount == 1:
        webhooks.job_ended(session, job_id)
    return failed.rowcount == 1


def request_cancel(session: Session, job_id: int) -> Job:
    """Queued → cancelled now; running → cancel_requested (its worker stops at the next batch)."""
    get_job(session, job_id)
    cancelled_now = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == "queued")
        .values(status="cancelled", cancel_requested=True, finished_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if cancelled_now.rowcount == 1:
        webhooks.job_ended(session, job_id)
    else:
        asked = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "running")
            .values(cancel_requested=True)
            .execution_options(synchronize_session=False)
        )
        if asked.rowcount != 1:
            job = session.get(Job, job_id, populate_existing=True)
            raise StateConflict(f"job {job_id} is already {job.status}; nothing to cancel")
    return session.get(Job, job_id, populate_existing=True)


def retry_job(session: Session, job_id: int) -> Job:
    """Failed/cancelled → queued again with attempts reset; the worker resumes from its last checkpoint.
    A job that reads its parent's model is refused when the parent is gone (deleted) or unusable, as at submit."""
    _require_model_to_retry(session, get_job(session, job_id))
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status.in_(RETRYABLE_STATUSES))
        .values(
            status="queued",
            attempts=0,
            cancel_requested=False,
            error=None,
            finished_at=None,
            lease_owner=None,
            heartbeat_at=None,
            eta_s=None,
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        job = session.get(Job, job_id, populate_existing=True)
        raise StateConflict(f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried")
    return session.get(Job, job_id, populate_existing=True)


def _require_model_to_retry(session: Session, job: Job) -> None:
    """A finetune, evaluate or predict job runs on its parent's checkpoint (or a path): deleting the parent
    cleared parent_id, so such a retry would only fail in the worker; a parent still there is checked
    (and locked against a delete) as at submit."""
    if job.parent_id is not None:
        _check_parent(session, job.kind, job.parent_id, job.params)
    elif job.kind in NEEDS_CHECKPOINT and not (job.params.get("checkpoint") or job.params.get("checkpoints")):
        raise StateConflict(f"job {job.id}: its parent job was deleted, so there is no model to {job.kind}; "
                            f"submit a new {job.kind} job from another model")


def queued_jobs(session: Session, queues: list[str]) -> list[tuple[int, str]]:
    """(id, queue) of the jobs waiting in these queues, oldest first (one message each; which job a
    message starts is decided when it arrives, see claim_next_job)."""
    rows = session.execute(
        select(Job.id, Job.queue)
        .where(Job.status == "queued", Job.cancel_requested.is_(False), Job.queue.in_(queues))
        .order_by(Job.id)
    )
    return [(job_id, queue) for job_id, queue in rows]


def requeue_lost_jobs(session: Session) -> list[Job]:
    """Running jobs whose worker stopped heartbeating: queued again (to re-send) or failed 'worker lost'.

    Each change is conditional on the job still being stale, so two reapers never both requeue a job."""
    stale = and_(Job.status == "running", Job.heartbeat_at < _stale_cutoff())
    lost_ids = list(session.scalars(select(Job.id).where(stale)))
    requeued = []
    for job_id in lost_ids:
        this_stale = and_(Job.id == job_id, stale)
        outcomes = [
            (Job.cancel_requested.is_(True), {"status": "cancelled", "finished_at": utcnow()}),
            (Job.attempts < Job.max_attempts, {"status": "queued", "lease_owner": None}),
            (Job.attempts >= Job.max_attempts, {"status": "failed", "error": "worker lost", "finished_at": utcnow()}),
        ]
        for condition, values in outcomes:
            result = session.execute(
                update(Job).where(this_stale, condition).values(**values).execution_options(synchronize_session=False)
            )
            if result.rowcount == 1:
                if values["status"] == "queued":
                    requeued.append(session.get(Job, job_id, populate_existing=True))
                else:
                    webhooks.job_ended(session, job_id)
                break
    return requeued


# --- workers -----------------------------------------------------------------------------


def register_worker(session: Session, *, hostname: str, queues: list[str], gpu: str | None, pid: int) -> None:
    """Insert or refresh this worker's row (a restarted worker keeps its hostname)."""
    now = utcnow()
    values = {"hostname": hostname, "queues": ",".join(queues), "gpu": gpu, "pid": pid, "started_at": now, "last_seen": now,
              "lost_at": None}
    _upsert(session, WorkerRecord, values, ["hostname"])


def worker_seen(session: Session, hostname: str) -> None:
    """Refresh a worker's last_seen: it is alive and consuming its queues (a loss reported before is over)."""
    session.execute(update(WorkerRecord).where(WorkerRecord.hostname == hostname).values(last_seen=utcnow(), lost_at=None))


def unregister_worker(session: Session, hostname: str) -> None:
    """Remove a worker's row on a clean shutdown, so its queues show unserved at once."""
    session.execute(delete(WorkerRecord).where(WorkerRecord.hostname == hostname))
