"""jobs.attempt_note: how a job's latest attempt started when it was not its first

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 09:00:00

A job taken over from a lost worker, or retried, resumes from its last stored epoch checkpoint, or
starts over at epoch 1 when none was stored. The worker writes which, in words, when the attempt
starts ("attempt 2 on worker-b: no last.pt checkpoint to resume from, so it started over at epoch 1"),
so the job page, the API and `leukemia job` say it after the log tail has moved on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("attempt_note", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("attempt_note")
