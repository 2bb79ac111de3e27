"""Settings: generated secrets are made once, whole, even when processes start together; they and the
SQLite files of the embedded default (password hashes) are readable by their owner alone."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.service.settings import persisted_secret


def test_a_secret_made_by_many_at_once_is_one_complete_value(tmp_path):
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda _: persisted_secret(tmp_path, "api_token"), range(32)))
    values = {value for value, _ in results}
    assert len(values) == 1 and len(values.pop()) >= 32
    assert sum(made_now for _, made_now in results) == 1
    assert stat.S_IMODE((tmp_path / "api_token").stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["api_token"]  # no temporary files left
    assert persisted_secret(tmp_path, "api_token") == (results[0][0], False)


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_embedded_sqlite_files_are_private_like_the_secrets(isolated_home, settings_override):
    from sqlalchemy import text

    from core.service.db import get_engine, upgrade_database
    from worker.celery_app import get_app

    database = isolated_home / "leukemia.db"
    umask = os.umask(0o022)  # the usual umask: what a plain open() would give 0644
    try:
        upgrade_database()
        with get_engine().begin() as connection:  # the pooled connection stays open: -wal and -shm stay
            connection.execute(text("INSERT INTO users (username, password_hash, created_at) VALUES ('a', 'h', '2026-01-01')"))
        files = [database, database.with_name("leukemia.db-wal"), database.with_name("leukemia.db-shm")]
        assert [mode(f) for f in files] == [0o600] * 3
        get_app()  # the embedded broker's file too
        assert mode(isolated_home / "broker.db") == 0o600

        settings_override()  # a database made before this fix (0644) is made private at the next start
        database.chmod(0o644)
        get_engine().connect().close()
        assert mode(database) == 0o600
    finally:
        os.umask(umask)


@pytest.mark.parametrize("command", [["migrate"], ["db", "upgrade"]])
def test_every_start_makes_existing_database_and_broker_files_private(isolated_home, settings_override, command):
    """`leukemia web`, `serve` and `migrate` (their setup step) and a worker (`db upgrade`'s step) make the
    embedded database and broker files private, with their -wal and -shm, however they were left (issue 23:
    `leukemia web` left a 0644 broker.db as it was)."""
    import sqlite3
    from contextlib import closing

    from click.testing import CliRunner

    from leukemia.cli import main

    settings_override(API_TOKEN="t")
    umask = os.umask(0o022)
    isolated_home.mkdir()
    try:
        files = []
        for name in ("leukemia.db", "broker.db"):
            database = isolated_home / name
            with closing(sqlite3.connect(database)) as connection:  # a file as an older version or a copy left it
                connection.execute("CREATE TABLE left_here (x)")
            database.chmod(0o644)
            for suffix in ("-wal", "-shm"):
                database.with_name(name + suffix).write_bytes(b"")
                database.with_name(name + suffix).chmod(0o644)
            files += [database, database.with_name(name + "-wal"), database.with_name(name + "-shm")]
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 0, result.output
        left = [file for file in files if file.exists()]  # SQLite removes a -wal and -shm when its last connection closes
        assert {file.name: mode(file) for file in left} == {file.name: 0o600 for file in left}
        assert {"leukemia.db", "broker.db", "broker.db-wal", "broker.db-shm"} <= {file.name for file in left}
    finally:
        os.umask(umask)


# --- secrets from files (issue 20: compose passes secrets as files, not environment variables) ---


@pytest.fixture()
def clean_settings(settings_override):
    """No secret in the environment, directly or as a file; settings_override sets the test's own."""
    from core.service.settings import SECRET_FILE_SETTINGS, get_settings

    settings_override(**{variable: None for name in SECRET_FILE_SETTINGS for variable in (name.upper(), f"{name.upper()}_FILE")})
    return get_settings


def test_a_secret_is_read_from_the_file_its_FILE_variable_names(tmp_path, clean_settings, settings_override):
    from sqlalchemy.engine import make_url

    (tmp_path / "api_token").write_text("token-from-a-file\n")
    (tmp_path / "postgres_password").write_text("p@ss:word/with%odd chars\n")
    settings_override(
        API_TOKEN_FILE=str(tmp_path / "api_token"),
        DATABASE_PASSWORD_FILE=str(tmp_path / "postgres_password"),
        DATABASE_URL="postgresql+psycopg://leukemia@postgres:5432/leukemia",
    )
    settings = clean_settings()
    assert settings.api_token == "token-from-a-file"
    url = make_url(settings.resolved_database_url)  # the password goes into the URL escaped, whatever it holds
    assert (url.username, url.password, url.host, url.database) == (
        "leukemia",
        "p@ss:word/with%odd chars",
        "postgres",
        "leukemia",
    )


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"API_TOKEN": "x", "API_TOKEN_FILE": "{tmp}/token"}, "API_TOKEN and API_TOKEN_FILE are both set: keep one"),
        ({"API_TOKEN_FILE": "{tmp}/missing"}, "API_TOKEN_FILE: cannot read {tmp}/missing: No such file or directory"),
        ({"METRICS_TOKEN_FILE": "{tmp}/empty"}, "METRICS_TOKEN_FILE: {tmp}/empty is empty"),
        ({"DATABASE_PASSWORD": "pw"}, "DATABASE_PASSWORD: Value error, only for a database server"),
        (
            {"DATABASE_URL": "postgresql+psycopg://u:inline@h/d", "DATABASE_PASSWORD_FILE": "{tmp}/token"},
            "DATABASE_PASSWORD: Value error, DATABASE_URL carries a password already",
        ),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT: Value error, 'xml' is not one of text, json"),
        (
            {"ARTIFACTS_URL": "ftp://host/artifacts"},
            "ARTIFACTS_URL: Value error, 'ftp://host/artifacts': use a folder, file:///path or s3://bucket/prefix",
        ),
        ({"ARTIFACTS_URL": "s3:///prefix"}, "ARTIFACTS_URL: Value error, 's3:///prefix' names no bucket"),
        (
            {"SCRATCH_DIR": "{tmp}/cache/scratch", "CACHE_DIR": "{tmp}/cache"},
            "Value error, SCRATCH_DIR {tmp}/cache/scratch lies in CACHE_DIR {tmp}/cache, whose cap",
        ),
    ],
)
def test_a_bad_secret_file_or_log_format_is_one_line_naming_it(tmp_path, clean_settings, settings_override, environment, message):
    from click.testing import CliRunner

    from leukemia.cli import main as leukemia_cli

    (tmp_path / "token").write_text("t\n")
    (tmp_path / "empty").write_text("\n")
    settings_override(
        LEUKEMIA_HOME=str(tmp_path / "home"), **{name: value.format(tmp=tmp_path) for name, value in environment.items()}
    )
    result = CliRunner().invoke(leukemia_cli, ["jobs"])
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, (result.output, result.exception)
    assert message.format(tmp=tmp_path) in result.stderr, result.stderr


def test_the_settings_override_undoes_itself(isolated_home, tmp_path):
    """tests/settings_override.py: what a test sets is read at once, and undone with the cached settings and engines."""
    from core.service.db import get_engine
    from core.service.settings import get_settings
    from tests.settings_override import SettingsOverride, overridden_settings

    before, url = (os.environ.get("HEARTBEAT_SECONDS"), get_settings().heartbeat_seconds), f"sqlite:///{tmp_path / 'o.db'}"
    override = SettingsOverride()
    try:
        override(HEARTBEAT_SECONDS="0.25", DATABASE_URL=url)
        engine = get_engine()
        assert get_settings().heartbeat_seconds == 0.25 and str(engine.url) == url
    finally:
        override.undo()
    assert (os.environ.get("HEARTBEAT_SECONDS"), get_settings().heartbeat_seconds) == before
    with overridden_settings(DATABASE_URL=url):
        assert get_engine() is not engine  # the engine made from the overridden URL was forgotten too
