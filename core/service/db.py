"""One SQLAlchemy engine and one sessionmaker per process, and the Alembic upgrade.

PostgreSQL in deployment (DATABASE_URL); SQLite in LEUKEMIA_HOME for the embedded default,
in WAL mode with a busy timeout so a worker and the web can share the file. `unique_or_conflict`: a
unique key taken by a concurrent transaction is a StateConflict.

No code opens the SQLite files (the database, the embedded broker's) outside SQLite once the process may
hold connections to them (`private_sqlite_file` creates a missing one and chmods an existing one by path):
closing any descriptor of a file drops every POSIX lock the process holds on it, and another process then
deletes the -wal and -shm that its connections still use."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from core.common.errors import DatabaseUnavailable, StateConflict
from core.service.settings import get_settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
PRIVATE_MODE = 0o600  # as the secret files in LEUKEMIA_HOME: the database holds password hashes


class Base(DeclarativeBase):
    """Base class of every ORM record (core.service.records)."""


def _configure_sqlite(engine: Engine, database: Path | None, *, create: bool) -> None:
    """WAL + busy timeout, and BEGIN IMMEDIATE so read-then-write transactions wait instead of failing.

    A file database is also held to the file it opened: sqlite keeps writing to a deleted file
    through an open handle (and the next start finds none of it), so every transaction first checks
    that the path still names the same file, and only `upgrade_database` may create a missing one."""

    @event.listens_for(engine, "do_connect")
    def _refuse_to_create(_dialect, _record, _cargs, _cparams) -> None:  # type: ignore[no-untyped-def]
        if database is not None and not create and not database.is_file():
            raise DatabaseUnavailable(f"database unavailable: {database} does not exist (run `leukemia db upgrade`)")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, record) -> None:  # type: ignore[no-untyped-def]
        if database is not None:
            record.info["sqlite_file"] = _file_identity(database)
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own BEGIN is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        if database is not None and _file_identity(database) != connection.connection.info.get("sqlite_file"):
            connection.invalidate()  # reopened on the next checkout: a restored file is picked up
            raise DatabaseUnavailable(
                f"database unavailable: {database} was deleted or replaced while the service ran; "
                "restore it, or run `leukemia db upgrade` and restart"
            )
        # A deferred transaction that reads and then writes can hit SQLITE_BUSY without waiting;
        # IMMEDIATE takes the write lock up front (readers are never blocked under WAL).
        connection.exec_driver_sql("BEGIN IMMEDIATE")


@contextmanager
def unique_or_conflict(session: Session, message: str, *, field: str | None = None) -> Iterator[None]:
    """The block's writes in a savepoint, flushed at its end; a unique key another transaction took meanwhile
    (PostgreSQL makes the second insert wait for the first's commit, then refuses it; SQLite runs one write
    transaction at a time, so a check before the insert sees the first) is the StateConflict `message`, and the
    caller's transaction stays usable."""
    try:
        with session.begin_nested():
            yield
            session.flush()
    except IntegrityError as error:
        if not _unique_violation(error):
            raise
        raise StateConflict(message, field=field) from None


def _unique_violation(error: IntegrityError) -> bool:
    """A unique or primary key refused the row (PostgreSQL's SQLSTATE 23505, SQLite's constraint names)."""
    original = error.orig
    return getattr(original, "sqlstate", None) == "23505" or getattr(original, "sqlite_errorname", "") in (
        "SQLITE_CONSTRAINT_UNIQUE",
        "SQLITE_CONSTRAINT_PRIMARYKEY",
    )


