"""jobs.run_key (a run folder belongs to one job) and jobs.origin (cli or web)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 06:20:00

run_key: a random UUID per job row, part of the run folder's name and stamped inside it, so a
job id reused after a database reset never adopts an old run. Existing rows get a fresh key each
(their runs in ARTIFACTS_DIR/jobs/<id> are left where they are; a job queued or running at the
upgrade starts its run again in its new folder). origin: who submitted the job; web jobs may read
only files inside DATA_ROOTS.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("run_key", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("origin", sa.String(length=8), nullable=False, server_default="cli"))
    connection = op.get_bind()
    jobs = sa.table("jobs", sa.column("id", sa.Integer), sa.column("run_key", sa.String))
    for (job_id,) in connection.execute(sa.select(jobs.c.id)).fetchall():
        connection.execute(sa.update(jobs).where(jobs.c.id == job_id).values(run_key=uuid.uuid4().hex))
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.alter_column("run_key", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_unique_constraint("uq_jobs_run_key", ["run_key"])


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint("uq_jobs_run_key", type_="unique")
        batch_op.drop_column("origin")
        batch_op.drop_column("run_key")
