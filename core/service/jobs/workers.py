"""Worker rows: presence, the queues served, the live workers and queues."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.service.jobs.lease import _stale_cutoff, _upsert
from core.service.records import (
    WorkerRecord,
    utcnow,
)


def live_workers(session: Session) -> list[WorkerRecord]:
    """Workers seen within stale_after_seconds."""
    recent = WorkerRecord.last_seen >= _stale_cutoff()
    return list(session.scalars(select(WorkerRecord).where(recent).order_by(WorkerRecord.hostname)))


def live_queues(session: Session) -> set[str]:
    """Queues consumed by at least one live worker: a queued job on any other queue waits for nobody."""
    return {queue for worker in live_workers(session) for queue in worker.queue_names}


def register_worker(session: Session, *, hostname: str, queues: list[str], gpu: str | None, pid: int) -> None:
    """Insert or refresh this worker's row (a restarted worker keeps its hostname)."""
    now = utcnow()
    values = {
        "hostname": hostname,
        "queues": ",".join(queues),
        "gpu": gpu,
        "pid": pid,
        "started_at": now,
        "last_seen": now,
        "lost_at": None,
    }
    _upsert(session, WorkerRecord, values, ["hostname"])


def worker_seen(session: Session, hostname: str) -> None:
    """Refresh a worker's last_seen: it is alive and consuming its queues (a loss reported before is over)."""
    session.execute(update(WorkerRecord).where(WorkerRecord.hostname == hostname).values(last_seen=utcnow(), lost_at=None))


def unregister_worker(session: Session, hostname: str) -> None:
    """Remove a worker's row on a clean shutdown, so its queues show unserved at once."""
    session.execute(delete(WorkerRecord).where(WorkerRecord.hostname == hostname))
