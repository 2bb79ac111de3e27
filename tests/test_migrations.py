"""Migrations: a database made by the previous head, holding real jobs, upgrades with nothing lost,
and after every upgrade the schema equals the ORM records (core.service.records), on SQLite and PostgreSQL.
A database and run folders from before run keys (revision 0001, jobs/<id>) keep working after the upgrade."""

from __future__ import annotations

import hashlib
import json
import random
from datetime import datetime
from pathlib import Path

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
    connection.execute(
        sa.text("INSERT INTO users (username, password_hash, created_at) VALUES ('boss', 'hash', :at)"), {"at": WHEN}
    )
    connection.execute(
        sa.text(
            "INSERT INTO sweeps (id, name, kind, base_params, grid, created_at) "
            "VALUES (1, 'lr sweep', 'train', :base, :grid, :at)"
        ),
        {"base": json.dumps({"epochs": 2}), "grid": json.dumps({"lr": [0.1, 0.01]}), "at": WHEN},
    )
    job = (
        "INSERT INTO jobs (id, run_key, origin, kind, status, params, parent_id, sweep_id, data_dir, queue, "
        "attempts, max_attempts, cancel_requested, created_at, progress, best_valid_accuracy) VALUES "
        "(:id, :key, 'web', :kind, :status, :params, :parent, :sweep, '/data', 'gpu', 1, 3, false, :at, :progress, "
        ":best)"
    )
    rows = [
        {
            "id": 1,
            "key": "a" * 32,
            "kind": "train",
            "status": "succeeded",
            "params": json.dumps({"lr": 0.1}),
            "parent": None,
            "sweep": 1,
            "progress": 1.0,
            "best": 0.9,
        },
        {
            "id": 2,
            "key": "b" * 32,
            "kind": "train",
            "status": "queued",
            "params": json.dumps({"lr": 0.01}),
            "parent": None,
            "sweep": 1,
            "progress": 0.0,
            "best": None,
        },
        {
            "id": 3,
            "key": "c" * 32,
            "kind": "evaluate",
            "status": "failed",
            "params": json.dumps({"split": "test"}),
            "parent": 1,
            "sweep": None,
            "progress": 0.5,
            "best": None,
        },
    ]
    for row in rows:
        connection.execute(sa.text(job), {**row, "at": WHEN})
    connection.execute(
        sa.text(
            "INSERT INTO epoch_metrics (job_id, epoch, train_loss, valid_accuracy, valid_roc_auc) "
            "VALUES (1, 1, 0.5, 0.8, 0.85), (1, 2, 0.4, 0.9, 0.93)"
        )
    )
    connection.execute(
        sa.text(
            "INSERT INTO artifacts (job_id, kind, name, path, size_bytes, sha256, created_at) "
            "VALUES (1, 'checkpoint', 'best.pt', 'jobs/1/best.pt', 1234, :sha, :at)"
        ),
        {"sha": "0" * 64, "at": WHEN},
    )
    connection.execute(
        sa.text("INSERT INTO workers (hostname, queues, pid, started_at, last_seen) VALUES ('w1', 'gpu', 42, :at, :at)"),
        {"at": WHEN},
    )


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
            jobs = connection.execute(
                sa.text(
                    "SELECT id, run_key, kind, status, parent_id, sweep_id, best_valid_accuracy, priority, description, "
                    "submitted_by, retention, stopped_epoch, extra_options FROM jobs ORDER BY id"
                )
            ).all()
            assert [(j.id, j.run_key[0], j.kind, j.status, j.parent_id, j.sweep_id) for j in jobs] == [
                (1, "a", "train", "succeeded", None, 1),
                (2, "b", "train", "queued", None, 1),
                (3, "c", "evaluate", "failed", 1, None),
            ]
            assert jobs[0].best_valid_accuracy == pytest.approx(0.9)
            # New columns: normal priority, no notes, the CLI as submitter, the global retention, no early stop, no
            # other option.
            assert {(j.priority, j.description, j.submitted_by, j.retention, j.stopped_epoch, j.extra_options) for j in jobs} == {
                (1, "", None, None, None, None)
            }
            epochs = connection.execute(
                sa.text("SELECT epoch, valid_accuracy, valid_roc_auc FROM epoch_metrics WHERE job_id = 1 ORDER BY epoch")
            ).all()
            assert [tuple(e) for e in epochs] == [
                (1, pytest.approx(0.8), pytest.approx(0.85)),
                (2, pytest.approx(0.9), pytest.approx(0.93)),
            ]
            assert connection.execute(sa.text("SELECT name, size_bytes FROM artifacts")).all() == [("best.pt", 1234)]
            # Every login could do everything before roles: existing users become admins.
            assert connection.execute(sa.text("SELECT username, role, disabled FROM users")).all() == [("boss", "admin", False)]
            sweep = connection.execute(
                sa.text("SELECT name, priority, description, early_stopping, extra_options FROM sweeps")
            ).one()
            assert tuple(sweep) == ("lr sweep", 1, "", None, None)
            assert connection.execute(sa.text("SELECT hostname, lost_at FROM workers")).all() == [("w1", None)]
            # The metrics' counters start at what the rows held: the jobs ended so far, per status and kind.
            assert sorted(connection.execute(sa.text("SELECT event, label, count FROM event_counts")).all()) == [
                ("job.failed", "evaluate", 1),
                ("job.succeeded", "train", 1),
            ]
        # A user added after the upgrade is a member unless made otherwise.
        with engine.begin() as connection:
            connection.execute(
                sa.text("INSERT INTO users (username, password_hash, created_at) VALUES ('new', 'hash', :at)"), {"at": WHEN}
            )
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


