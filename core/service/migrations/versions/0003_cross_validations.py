"""cross-validations: a parent record for the fold jobs (jobs.cv_id, jobs.cv_fold)

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 06:30:00
"""

from __future__ import annotations

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('cross_validations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('data_dir', sa.Text(), nullable=False),
    sa.Column('scheme', sa.String(length=200), nullable=False),
    sa.Column('base_params', sa.JSON(), nullable=False),
    sa.Column('folds', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cv_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('cv_fold', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_jobs_cv_id', 'cross_validations', ['cv_id'], ['id'])
        batch_op.create_index('ix_jobs_cv_id', ['cv_id', 'id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_cv_id')
        batch_op.drop_constraint('fk_jobs_cv_id', type_='foreignkey')
        batch_op.drop_column('cv_fold')
        batch_op.drop_column('cv_id')
    op.drop_table('cross_validations')
