"""Shared fixtures. Engineers append fixtures here with small edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# The real C-NMC images (71 of them) that some tests read: LEUKEMIA_REALDATA_DIR, else ../shared beside the clone.
# Absent, those tests are skipped; LEUKEMIA_REQUIRE_REALDATA=1 (what .ci/run sets) makes that a failure.
REALDATA = Path(os.environ.get("LEUKEMIA_REALDATA_DIR") or REPO.parent / "shared" / "realdata" / "cnmc2019")

# Two cores on this machine and in CI: one intra-op thread keeps parallel test
# processes (workers, servers) from fighting over them.
torch.set_num_threads(int(os.environ.get("LEUKEMIA_TEST_THREADS", "1")))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these marks
def pytest_collection_modifyitems(items) -> None:
    """Mark every test with its tiers (services, browser, slow) from what it uses: tests/tiers.py."""
    from tests.tiers import tiers_of

    for item in items:
        for tier in sorted(tiers_of(item)):
            item.add_marker(tier)


def require_realdata() -> None:
    """Skip (or, under LEUKEMIA_REQUIRE_REALDATA=1, fail) the calling test when the real images are absent."""
    if (REALDATA / "labels.csv").is_file():
        return
    missing = (
        f"real C-NMC images not found: put the cnmc2019 folder (labels.csv, images/) at {REALDATA} "
        "or name it in LEUKEMIA_REALDATA_DIR"
    )
    if os.environ.get("LEUKEMIA_REQUIRE_REALDATA") == "1":
        pytest.fail(f"{missing} (LEUKEMIA_REQUIRE_REALDATA=1)", pytrace=False)
    pytest.skip(missing)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    """Every test that reads the real images asks for realdata_dir (directly or through a fixture such as
    release_dir); skipped here rather than in the fixture, so that all of them are one line of the summary."""
    if "realdata_dir" in getattr(item, "fixturenames", ()):
        require_realdata()


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """The 71 real C-NMC images (REALDATA)."""
    require_realdata()
    return REALDATA


# --- job backends (queue engineer): the same tests against PostgreSQL+Redis and the embedded default ---

SERVICE_BACKENDS = ["redis+postgres", "rabbitmq+postgres", "embedded"]


@pytest.fixture(scope="session", params=SERVICE_BACKENDS)
def service_backend(request, tmp_path_factory):
    """Environment for one backend, applied to this process (and passed to worker subprocesses).

    redis+postgres: a fresh database leukemia_test_<random>, dropped afterwards; rabbitmq+postgres: the
    same, with a fresh RabbitMQ virtual host, deleted afterwards; embedded: SQLite and the kombu
    SQLAlchemy broker in a temporary LEUKEMIA_HOME. Short heartbeat and stale times so lost-worker
    tests take seconds."""
    import secrets

    from core.service.db import upgrade_database
    from tests.settings_override import SettingsOverride

    home = tmp_path_factory.mktemp(f"home-{request.param.replace('+', '-')}")
    env = {
        "LEUKEMIA_HOME": str(home),
        "HEARTBEAT_SECONDS": "1",
        "STALE_AFTER_SECONDS": "6",
        "DATABASE_URL": "",
        "BROKER_URL": "",
        "ARTIFACTS_DIR": "",
        "CACHE_DIR": "",
    }
    database = vhost = None
    if request.param in ("redis+postgres", "rabbitmq+postgres"):
        database = create_postgres_database()
        env["DATABASE_URL"] = postgres_url(database)
    if request.param == "redis+postgres":
        # A random Redis database: parallel test runs on one machine must not take each other's messages.
        env["BROKER_URL"] = f"redis://127.0.0.1:6379/{1 + secrets.randbelow(15)}"
    elif request.param == "rabbitmq+postgres":
        vhost = create_rabbitmq_vhost()  # the same isolation: a virtual host of this session's own
        env["BROKER_URL"] = rabbitmq_url(vhost)
    override = SettingsOverride()
    override(**{key: value or None for key, value in env.items()})
    upgrade_database()
    yield {"name": request.param, "env": {k: v for k, v in env.items() if v}, "home": home}
    override.undo()
    if database:
        drop_postgres_database(database)
    if vhost:
        delete_rabbitmq_vhost(vhost)


def create_postgres_database() -> str:
    """A fresh, empty database leukemia_test_<random> on the local PostgreSQL; returns its name."""
    import secrets

    import psycopg

    database = f"leukemia_test_{secrets.token_hex(4)}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    return database


def postgres_url(database: str) -> str:
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"


def drop_postgres_database(database: str) -> None:
    import psycopg

    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def rabbitmqctl(*args: str) -> str:
    """Run `rabbitmqctl ARGS` against the local node (the management plugin is not enabled here); its output."""
    import shutil
    import subprocess

    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: the rabbitmq+postgres backend needs the local RabbitMQ (127.0.0.1:5672)")
    done = subprocess.run(["rabbitmqctl", *args], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode:
        pytest.fail(f"rabbitmqctl {' '.join(args)} failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def create_rabbitmq_vhost() -> str:
    """A fresh virtual host leukemia_test_<random> on the local RabbitMQ, open to guest; returns its name."""
    import secrets

    vhost = f"leukemia_test_{secrets.token_hex(4)}"
    rabbitmqctl("add_vhost", vhost)
    rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    return vhost


def rabbitmq_url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


def delete_rabbitmq_vhost(vhost: str) -> None:
    """Delete the virtual host with its queues, messages and connections."""
    rabbitmqctl("delete_vhost", vhost)


# --- training/prediction engineer ---


@pytest.fixture
def settings_override():
    """Change this process's settings for one test: settings_override(NAME="value", OTHER=None), re-read at once
    and undone at teardown (tests/settings_override.py); the one place tests touch the settings' caches."""
    from tests.settings_override import SettingsOverride

    override = SettingsOverride()
    yield override
    override.undo()