# --- a database and run folders from before run keys (revision 0001, e.g. commit 4397d1e) -----------

OLD_TOKEN = "old-database-token"


def old_checkpoint() -> dict:
    """best.pt as the code of revision 0001 saved it (training._checkpoint): the whole run state, no
    early_stopping or operating_threshold, history rows without valid_roc_auc."""
    import numpy as np
    import torch

    from core.engine.model.resnet import build_model

    model = build_model("resnet18", num_classes=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    name, keys, position, has_gauss, gauss = np.random.get_state()
    version, python_state, python_gauss = random.getstate()
    record = {
        "epoch": 1,
        "train_loss": 0.86,
        "train_accuracy": 0.375,
        "valid_loss": 0.72,
        "valid_accuracy": 0.25,
        "valid_balanced_accuracy": 0.5,
        "valid_f1": 0.1,
        "confusion": [[1, 0], [3, 0]],
        "lr": 0.001,
        "seconds": 3.3,
        "images_per_s": 2.5,
    }
    return {
        "format": 1,
        "arch": "resnet18",
        "num_classes": 2,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0).state_dict(),
        "scaler": None,
        "epoch": 1,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": [],
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(gauss)],
            "python": [version, list(python_state), python_gauss],
        },
        "params": {
            "kind": "train",
            "data_dir": "/data/synth",
            "arch": "resnet18",
            "epochs": 1,
            "batch_size": 4,
            "optimizer": "adam",
            "lr": 0.001,
            "schedule": "step",
            "lr_step_epoch": None,
            "lr_gamma": 0.1,
            "warmup_epochs": 0,
            "weight_decay": 0.0,
            "momentum": 0.9,
            "class_weights": "1.2,1.0",
            "augment": True,
            "image_size": 32,
            "split": "train",
            "seed": 0,
            "device": "cpu",
            "amp": True,
            "compile": False,
            "num_workers": 0,
        },
        "mean": [0.5, 0.4, 0.6],
        "std": [0.2, 0.2, 0.2],
        "image_size": 32,
        "best_accuracy": 0.25,
        "best_epoch": 1,
        "history": [record],
    }


