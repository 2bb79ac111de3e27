"""Counters of the service's events, kept in their own table (`event_counts`) and only ever
incremented, in the transaction of the event they count: jobs ended (`job.succeeded`, `job.failed`,
`job.cancelled`, per kind), workers reported lost (`worker.lost`), webhook attempts (`webhook.attempt`,
per outcome).

Deleting jobs, workers or deliveries never lowers them, so Prometheus' `increase()` and `rate()`
count true events (core.service.metrics serves them as counters); and they live in the database, so
every web process answers the same value, before and after a restart."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.service.records import EventCount


def count_event(session: Session, event: str, label: str = "") -> None:
    """Add one to the event's counter (label: the job kind, the delivery outcome), in the caller's transaction."""
    dialect = session.get_bind().dialect.name
    if dialect not in ("postgresql", "sqlite"):
        raise RuntimeError(f"unsupported database dialect {dialect}")
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(EventCount).values(event=event, label=label, count=1)
    session.execute(statement.on_conflict_do_update(index_elements=["event", "label"], set_={"count": EventCount.count + 1}))


def event_counts(session: Session) -> dict[tuple[str, str], int]:
    """Every counter: (event, label) → count."""
    return {
        (event, label): count
        for event, label, count in session.execute(select(EventCount.event, EventCount.label, EventCount.count))
    }
