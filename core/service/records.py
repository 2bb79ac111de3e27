"""ORM records: jobs and what they produce (epoch metrics, artifacts), sweeps, workers,
registered data folders and dashboard users. The schema changes only through
core/service/migrations; these classes must match the newest migration (tests/test_migrations.py)."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

from core.service.db import Base

JOB_KINDS = ("train", "finetune", "evaluate", "predict")
JOB_ORIGINS = ("cli", "web")  # web jobs may read only files inside DATA_ROOTS
MAX_ID = 2**31 - 1  # ids are INTEGER columns, 32-bit on PostgreSQL: a larger number names no row (and overflows the column)
# The table options of every table whose ids are shown, linked, audited or sent: an id is never handed out twice.
# PostgreSQL's sequences never do; SQLite gives max(id) + 1 unless the table is AUTOINCREMENT, so a deleted job's
# id went to the next job (migration 0008 rebuilds the tables of an existing database).
NEVER_REUSED_IDS = {"sqlite_autoincrement": True}


class JobStatus(str, enum.Enum):
    """The states of a job row, the one home of their names: the column stores the text, and a member
    equals its text ("queued"), so rows, JSON and templates compare either way."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    def __str__(self) -> str:
        return self.value


JOB_STATUSES = tuple(status.value for status in JobStatus)
FINISHED_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
CANCELLABLE_STATUSES = (JobStatus.queued, JobStatus.running)  # a queued job is cancelled at once, a running one at its next batch
RETRYABLE_STATUSES = (JobStatus.failed, JobStatus.cancelled)
MODEL_KINDS = ("train", "finetune")  # kinds whose run leaves a checkpoint another job can start from
ROLES = ("admin", "member", "viewer")  # core.service.access says what each may do
PRIORITIES = {"low": 0, "normal": 1, "high": 2}  # stored as the number: higher starts first
PRIORITY_NAMES = {number: name for name, number in PRIORITIES.items()}
WEBHOOK_EVENTS = ("job.succeeded", "job.failed", "job.cancelled", "worker.lost")


class DeliveryStatus(str, enum.Enum):
    """The states of a webhook delivery row (stored as the text, like JobStatus)."""

    pending = "pending"
    delivered = "delivered"
    failed = "failed"

    def __str__(self) -> str:
        return self.value


DELIVERY_STATUSES = tuple(status.value for status in DeliveryStatus)


