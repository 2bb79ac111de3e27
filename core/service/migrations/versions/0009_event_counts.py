"""event_counts: counters of jobs ended, workers lost and webhook attempts that deletes never lower

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 09:00:00

The metrics read every other figure from the rows, so deleting jobs lowered the failed-jobs figure
and Prometheus' increase() miscounted. These counters are kept apart from the rows they count. The
upgrade starts them at what the rows hold now: the jobs ended so far, per kind and status, and the
workers reported lost and not seen since.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    counts = op.create_table(
        "event_counts",
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("event", "label"),
    )
    connection = op.get_bind()
    jobs = sa.table("jobs", sa.column("kind", sa.String), sa.column("status", sa.String))
    ended = connection.execute(sa.select(jobs.c.status, jobs.c.kind, sa.func.count())
                               .where(jobs.c.status.in_(("succeeded", "failed", "cancelled")))
                               .group_by(jobs.c.status, jobs.c.kind)).all()
    workers = sa.table("workers", sa.column("lost_at", sa.DateTime))
    lost = connection.scalar(sa.select(sa.func.count()).select_from(workers).where(workers.c.lost_at.is_not(None)))
    rows = [{"event": f"job.{status}", "label": kind, "count": n} for status, kind, n in ended]
    if lost:
        rows.append({"event": "worker.lost", "label": "", "count": lost})
    if rows:
        op.bulk_insert(counts, rows)


def downgrade() -> None:
    op.drop_table("event_counts")
