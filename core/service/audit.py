"""The audit log: every write, by whom, on what. Written in the same transaction as the write
it records, so a change and its audit row are committed (or rolled back) together."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.service.access import Actor, require_admin
from core.service.records import AuditEntry, utcnow


def record(
    session: Session, actor: Actor, action: str, target_type: str, target_id: object = None, detail: dict[str, Any] | None = None
) -> None:
    """Add one audit row: action is "<target>.<verb>" ("job.cancel", "user.add", "webhook.delete")."""
    session.add(
        AuditEntry(
            at=utcnow(),
            user_id=actor.user_id,
            username=actor.username[:150],
            action=action,
            target_type=target_type,
            target_id=None if target_id is None else str(target_id),
            detail=detail,
            address=(actor.address or None) and actor.address[:64],
        )
    )


def entries(session: Session, actor: Actor, *, page: int = 1, per_page: int = 50) -> tuple[list[AuditEntry], int]:
    """Newest first, one page, and the total count: admins only."""
    require_admin(actor, "read the audit log")
    total = session.scalar(select(func.count(AuditEntry.id))) or 0
    rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).offset((page - 1) * per_page).limit(per_page))
    return list(rows), total