def utcnow() -> datetime:
    """Naive UTC 'now': SQLite keeps no time zone, so every timestamp is stored as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Sweep(Base):
    """One grid submission: a job per point of the cartesian product of `grid`."""

    __tablename__ = "sweeps"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    base_params: Mapped[dict[str, Any]] = mapped_column(JSON)
    grid: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    submitted_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))  # None: the CLI
    priority: Mapped[int] = mapped_column(Integer, default=PRIORITIES["normal"], server_default="1")  # its jobs'
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    retention: Mapped[Optional[str]] = mapped_column(String(16))  # its jobs' policy; None: the global one
    # Options beyond priority, notes, tags and retention (core.service.job_options.extra_options); None: none set
    extra_options: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    # {"rule": "median", "metric": ..., ...}: points below the median of finished points stop; None: off
    early_stopping: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)


class CrossValidation(Base):
    """One cross-validation: a training job per fold (jobs.cv_id, jobs.cv_fold), and the ensembles
    made from its fold models (jobs.cv_id with no cv_fold)."""

    __tablename__ = "cross_validations"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    data_dir: Mapped[str] = mapped_column(Text)
    scheme: Mapped[str] = mapped_column(String(200))  # how the folds were made, in words
    base_params: Mapped[dict[str, Any]] = mapped_column(JSON)  # the train params every fold shares
    folds: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # [{fold, split, valid_split}]
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Job(Base):
    """A queued unit of work; the row is the source of truth (the broker only carries its id)."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_kind_id", "kind", "id"),
        Index("ix_jobs_sweep_id", "sweep_id", "id"),
        Index("ix_jobs_queue_status_id", "queue", "status", "id"),
        Index("ix_jobs_cv_id", "cv_id", "id"),
        Index("ix_jobs_queue_status_priority", "queue", "status", "priority", "id"),
        UniqueConstraint("run_key", name="uq_jobs_run_key"),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    # Random per row: the run folder is jobs/<id>-<run_key> and carries it, so an id reused after a
    # database reset never adopts an old run (core.engine.run_folder.resolver).
    run_key: Mapped[str] = mapped_column(String(32), default=lambda: uuid.uuid4().hex)
    # A job run before run keys keeps its folder jobs/<id>, where its files were recorded (migration 0007).
    legacy_run_dir: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    origin: Mapped[str] = mapped_column(String(8), default="cli", server_default="cli")
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued.value)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    parent_id: Mapped[Optional[int]] = mapped_column(ForeignKey("jobs.id"))
    sweep_id: Mapped[Optional[int]] = mapped_column(ForeignKey("sweeps.id"))
    cv_id: Mapped[Optional[int]] = mapped_column(ForeignKey("cross_validations.id"))
    cv_fold: Mapped[Optional[int]] = mapped_column(Integer)  # None for a cross-validation's ensemble jobs
    data_dir: Mapped[str] = mapped_column(Text, default="")
    queue: Mapped[str] = mapped_column(String(100))
    worker_host: Mapped[Optional[str]] = mapped_column(String(255))
    lease_owner: Mapped[Optional[str]] = mapped_column(String(255))
    heartbeat_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    epoch: Mapped[Optional[int]] = mapped_column(Integer)
    epochs_total: Mapped[Optional[int]] = mapped_column(Integer)
    images_per_s: Mapped[Optional[float]] = mapped_column(Float)
    eta_s: Mapped[Optional[float]] = mapped_column(Float)
    error: Mapped[Optional[str]] = mapped_column(Text)
    best_valid_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    log_tail: Mapped[Optional[str]] = mapped_column(Text)
    submitted_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))  # None: the CLI
    priority: Mapped[int] = mapped_column(Integer, default=PRIORITIES["normal"], server_default="1")
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    retention: Mapped[Optional[str]] = mapped_column(String(16))  # "all", "best" or "last-N"; None: the global one
    extra_options: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)  # as the sweep's
    stopped_epoch: Mapped[Optional[int]] = mapped_column(Integer)  # set when a run ended before its last epoch
    stop_reason: Mapped[Optional[str]] = mapped_column(Text)  # why, in words (patience, the sweep's median rule)
    disk_bytes: Mapped[Optional[int]] = mapped_column(BigInteger)  # its run folder's size, measured when it ends
    # How its latest attempt started when it was not its first: resumed at epoch N, or started over (migration 0010).
    attempt_note: Mapped[Optional[str]] = mapped_column(Text)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


class EpochMetric(Base):
    """One row per finished epoch of a job (upserted, so a resumed job never duplicates one).

    Its columns after job_id are the fields of core.engine.progress.EpochRecord, which it stores whole
    (core.service.jobs.record_epoch) and the API answers as it is; tests/test_jobs.py holds the two equal."""

    __tablename__ = "epoch_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_epoch_metrics_job_epoch"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    train_loss: Mapped[Optional[float]] = mapped_column(Float)
    train_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    valid_loss: Mapped[Optional[float]] = mapped_column(Float)
    valid_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    valid_balanced_accuracy: Mapped[Optional[float]] = mapped_column(Float)
    valid_f1: Mapped[Optional[float]] = mapped_column(Float)
    confusion: Mapped[Optional[list[list[int]]]] = mapped_column(JSON)
    valid_roc_auc: Mapped[Optional[float]] = mapped_column(Float)
    lr: Mapped[Optional[float]] = mapped_column(Float)
    seconds: Mapped[Optional[float]] = mapped_column(Float)
    images_per_s: Mapped[Optional[float]] = mapped_column(Float)


