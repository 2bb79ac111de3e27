"""Settings: generated secrets are made once, whole, even when processes start together; they and the
SQLite files of the embedded default (password hashes) are readable by their owner alone."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor

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


def test_the_embedded_sqlite_files_are_private_like_the_secrets(isolated_home):
    from sqlalchemy import text

    from core.service.db import get_engine, reset_engines, upgrade_database
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

        reset_engines()  # a database made before this fix (0644) is made private at the next start
        database.chmod(0o644)
        get_engine().connect().close()
        assert mode(database) == 0o600
    finally:
        os.umask(umask)
        reset_engines()