def write_old_run_folders(artifacts: Path) -> dict[int, list[tuple[str, Path]]]:
    """jobs/1 (a train job's best.pt and metrics.csv) and jobs/2 (an evaluate job's evaluation.json and
    confusion.csv), each file as revision 0001's worker and core wrote it; per job, (artifact kind, file)."""
    import torch

    train, evaluate = artifacts / "jobs" / "1", artifacts / "jobs" / "2"
    train.mkdir(parents=True)
    evaluate.mkdir(parents=True)
    torch.save(old_checkpoint(), train / "best.pt")
    (train / "metrics.csv").write_text("epoch,train_loss,train_accuracy,valid_loss,valid_accuracy\n1,0.86,0.375,0.72,0.25\n")
    evaluation = {
        "checkpoint": str(train / "best.pt"),
        "csv": "/data/synth/valid.csv",
        "tta": False,
        "accuracy": 0.25,
        "balanced_accuracy": 0.5,
        "weighted_f1": 0.1,
        "confusion": [[1, 0], [3, 0]],
        "count": 4,
    }
    (evaluate / "evaluation.json").write_text(json.dumps(evaluation, indent=2))
    (evaluate / "confusion.csv").write_text("true\\predicted,0,1\n0,1,0\n1,3,0\n")
    return {
        1: [("checkpoint", train / "best.pt"), ("metrics", train / "metrics.csv")],
        2: [("evaluation", evaluate / "evaluation.json"), ("evaluation", evaluate / "confusion.csv")],
    }


def fill_revision_0001(connection: sa.Connection, files: dict[int, list[tuple[str, Path]]], artifacts: Path) -> None:
    """The rows revision 0001 wrote for those folders (artifact paths relative to ARTIFACTS_DIR), and a
    finetune still queued at the upgrade, of a checkpoint file given by path (in jobs/22, not jobs/2)."""
    job = (
        "INSERT INTO jobs (id, kind, status, params, parent_id, data_dir, queue, attempts, max_attempts, "
        "cancel_requested, created_at, finished_at, progress) VALUES (:id, :kind, :status, :params, :parent, "
        "'/data/synth', 'gpu', 1, 3, false, :at, :finished, :progress)"
    )
    for row in (
        {"id": 1, "kind": "train", "status": "succeeded", "parent": None, "finished": WHEN, "progress": 1.0},
        {"id": 2, "kind": "evaluate", "status": "succeeded", "parent": 1, "finished": WHEN, "progress": 1.0},
        {"id": 3, "kind": "finetune", "status": "queued", "parent": None, "finished": None, "progress": 0.0},
    ):
        params = {"data_dir": "/data/synth"}
        if row["id"] == 3:
            params["checkpoint"] = str(artifacts / "jobs" / "22" / "best.pt")
        connection.execute(sa.text(job), {**row, "params": json.dumps(params), "at": WHEN})
    for job_id, recorded in files.items():
        for kind, path in recorded:
            connection.execute(
                sa.text(
                    "INSERT INTO artifacts (job_id, kind, name, path, size_bytes, sha256, created_at) "
                    "VALUES (:job, :kind, :name, :path, :size, :sha, :at)"
                ),
                {
                    "job": job_id,
                    "kind": kind,
                    "name": path.name,
                    "path": path.relative_to(artifacts).as_posix(),
                    "size": path.stat().st_size,
                    "sha": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "at": WHEN,
                },
            )


@pytest.fixture
def old_installation(database_url, tmp_path, settings_override):
    """A database at revision 0001 with its run folders jobs/1 and jobs/2, upgraded to head by
    `leukemia migrate`'s step; this process's settings point at it (until the test ends). Returns ARTIFACTS_DIR."""
    from web.auth import prepare_database

    home = tmp_path / "home"
    artifacts = home / "artifacts"
    settings_override(
        LEUKEMIA_HOME=str(home),
        DATABASE_URL=database_url,
        API_TOKEN=OLD_TOKEN,
        SECRET_KEY="test-secret",
        BROKER_URL=None,
        ARTIFACTS_DIR=None,
        CACHE_DIR=None,
        ADMIN_USERNAME=None,
        ADMIN_PASSWORD=None,
    )
    files = write_old_run_folders(artifacts)
    engine = make_engine(database_url, create=True)
    try:
        command.upgrade(alembic_config(database_url), "0001")
        with engine.begin() as connection:
            fill_revision_0001(connection, files, artifacts)
    finally:
        engine.dispose()
    prepare_database()
    return artifacts


