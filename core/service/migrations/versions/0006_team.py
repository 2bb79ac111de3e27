"""A team: roles and per-user tokens, the audit log, who submitted a job, priorities, notes and
tags, early stopping, webhooks and their deliveries, retention and disk use

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 09:30:00

Existing users become admins (before this, every login could do everything); existing jobs and
sweeps get priority normal, no submitter (they are shown as submitted from the CLI), no notes or
tags, and the global retention policy.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NORMAL_PRIORITY = "1"  # core.service.records.PRIORITIES["normal"]


def upgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(sa.Column("role", sa.String(length=16), nullable=False, server_default="admin"))
        batch_op.add_column(sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.alter_column("role", existing_type=sa.String(length=16), server_default="member")

    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(), nullable=True),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash", name="uq_api_tokens_token_hash"),
    )
    op.create_index("ix_api_tokens_user_id", "api_tokens", ["user_id"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=150), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("target_type", sa.String(length=32), nullable=False),
        sa.Column("target_id", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("address", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    op.create_index("ix_audit_log_target", "audit_log", ["target_type", "target_id"])

    for table in ("jobs", "sweeps"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("submitted_by", sa.Integer(), nullable=True))
            batch_op.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default=NORMAL_PRIORITY))
            batch_op.add_column(sa.Column("description", sa.Text(), nullable=False, server_default=""))
            batch_op.add_column(sa.Column("retention", sa.String(length=16), nullable=True))
            batch_op.create_foreign_key(f"fk_{table}_submitted_by_users", "users", ["submitted_by"], ["id"],
                                        ondelete="SET NULL")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stopped_epoch", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("stop_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("disk_bytes", sa.BigInteger(), nullable=True))
        batch_op.create_index("ix_jobs_queue_status_priority", ["queue", "status", "priority", "id"])
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.add_column(sa.Column("early_stopping", sa.JSON(), nullable=True))

    for owner in ("job", "sweep"):
        op.create_table(
            f"{owner}_tags",
            sa.Column(f"{owner}_id", sa.Integer(), nullable=False),
            sa.Column("tag", sa.String(length=64), nullable=False),
            sa.ForeignKeyConstraint([f"{owner}_id"], [f"{owner}s.id"], ondelete="CASCADE"),
            sa.PrimaryKeyConstraint(f"{owner}_id", "tag"),
        )
        op.create_index(f"ix_{owner}_tags_tag", f"{owner}_tags", ["tag"])

    op.create_table(
        "webhooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("webhook_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=32), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("response_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["webhook_id"], ["webhooks.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_webhook_deliveries_status_next", "webhook_deliveries", ["status", "next_attempt_at"])
    op.create_index("ix_webhook_deliveries_webhook_id", "webhook_deliveries", ["webhook_id", "id"])

    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lost_at", sa.DateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers", schema=None) as batch_op:
        batch_op.drop_column("lost_at")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")
    op.drop_table("sweep_tags")
    op.drop_table("job_tags")
    with op.batch_alter_table("sweeps", schema=None) as batch_op:
        batch_op.drop_column("early_stopping")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_jobs_queue_status_priority")
        batch_op.drop_column("disk_bytes")
        batch_op.drop_column("stop_reason")
        batch_op.drop_column("stopped_epoch")
    for table in ("jobs", "sweeps"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_constraint(f"fk_{table}_submitted_by_users", type_="foreignkey")
            batch_op.drop_column("retention")
            batch_op.drop_column("description")
            batch_op.drop_column("priority")
            batch_op.drop_column("submitted_by")
    op.drop_table("audit_log")
    op.drop_table("api_tokens")
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("disabled")
        batch_op.drop_column("role")
