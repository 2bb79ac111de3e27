"""jobs.legacy_run_dir: a job run before run keys keeps its run folder ARTIFACTS_DIR/jobs/<id>

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03 08:30:00

Revision 0004 gave every existing job a run key, so its folder name became jobs/<id>-<run_key>,
while its files stayed in jobs/<id>, where they were recorded (artifacts.path). Such a job is found
by those recorded paths, not by looking at the disk (this step may run where the artifacts are not
mounted): any artifact of job N under jobs/N/ marks it. A job with nothing recorded there (queued
at the upgrade, or one that left no file) keeps the folder of its run key.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("legacy_run_dir", sa.Boolean(), nullable=False, server_default=sa.false()))
    connection = op.get_bind()
    artifacts = sa.table("artifacts", sa.column("job_id", sa.Integer), sa.column("path", sa.Text))
    legacy = sorted({job_id for job_id, path in connection.execute(sa.select(artifacts.c.job_id, artifacts.c.path))
                     if path.startswith(f"jobs/{job_id}/")})
    jobs = sa.table("jobs", sa.column("id", sa.Integer), sa.column("legacy_run_dir", sa.Boolean))
    for start in range(0, len(legacy), 500):  # bounded IN lists
        connection.execute(sa.update(jobs).where(jobs.c.id.in_(legacy[start:start + 500])).values(legacy_run_dir=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("legacy_run_dir")