@pytest.fixture
def isolated_home(tmp_path, settings_override) -> Path:
    """A fresh LEUKEMIA_HOME (so caches, database and artifacts) for one test."""
    home = tmp_path / "leukemia-home"
    settings_override(LEUKEMIA_HOME=str(home), CACHE_DIR=None, ARTIFACTS_DIR=None, DATABASE_URL=None, BROKER_URL=None)
    return home


# --- data engineer ---


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic lab-layout folder (96 train, 32 valid, 24 test, 48 px, seed 0); treat it as read-only."""
    from core.engine.data.synth import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("synth") / "data"
    write_synthetic_dataset(folder, train=96, valid=32, test=24, image_size=48, seed=0)
    return folder


# --- web (dashboard engineer): the app on its own SQLite database and embedded broker ---

WEB_API_TOKEN = "test-api-token"
WEB_ADMIN = ("alice", "wonderland-42")


@pytest.fixture()
def app(request, tmp_path, settings_override):
    """The dashboard on a fresh LEUKEMIA_HOME under tmp_path (SQLite + embedded broker); data root tmp_path/data.

    `@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)` runs a test on a fresh
    PostgreSQL database as well (its column types differ: 32-bit ids, no NUL in text)."""
    from web import create_app
    from web.auth import prepare_database

    (tmp_path / "data").mkdir()
    database = create_postgres_database() if getattr(request, "param", "sqlite") == "postgresql" else None
    settings_override(
        LEUKEMIA_HOME=str(tmp_path / "home"),
        DATA_ROOTS=str(tmp_path / "data"),
        ADMIN_USERNAME=WEB_ADMIN[0],
        ADMIN_PASSWORD=WEB_ADMIN[1],
        API_TOKEN=WEB_API_TOKEN,
        SECRET_KEY="test-secret",
        DATABASE_URL=postgres_url(database) if database else None,
        BROKER_URL=None,
        ARTIFACTS_DIR=None,
        CACHE_DIR=None,
    )
    prepare_database()  # the explicit step (`leukemia migrate`): creating the app writes nothing
    yield settings_override.follow(create_app(test_config={"TESTING": True}))
    settings_override.undo()  # the engines let go of the database before it is dropped
    if database:
        drop_postgres_database(database)


@pytest.fixture()
def client(app):
    return app.test_client()


@pytest.fixture()
def folder_path(client, tmp_path) -> str:
    """A synthetic lab-layout folder under the app's data root, registered through the API; its stored path."""
    from tests.web_helpers import synthetic_folder

    path = synthetic_folder(tmp_path / "data")
    response = client.post(
        "/api/data-folders", json={"path": str(path), "name": "synth"}, headers={"Authorization": f"Bearer {WEB_API_TOKEN}"}
    )
    assert response.status_code == 201, response.json
    assert response.json["report"]["ok"] is True and response.json["report"]["layout"] == "lab"
    return response.json["path"]


@pytest.fixture()
def runner(app):
    return app.test_cli_runner()


@pytest.fixture(scope="session")
def release_dir(tmp_path_factory, realdata_dir) -> Path:
    """A download folder holding a small C-NMC 2019 release tree (C-NMC_Leukemia/...) built from the
    real images (see tests/release_helpers.py); read-only, as a shared download often is."""
    from tests.release_helpers import build_release, make_read_only

    download = tmp_path_factory.mktemp("download")
    build_release(realdata_dir, download / "C-NMC_Leukemia")
    make_read_only(download)
    yield download
    from tests.release_helpers import make_writable

    make_writable(download)  # so pytest can remove it


# --- artifact store (issue 24): a real S3-compatible server, like Redis and PostgreSQL ---


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """`rclone serve s3` over a temporary folder for the session (tests/s3_server.py); a test takes a bucket."""
    from tests.s3_server import start_s3_server, stop_s3_server

    server = start_s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    stop_s3_server(server)


@pytest.fixture()
def s3_store_env(s3_server, settings_override):
    """This process's artifact store is a fresh bucket of the S3 server (ARTIFACTS_URL and AWS credentials set,
    settings re-read); yields the bucket's name."""
    bucket = s3_server.new_bucket()
    settings_override(**s3_server.settings(bucket))
    return bucket
