"""Alembic environment: the URL comes from core.service.db.alembic_config (settings), never from an ini file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import text

import core.service.records  # noqa: F401  (registers every table on Base.metadata)
from core.service.db import Base, make_engine

target_metadata = Base.metadata
# PostgreSQL advisory lock key ("leuk"), held by the migrating transaction: processes that start together
# (a web and its workers) migrate one after another, and the later ones find the schema already new.
MIGRATION_LOCK = 0x6C65756B


def run_migrations_offline() -> None:
    """Emit SQL without a connection (`alembic upgrade --sql`)."""
    context.configure(url=context.config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply migrations on a connection of our own engine (same SQLite pragmas as the app)."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"), create=True)
    try:
        with engine.connect() as connection:
            _run(connection)
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    # render_as_batch: SQLite cannot ALTER most things; batch mode recreates the table. transactional_ddl: every
    # pending migration in one transaction on SQLite too (Alembic would give each its own, reading the schema's
    # version outside them): it is BEGIN IMMEDIATE (core.service.db), so processes starting together migrate one
    # after another, and one that fails leaves the schema as it found it.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True, transactional_ddl=True)
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Recreating a table that others reference (jobs, users) is a DROP TABLE, which foreign keys
        # refuse while rows point at it. The pragma only takes effect outside a transaction, so it is
        # set on the driver's connection before Alembic begins one; the keys are checked afterwards.
        _driver(connection).execute("PRAGMA foreign_keys=OFF")
    try:
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Before the schema's version is read; released when the transaction ends. SQLite needs none:
                # its transaction, BEGIN IMMEDIATE, lets one writer in at a time.
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {broken[:5]}")
    finally:
        if sqlite:
            _driver(connection).execute("PRAGMA foreign_keys=ON")


def _driver(connection):  # type: ignore[no-untyped-def]
    """The sqlite3 connection under SQLAlchemy's, for pragmas that must run outside a transaction."""
    return connection.connection.driver_connection


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
