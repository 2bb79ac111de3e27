"""Shared fixtures. Engineers append fixtures here with small edits."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata" / "cnmc2019"

# Two cores on this machine and in CI: one intra-op thread keeps parallel test
# processes (workers, servers) from fighting over them.
torch.set_num_threads(int(os.environ.get("LEUKEMIA_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def realdata_dir() -> Path:
    """The 71 real C-NMC images (../shared/realdata/cnmc2019)."""
    if not (REALDATA / "labels.csv").is_file():
        pytest.fail(f"real C-NMC images not found at {REALDATA}; CI must place shared/ beside the clone")
    return REALDATA


# --- job backends (queue engineer): the same tests against PostgreSQL+Redis and the embedded default ---

SERVICE_BACKENDS = ["redis+postgres", "embedded"]


@pytest.fixture(scope="session", params=SERVICE_BACKENDS)
def service_backend(request, tmp_path_factory):
    """Environment for one backend, applied to this process (and passed to worker subprocesses).

    redis+postgres: a fresh database leukemia_test_<random>, dropped afterwards; embedded:
    SQLite and the kombu SQLAlchemy broker in a temporary LEUKEMIA_HOME. Short heartbeat and
    stale times so lost-worker tests take seconds."""
    import secrets

    import psycopg

    from core.db import reset_engines, upgrade_database
    from core.settings import get_settings

    home = tmp_path_factory.mktemp(f"home-{request.param.replace('+', '-')}")
    env = {"LEUKEMIA_HOME": str(home), "HEARTBEAT_SECONDS": "1", "STALE_AFTER_SECONDS": "6",
           "DATABASE_URL": "", "BROKER_URL": "", "ARTIFACTS_DIR": "", "CACHE_DIR": ""}
    database = None
    if request.param == "redis+postgres":
        database = f"leukemia_test_{secrets.token_hex(4)}"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        env["BROKER_URL"] = "redis://127.0.0.1:6379/0"
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update({k: v for k, v in env.items() if v})
    for key in [k for k, v in env.items() if not v]:
        os.environ.pop(key, None)
    get_settings.cache_clear()
    reset_engines()
    upgrade_database()
    yield {"name": request.param, "env": {k: v for k, v in env.items() if v}, "home": home}
    reset_engines()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    if database:
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