def test_jobs_from_before_run_keys_keep_their_run_folders_after_the_upgrade(old_installation):
    from core.engine.model.checkpoint import load_checkpoint, model_from_checkpoint
    from core.engine.run_folder.resolver import claim_run_folder
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.disk import folder_bytes
    from core.service.run_folders import job_run_folder
    from web import compare as compare_table
    from web import create_app

    train_dir, evaluate_dir = old_installation / "jobs" / "1", old_installation / "jobs" / "2"
    with get_sessionmaker().begin() as session:
        # A finetune or evaluate with job 1 as parent reads its best.pt, which the current code loads.
        best = jobs.job_checkpoint(session, 1, "best")
        assert best == train_dir / "best.pt"
        model_from_checkpoint(load_checkpoint(best, expected_arch="resnet18"), best)
        assert [job_run_folder(jobs.get_job(session, job_id)) for job_id in (1, 2)] == [train_dir, evaluate_dir]
        queued = jobs.get_job(session, 3)  # nothing recorded: it starts in the folder of its run key
        assert job_run_folder(queued).name == f"3-{queued.run_key}"
        legacy_run_key = jobs.get_job(session, 1).run_key
    claim_run_folder(train_dir, legacy_run_key, legacy=True)  # a retried old job takes its own folder over
    assert (train_dir / ".run_key").read_text().strip() == legacy_run_key
    (train_dir / ".run_key").unlink()

    client = create_app(test_config={"TESTING": True}).test_client()
    auth = {"Authorization": f"Bearer {OLD_TOKEN}"}
    results = client.get("/api/jobs/2/results", headers=auth)
    assert results.status_code == 200, results.get_data(as_text=True)
    evaluation = results.json["evaluation"]
    assert (evaluation["accuracy"], evaluation["weighted_f1"], evaluation["confusion"], evaluation["count"]) == (
        0.25,
        0.1,
        [[1, 0], [3, 0]],
        4,
    )
    assert (evaluation["threshold"], evaluation["clinical"], evaluation["checkpoints"]) == (None, None, [str(best)])
    with get_sessionmaker().begin() as session:  # the compare table shows it too: what it has, and "—" for the rest
        old_evaluation = jobs.get_job(session, 2)
        [compared] = compare_table.compared_runs(session, [old_evaluation])
    assert compared["measures"]["accuracy"] == 0.25 and compared["measures"]["sensitivity"] is None
    assert compared["measured_on"] == "valid.csv"  # from the old evaluation.json (its row has no csv), no threshold

    sizes = {job_id: folder_bytes(folder) for job_id, folder in ((1, train_dir), (2, evaluate_dir))}
    assert sizes[1] > 40_000_000 and sizes[2] > 0
    disk = client.get("/api/disk", headers=auth).json
    assert (disk["jobs_bytes"], disk["measured_jobs"], disk["unmeasured_jobs"]) == (sizes[1] + sizes[2], 2, 1)

    deleted = client.delete("/api/jobs/2", headers=auth)  # queued job 3 reads jobs/22/best.pt, nothing of jobs/2
    assert deleted.status_code == 200, deleted.json
    assert deleted.json["freed_bytes"] == sizes[2] and not evaluate_dir.exists()


# --- several processes starting at once (issue 23: web and worker on an empty PostgreSQL) ----------


def upgrade_in_a_process(url: str, start, outcomes) -> None:
    """What a starting web or worker does first, in a process of its own, at the moment the others do: puts "ok",
    or the error it met, on outcomes. Each process pauses (0.3 s) before each migration step, as on a busy
    machine, so that unless they take turns another reads the schema's version while one is half-way."""
    import time

    from alembic.runtime.migration import MigrationContext

    from core.service.db import upgrade_database

    made = MigrationContext.__init__

    def paced(context, *args, **kwargs):  # type: ignore[no-untyped-def]
        made(context, *args, **kwargs)
        steps = context._migrations_fn  # Alembic's generator of the steps from the version it read
        if steps is not None:

            def each_after_a_pause(heads, migration_context):  # type: ignore[no-untyped-def]
                for step in steps(heads, migration_context):
                    time.sleep(0.3)
                    yield step

            context._migrations_fn = each_after_a_pause

    MigrationContext.__init__ = paced  # type: ignore[method-assign]
    start.wait(timeout=120)
    try:
        upgrade_database(url)
    except Exception as error:  # noqa: BLE001  (reported to the test)
        outcomes.put(f"{type(error).__name__}: {error}".splitlines()[0])
        return
    outcomes.put("ok")


