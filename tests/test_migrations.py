"""Migrations: a database made by the previous head, holding real jobs, upgrades with nothing lost,
and after every upgrade the schema equals the ORM records (core.service.records), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from core.service.db import Base, alembic_config, make_engine
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_url

PREVIOUS_HEAD = "0005"
WHEN = datetime(2026, 11, 27, 12, 0, 0)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    database = create_postgres_database()
    yield postgres_url(database)
    drop_postgres_database(database)


def fill_previous_head(connection: sa.Connection) -> None:
    """A user, a sweep with two jobs (one finished with metrics and an artifact, one queued), a child job
    and a worker, written with the columns the previous head has."""
    connection.execute(sa.text("INSERT INTO users (username, password_hash, created_at) "
                               "VALUES ('boss', 'hash', :at)"), {"at": WHEN})
    connection.execute(sa.text("INSERT INTO sweeps (id, name, kind, base_params, grid, created_at) "
                               "VALUES (1, 'lr sweep', 'train', :base, :grid, :at)"),
                       {"base": json.dumps({"epochs": 2}), "grid": json.dumps({"lr": [0.1, 0.01]}), "at": WHEN})
    job = ("INSERT INTO jobs (id, run_key, origin, kind, status, params, parent_id, sweep_id, data_dir, queue, "
           "attempts, max_attempts, cancel_requested, created_at, progress, best_valid_accuracy) VALUES "
           "(:id, :key, 'web', :kind, :status, :params, :parent, :sweep, '/data', 'gpu', 1, 3, false, :at, :progress, "
           ":best)")
    rows = [
        {"id": 1, "key": "a" * 32, "kind": "train", "status": "succeeded", "params": json.dumps({"lr": 0.1}),
         "parent": None, "sweep": 1, "progress": 1.0, "best": 0.9},
        {"id": 2, "key": "b" * 32, "kind": "train", "status": "queued", "params": json.dumps({"lr": 0.01}),
         "parent": None, "sweep": 1, "progress": 0.0, "best": None},
        {"id": 3, "key": "c" * 32, "kind": "evaluate", "status": "failed", "params": json.dumps({"split": "test"}),
         "parent": 1, "sweep": None, "progress": 0.5, "best": None},
    ]
    for row in rows:
        connection.execute(sa.text(job), {**row, "at": WHEN})
    connection.execute(sa.text("INSERT INTO epoch_metrics (job_id, epoch, train_loss, valid_accuracy, valid_roc_auc) "
                               "VALUES (1, 1, 0.5, 0.8, 0.85), (1, 2, 0.4, 0.9, 0.93)"))
    connection.execute(sa.text("INSERT INTO artifacts (job_id, kind, name, path, size_bytes, sha256, created_at) "
                               "VALUES (1, 'checkpoint', 'best.pt', 'jobs/1/best.pt', 1234, :sha, :at)"),
                       {"sha": "0" * 64, "at": WHEN})
    connection.execute(sa.text("INSERT INTO workers (hostname, queues, pid, started_at, last_seen) "
                               "VALUES ('w1', 'gpu', 42, :at, :at)"), {"at": WHEN})


def schema_differences(engine: sa.Engine) -> list:
    import core.service.records  # noqa: F401  (registers every table on Base.metadata)

    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)


def test_previous_head_with_jobs_upgrades_with_nothing_lost(database_url):
    engine = make_engine(database_url, create=True)
    try:
        command.upgrade(alembic_config(database_url), PREVIOUS_HEAD)
        with engine.begin() as connection:
            fill_previous_head(connection)
        command.upgrade(alembic_config(database_url), "head")
        with engine.connect() as connection:
            jobs = connection.execute(sa.text(
                "SELECT id, run_key, kind, status, parent_id, sweep_id, best_valid_accuracy, priority, description, "
                "submitted_by, retention, stopped_epoch FROM jobs ORDER BY id")).all()
            assert [(j.id, j.run_key[0], j.kind, j.status, j.parent_id, j.sweep_id) for j in jobs] == [
                (1, "a", "train", "succeeded", None, 1), (2, "b", "train", "queued", None, 1),
                (3, "c", "evaluate", "failed", 1, None)]
            assert jobs[0].best_valid_accuracy == pytest.approx(0.9)
            # New columns: normal priority, no notes, the CLI as submitter, the global retention, no early stop.
            assert {(j.priority, j.description, j.submitted_by, j.retention, j.stopped_epoch) for j in jobs} == {
                (1, "", None, None, None)}
            epochs = connection.execute(sa.text(
                "SELECT epoch, valid_accuracy, valid_roc_auc FROM epoch_metrics WHERE job_id = 1 ORDER BY epoch")).all()
            assert [tuple(e) for e in epochs] == [(1, pytest.approx(0.8), pytest.approx(0.85)),
                                                  (2, pytest.approx(0.9), pytest.approx(0.93))]
            assert connection.execute(sa.text("SELECT name, size_bytes FROM artifacts")).all() == [("best.pt", 1234)]
            # Every login could do everything before roles: existing users become admins.
            assert connection.execute(sa.text("SELECT username, role, disabled FROM users")).all() == [
                ("boss", "admin", False)]
            sweep = connection.execute(sa.text("SELECT name, priority, description, early_stopping FROM sweeps")).one()
            assert tuple(sweep) == ("lr sweep", 1, "", None)
            assert connection.execute(sa.text("SELECT hostname, lost_at FROM workers")).all() == [("w1", None)]
        # A user added after the upgrade is a member unless made otherwise.
        with engine.begin() as connection:
            connection.execute(sa.text("INSERT INTO users (username, password_hash, created_at) "
                                       "VALUES ('new', 'hash', :at)"), {"at": WHEN})
            assert connection.scalar(sa.text("SELECT role FROM users WHERE username = 'new'")) == "member"
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def test_downgrade_to_previous_head_and_back(database_url):
    engine = make_engine(database_url, create=True)
    try:
        command.upgrade(alembic_config(database_url), PREVIOUS_HEAD)
        with engine.begin() as connection:
            fill_previous_head(connection)
        command.upgrade(alembic_config(database_url), "head")
        command.downgrade(alembic_config(database_url), PREVIOUS_HEAD)
        with engine.connect() as connection:
            assert connection.scalar(sa.text("SELECT count(*) FROM jobs")) == 3
        command.upgrade(alembic_config(database_url), "head")
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