class Artifact(Base):
    """A file a job produced, under the artifacts dir; only recorded files can be downloaded."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("job_id", "name", name="uq_artifacts_job_name"), NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)  # relative to the artifacts dir
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class WorkerRecord(Base):
    """A worker process; it refreshes last_seen every few seconds while alive."""

    __tablename__ = "workers"

    id: Mapped[int] = mapped_column(primary_key=True)
    hostname: Mapped[str] = mapped_column(String(255), unique=True)
    queues: Mapped[str] = mapped_column(Text)  # comma-separated
    gpu: Mapped[Optional[str]] = mapped_column(String(32))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    lost_at: Mapped[Optional[datetime]] = mapped_column(DateTime)  # when its loss was reported (once per loss)

    @property
    def queue_names(self) -> list[str]:
        return [q for q in self.queues.split(",") if q]


class DataFolder(Base):
    """A data folder registered for the dashboard, with its last `check` report."""

    __tablename__ = "data_folders"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    path: Mapped[str] = mapped_column(Text)
    registered_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    report: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)


class User(Base):
    """A dashboard login (password hashed with werkzeug.security)."""

    __tablename__ = "users"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    role: Mapped[str] = mapped_column(String(16), default="member", server_default="member")  # ROLES
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())  # no login, no token


class LoginSession(Base):
    """A dashboard session on the server: the signed cookie carries only its random id, whose
    SHA-256 is the key here, so deleting the row (logout, password reset) ends the session."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 hex of the cookie's session id
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(DateTime, index=True)


class LoginFailure(Base):
    """One failed login, counted per user name and per client address within a time window."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_username_at", "username", "at"),
        Index("ix_login_failures_address_at", "address", "at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(150))
    address: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class JobTag(Base):
    """One tag on a job (the job list filters by it; compare shows it)."""

    __tablename__ = "job_tags"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class SweepTag(Base):
    """One tag on a sweep."""

    __tablename__ = "sweep_tags"

    sweep_id: Mapped[int] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class ApiToken(Base):
    """A user's named API token: only its SHA-256 is kept (the token is shown once), and revoking
    it (revoked_at) refuses it from the next request on."""

    __tablename__ = "api_tokens"
    __table_args__ = (UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"), NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64))
    prefix: Mapped[str] = mapped_column(String(16))  # the token's first characters, to tell tokens apart
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime)


class AuditEntry(Base):
    """One write, by whom (username kept as text: the user may be deleted later), on what."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_target", "target_type", "target_id"), NEVER_REUSED_IDS)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(150))
    action: Mapped[str] = mapped_column(String(64))  # "job.submit", "user.disable", "webhook.create", ...
    target_type: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[Optional[str]] = mapped_column(String(64))
    detail: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    address: Mapped[Optional[str]] = mapped_column(String(64))  # the client address of a web request


class Webhook(Base):
    """An admin-configured URL that receives signed JSON for the events it lists (WEBHOOK_EVENTS)."""

    __tablename__ = "webhooks"
    __table_args__ = NEVER_REUSED_IDS

    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))  # the HMAC-SHA256 key the receiver verifies with
    events: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_by: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


class WebhookDelivery(Base):
    """One event for one webhook: written in the transaction that made the event (an outbox row),
    sent later with retries and back-off, so a slow or failing receiver never holds up a job."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_webhook_id", "webhook_id", "id"),
        NEVER_REUSED_IDS,
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    webhook_id: Mapped[int] = mapped_column(ForeignKey("webhooks.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)  # the exact JSON sent (and signed)
    status: Mapped[str] = mapped_column(String(16), default="pending", server_default="pending")  # DELIVERY_STATUSES
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    lease_until: Mapped[Optional[datetime]] = mapped_column(DateTime)  # a sender holds it until then
    response_code: Mapped[Optional[int]] = mapped_column(Integer)
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[Optional[datetime]] = mapped_column(DateTime)


class EventCount(Base):
    """How often an event happened: jobs ended (`job.failed`, ... per kind), workers lost, webhook
    attempts (per outcome). Only ever incremented (core.service.event_counts), in the transaction of
    the event, and never lowered by deleting the rows it counted: Prometheus' counters."""

    __tablename__ = "event_counts"

    event: Mapped[str] = mapped_column(String(32), primary_key=True)
    label: Mapped[str] = mapped_column(String(32), primary_key=True)  # the job kind, the delivery outcome, or ""
    count: Mapped[int] = mapped_column(BigInteger, default=0)
