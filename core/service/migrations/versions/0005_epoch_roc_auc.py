"""epoch_metrics.valid_roc_auc: the validation split's ROC-AUC of P(ALL) per epoch

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 07:35:00

Null for epochs recorded before it (and without a validation split, or with one class only).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("epoch_metrics", schema=None) as batch_op:
        batch_op.add_column(sa.Column("valid_roc_auc", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("epoch_metrics", schema=None) as batch_op:
        batch_op.drop_column("valid_roc_auc")
