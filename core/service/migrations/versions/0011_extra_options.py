"""jobs.extra_options, sweeps.extra_options: the submit-time options without a column of their own

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-12 09:00:00

Priority, notes, tags and retention keep their columns (and tag rows); any other option of
core.service.job_options.JobOptions is stored here, as JSON, so a new option needs no migration.
Null for rows from before it: no other option set.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLES = ("jobs", "sweeps")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("extra_options", sa.JSON(), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        # SQLite rebuilds the table to drop a column: it stays AUTOINCREMENT (migration 0008).
        with op.batch_alter_table(table, table_kwargs={"sqlite_autoincrement": True},
                                  reflect_kwargs={"resolve_fks": False}) as batch_op:
            batch_op.drop_column("extra_options")
