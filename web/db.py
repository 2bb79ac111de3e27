"""The web's database session: one per request (Flask's `g`), opened on first use, committed when the view
returns an answer, rolled back when it raised (web.errors answers every error after `rollback`), closed at
teardown. The only place in web/ that opens a session; the SQL lives in core.service, which views call with db().

A view commits early (`commit`) before it hands over to code with transactions of its own (worker.dispatch
commits a job's row, then sends it; the metrics collector): they must not wait on locks this request holds,
and under SQLite, whose transactions here all take the write lock at BEGIN, they would wait until it times out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask, Response, current_app, g
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session  # also the type web helpers name the request's session by

from core.service.db import get_sessionmaker

UNREACHABLE = OperationalError  # what SQLAlchemy raises when the database cannot serve: a 503 (web.errors)


def db() -> Session:
    """The request's session, opened on its first use."""
    if "db_session" not in g:
        g.db_session = get_sessionmaker()()
    return g.db_session


def commit() -> None:
    """Commit the request's writes now (a no-op before its first use)."""
    session = g.get("db_session")
    if session is not None:
        session.commit()


def rollback() -> None:
    """Discard what the request has not committed: a refused or failed action leaves nothing half done."""
    session = g.get("db_session")
    if session is not None:
        session.rollback()


@contextmanager
def transaction() -> Iterator[Session]:
    """A transaction of its own, committed at the block's end: for the explicit steps that run outside any request
    (`leukemia migrate` making the admin)."""
    with get_sessionmaker().begin() as session:
        yield session


def _commit_answer(response: Response) -> Response:
    """after_request: the answer's writes committed before it leaves; a commit the database refuses is answered
    as the error it is (a unique key taken meanwhile, a database gone), never a success that did not happen."""
    try:
        commit()
    except Exception as error:
        rollback()
        return current_app.make_response(current_app.handle_user_exception(error))
    return response


def _close(_error: BaseException | None) -> None:
    """teardown: close the session; what was not committed (an error that escaped every handler) is rolled back."""
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def init_app(app: Flask) -> None:
    """Registered after every other after_request hook, so this one runs first: the request id's access line and
    the security headers go on the answer that really leaves."""
    app.after_request(_commit_answer)
    app.teardown_appcontext(_close)