# Slow tier (CI): four spawned interpreters, 12 s on SQLite; the README's quick tier stays under 10 minutes.
@pytest.mark.slow
def test_processes_starting_together_on_an_empty_database_all_migrate_it_once(database_url):
    """Four processes run the migrations on one empty database at the same moment (a web and workers started
    together): each succeeds, and the schema is the newest once, equal to the ORM records."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    start, outcomes = spawn.Barrier(4), spawn.Queue()
    processes = [spawn.Process(target=upgrade_in_a_process, args=(database_url, start, outcomes)) for _ in range(4)]
    for process in processes:
        process.start()
    results = [outcomes.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert results == ["ok"] * 4
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all() == [alembic_head()]
        assert schema_differences(engine) == []
    finally:
        engine.dispose()


def alembic_head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


# --- ids never reused (issue 23: on SQLite a deleted job's id went to the next job) ------------------


# The tables whose ids are shown, linked, audited or sent, each with a row of the fewest columns it needs.
def id_rows(n: int) -> dict[str, dict]:
    at = {"created_at": WHEN}
    return {
        "users": {"username": f"u{n}", "password_hash": "h", "role": "member", "disabled": False, **at},
        "sweeps": {"name": "s", "kind": "train", "base_params": "{}", "grid": "{}", "priority": 1, "description": "", **at},
        "cross_validations": {"name": "cv", "data_dir": "/d", "scheme": "k", "base_params": "{}", "folds": "[]", **at},
        "jobs": {
            "run_key": f"{n:032d}",
            "legacy_run_dir": False,
            "origin": "cli",
            "kind": "train",
            "status": "queued",
            "params": "{}",
            "data_dir": "/d",
            "queue": "gpu",
            "attempts": 0,
            "max_attempts": 3,
            "cancel_requested": False,
            "progress": 0.0,
            "priority": 1,
            "description": "",
            **at,
        },
        "api_tokens": {"user_id": 1, "name": "t", "token_hash": f"{n:064d}", "prefix": "lk_", **at},
        "webhooks": {"url": "https://x.example/", "secret": "s", "events": "[]", "enabled": True, **at},
        "webhook_deliveries": {"webhook_id": 1, "event": "job.failed", "body": "{}", "status": "pending", "attempts": 0, **at},
        "audit_log": {"at": WHEN, "username": "cli:x", "action": "job.submit", "target_type": "job"},
        "data_folders": {"name": f"f{n}", "path": f"/d/{n}", "registered_at": WHEN},
        "artifacts": {
            "job_id": 1,
            "kind": "metrics",
            "name": f"a{n}",
            "path": "jobs/1/a",
            "size_bytes": 1,
            "sha256": "0" * 64,
            **at,
        },
    }


ID_TABLES = list(id_rows(0))


def insert(connection: sa.Connection, table: str, n: int) -> int:
    row = id_rows(n)[table]
    columns = ", ".join(row)
    values = ", ".join(f":{name}" for name in row)
    return connection.execute(sa.text(f"INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING id"), row).scalar_one()


def fill_ids(engine: sa.Engine) -> dict[str, int]:
    """Three rows in each table (the first user, job and webhook are what the others point at); the highest of each
    deleted, as a user deletes a job, a token or a webhook. Returns the deleted ids."""
    deleted = {}
    with engine.begin() as connection:
        for table in ID_TABLES:
            ids = [insert(connection, table, n) for n in range(1, 4)]
            connection.execute(sa.text(f"DELETE FROM {table} WHERE id = :id"), {"id": ids[-1]})
            deleted[table] = ids[-1]
    return deleted


def assert_new_ids_above(engine: sa.Engine, deleted: dict[str, int]) -> None:
    with engine.begin() as connection:
        made = {table: insert(connection, table, 100) for table in ID_TABLES}
    assert {table: made[table] > deleted[table] for table in ID_TABLES} == dict.fromkeys(ID_TABLES, True), (made, deleted)


def test_an_id_is_never_given_to_a_second_row(database_url):
    """After the highest job, sweep, user, token, webhook, delivery, audit row, ... is deleted, the next row gets a new
    id (SQLite reused it without AUTOINCREMENT: the audit log named two jobs "job 7", a receiver saw delivery 1 twice)."""
    engine = make_engine(database_url, create=True)
    try:
        command.upgrade(alembic_config(database_url), "head")
        assert_new_ids_above(engine, fill_ids(engine))
    finally:
        engine.dispose()


def rows(connection: sa.Connection, table: str) -> list[dict]:
    return [dict(row._mapping) for row in connection.execute(sa.text(f"SELECT * FROM {table} ORDER BY id"))]


def test_a_database_from_0007_gives_new_ids_after_the_upgrade(database_url):
    """A database made at revision 0007 and used (rows added; a job, a sweep, a cross-validation and a webhook
    deleted, with the audit rows the service writes) keeps every row through the upgrade, and then gives each
    table ids above any it had handed out: above its rows, and on SQLite above every id the audit log names (the
    deleted ones, the jobs of a deleted sweep or cross-validation, a test's delivery). PostgreSQL's sequences never
    handed an id out twice, so there the upgrade changes nothing."""
    engine = make_engine(database_url, create=True)
    try:
        command.upgrade(alembic_config(database_url), "0007")
        with engine.begin() as connection:
            for table in ID_TABLES:
                assert [insert(connection, table, n) for n in range(1, 4)] == [1, 2, 3]
            for action, target_type, table, detail in (
                ("job.delete", "job", "jobs", {"freed_bytes": 0}),
                ("sweep.delete", "sweep", "sweeps", {"freed_bytes": 0, "jobs": [57, 58]}),
                ("cross_validation.delete", "cross_validation", "cross_validations", {"jobs": [59], "name": "cv"}),
                ("webhook.delete", "webhook", "webhooks", {"url": "https://x.example/"}),
            ):
                connection.execute(sa.text(f"DELETE FROM {table} WHERE id = 3"))
                connection.execute(
                    sa.text(
                        "INSERT INTO audit_log (at, username, action, target_type, target_id, detail) "
                        "VALUES (:at, 'cli:x', :action, :type, '3', :detail)"
                    ),
                    {"at": WHEN, "action": action, "type": target_type, "detail": json.dumps(detail)},
                )
            connection.execute(
                sa.text(
                    "INSERT INTO audit_log (at, username, action, target_type, target_id, detail) "
                    "VALUES (:at, 'cli:x', 'webhook.test', 'webhook', '1', :detail)"
                ),
                {"at": WHEN, "detail": json.dumps({"delivery_id": 70})},
            )  # a delivery since removed with its webhook
            before = {table: rows(connection, table) for table in ID_TABLES}
        command.upgrade(alembic_config(database_url), "head")
        with engine.connect() as connection:  # the columns of 0007 (later migrations add some)
            after = {table: [{k: row[k] for k in before[table][0]} for row in rows(connection, table)] for table in ID_TABLES}
            if engine.dialect.name == "sqlite":
                tables = dict(connection.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'table'")).all())
                assert [table for table in ID_TABLES if "AUTOINCREMENT" not in tables[table]] == []
        assert after == before
        assert schema_differences(engine) == []
        known = {"jobs": 59, "webhook_deliveries": 70} if engine.dialect.name == "sqlite" else {}
        assert_new_ids_above(engine, {**dict.fromkeys(ID_TABLES, 3), **known})
        command.downgrade(alembic_config(database_url), "0007")
        command.upgrade(alembic_config(database_url), "head")
        assert schema_differences(engine) == []
    finally:
        engine.dispose()
