"""Ids never reused: the SQLite tables whose ids are shown, linked, audited or sent become AUTOINCREMENT

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 09:00:00

Without AUTOINCREMENT SQLite gives a new row max(id) + 1, so the id of a deleted highest row went to the
next row: the audit log named two different jobs "job 7", and a webhook receiver that drops deliveries it
has seen (by X-Leukemia-Delivery) lost the second delivery 1. Each such table is rebuilt with AUTOINCREMENT
(batch mode: a copy, then a rename; rows, indexes and keys kept), and its counter (sqlite_sequence) starts
above every id it is known to have handed out: its rows', and those the audit log names (deleted jobs,
sweeps, users, tokens, webhooks, data folders; the jobs of a deleted sweep or cross-validation; the
deliveries of a test or redelivery). PostgreSQL's sequences never hand an id out twice: nothing to do there.
"""

from __future__ import annotations

import json
from collections import defaultdict

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("users", "sweeps", "cross_validations", "jobs", "artifacts", "data_folders", "api_tokens", "audit_log",
          "webhooks", "webhook_deliveries")
TABLE_OF_TARGET = {"job": "jobs", "sweep": "sweeps", "cross_validation": "cross_validations", "user": "users",
                   "api_token": "api_tokens", "webhook": "webhooks", "data_folder": "data_folders"}
TABLE_OF_DETAIL = {"jobs": "jobs", "delivery_id": "webhook_deliveries", "new_delivery_id": "webhook_deliveries"}


def upgrade() -> None:
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        return
    known = ids_the_audit_log_names(connection)
    for table in TABLES:
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": True},
                                  reflect_kwargs={"resolve_fks": False}):  # the referred tables need no reflecting
            pass
        highest = max(connection.scalar(sa.text(f"SELECT max(id) FROM {table}")) or 0, known[table])
        connection.execute(sa.text("DELETE FROM sqlite_sequence WHERE name = :table"), {"table": table})
        connection.execute(sa.text("INSERT INTO sqlite_sequence (name, seq) VALUES (:table, :seq)"),
                           {"table": table, "seq": highest})


def ids_the_audit_log_names(connection: sa.Connection) -> dict[str, int]:
    """Per table, the highest id an audit row names (as its target, or in its detail); 0 for none."""
    audit = sa.table("audit_log", sa.column("target_type", sa.String), sa.column("target_id", sa.String),
                     sa.column("detail", sa.Text))
    known: dict[str, int] = defaultdict(int)

    def saw(table: str | None, value: object) -> None:
        if table is not None and isinstance(value, (int, str)) and str(value).isdigit():
            known[table] = max(known[table], int(value))

    for target_type, target_id, detail in connection.execute(sa.select(audit.c.target_type, audit.c.target_id,
                                                                       audit.c.detail)):
        saw(TABLE_OF_TARGET.get(target_type), target_id)
        try:
            fields = json.loads(detail) if detail else None
        except ValueError:
            fields = None
        for name, value in (fields.items() if isinstance(fields, dict) else ()):
            for one in value if isinstance(value, list) else [value]:
                saw(TABLE_OF_DETAIL.get(name), one)
    return known


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in reversed(TABLES):
        with op.batch_alter_table(table, recreate="always", table_kwargs={"sqlite_autoincrement": False},
                                  reflect_kwargs={"resolve_fks": False}):
            pass