def private_sqlite_file(path: Path) -> None:
    """Create the SQLite file readable by its owner alone, or make an existing one so (with its
    -wal/-shm). SQLite gives the -wal and -shm it creates later the database file's mode.

    An existing file is never opened here, only stat'ed and chmod'ed by path: closing any descriptor
    of a file drops every POSIX lock the process holds on it, SQLite's included, and another process
    then believes it is the file's last user and deletes the -wal and -shm that this process's
    connections still write to (they see no other process's writes from then on)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_MODE))
    except FileExistsError:
        pass
    for file in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        try:
            status = file.stat()
        except FileNotFoundError:
            continue
        if stat.S_IMODE(status.st_mode) & ~PRIVATE_MODE and status.st_uid == os.geteuid():
            file.chmod(PRIVATE_MODE)


def private_embedded_files() -> None:
    """The embedded broker's SQLite file (and its -wal/-shm) made private now, if it exists: a process that
    sends nothing (`leukemia web` before its first submit) never opens it, and a file made by an older
    version, a copy or a restore may be 0644. The database's file is made so by every engine that opens it."""
    broker = get_settings().resolved_broker_url
    path = sqlite_path(broker.removeprefix("sqla+")) if broker.startswith("sqla+") else None
    if path is not None and path.is_file():
        private_sqlite_file(path)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (sqlite:///path), or None for any other database or an in-memory one."""
    if not url.startswith("sqlite:///") or url.endswith(":memory:"):
        return None
    return Path(url.removeprefix("sqlite:///"))


def _file_identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the file at path, or None when there is none."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def make_engine(url: str, *, create: bool = False) -> Engine:
    """An engine for a database URL, with the SQLite settings the embedded default needs.

    create=True (migrations only) may make a missing SQLite file; every other engine refuses to,
    so a deleted database is reported instead of silently replaced by an empty one."""
    if url.startswith("sqlite"):
        database = sqlite_path(url)
        if database is not None and (create or database.is_file()):
            private_sqlite_file(database)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})
        _configure_sqlite(engine, database, create=create)
        return engine
    return create_engine(url, pool_pre_ping=True)


def database_unavailable(error: Exception) -> DatabaseUnavailable:
    """One line for a database that cannot serve (an SQLAlchemy OperationalError or ProgrammingError:
    unreachable, dropped, no tables), naming the URL without its password."""
    from sqlalchemy.engine import make_url

    if isinstance(error, DatabaseUnavailable):
        return error
    url = make_url(get_settings().resolved_database_url).render_as_string(hide_password=True)
    original = getattr(error, "orig", None)
    reason = str(original).strip().splitlines()[0] if original is not None and str(original).strip() else type(error).__name__
    return DatabaseUnavailable(f"database unavailable: {url}: {reason} (is it running, and has `leukemia db upgrade` been run?)")


def check_database() -> None:
    """Raise DatabaseUnavailable unless the database answers and holds our schema (for /api/health)."""
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError, ProgrammingError

    try:
        with get_engine().connect() as connection:
            if connection.execute(text("SELECT version_num FROM alembic_version")).first() is None:
                raise DatabaseUnavailable("database unavailable: it has no schema (run `leukemia db upgrade`)")
    except (OperationalError, ProgrammingError) as error:
        raise database_unavailable(error) from None


_engines: dict[str, Engine] = {}
_sessionmakers: dict[str, sessionmaker[Session]] = {}


def get_engine() -> Engine:
    """The process's engine for the configured database (one per URL, made on first use)."""
    url = get_settings().resolved_database_url
    if url not in _engines:
        _engines[url] = make_engine(url)
    return _engines[url]


def get_sessionmaker() -> sessionmaker[Session]:
    """The process's sessionmaker: `with get_sessionmaker().begin() as session: ...`."""
    url = get_settings().resolved_database_url
    if url not in _sessionmakers:
        _sessionmakers[url] = sessionmaker(bind=get_engine(), expire_on_commit=False)
    return _sessionmakers[url]


def reset_engines(*, close: bool = True) -> None:
    """Forget the cached engines: tests that switch DATABASE_URL, and a forked worker child
    (close=False: the parent's pooled connections must not be closed from the child)."""
    for engine in _engines.values():
        engine.dispose(close=close)
    _engines.clear()
    _sessionmakers.clear()


def alembic_config(url: str | None = None):  # type: ignore[no-untyped-def]
    """An Alembic Config pointing at the migrations packaged inside core (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # '%' is ConfigParser's interpolation character; URLs may contain it (passwords).
    config.set_main_option("sqlalchemy.url", (url or get_settings().resolved_database_url).replace("%", "%%"))
    return config


def upgrade_database(url: str | None = None) -> None:
    """Bring the database schema to the newest migration (idempotent; run at worker/web start), and make the
    embedded files private (private_embedded_files)."""
    from alembic import command

    private_embedded_files()
    command.upgrade(alembic_config(url), "head")
