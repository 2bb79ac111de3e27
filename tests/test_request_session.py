"""The web's one database session per request (web.db): a view that returns commits what it wrote, one that
raises (a refusal answered 4xx, or a bug answered 500) commits nothing, a commit the database refuses is
never answered as a success, and one request reads and writes through one session."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import event

from core.common.errors import StateConflict
from core.service import jobs, users
from core.service.access import cli_actor
from core.service.db import get_engine, get_sessionmaker
from core.service.records import User, utcnow
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import csrf_token, finished_train_job, login
from web.db import db

PASSWORD = "a-password-1"


def user_exists(username: str) -> bool:
    with get_sessionmaker().begin() as session:
        return users.user_by_name(session, username) is not None


@pytest.fixture()
def writing_app(app):
    """The app with routes that add a user in the request's session, then answer, refuse or fail (added before
    its first request, as Flask requires)."""

    def add(username: str) -> None:
        users.add_user(db(), cli_actor(), username, "viewer", PASSWORD)

    @app.get("/test/add/<username>")
    def add_and_answer(username: str) -> str:
        add(username)
        return "added"

    @app.get("/test/add-then-refuse/<username>")
    def add_then_refuse(username: str) -> str:
        add(username)
        raise StateConflict(f"{username}: refused after the write")

    @app.get("/test/add-then-fail/<username>")
    def add_then_fail(username: str) -> str:
        add(username)
        raise RuntimeError("a bug after the write")

    @app.get("/test/add-twice-unflushed/<username>")
    def add_twice_unflushed(username: str) -> str:
        add(username)
        db().add(User(username=username, password_hash="x", created_at=utcnow(), role="viewer", disabled=False))
        return "added twice"  # the second row reaches the database only at the commit, which refuses it

    return app


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_a_view_commits_what_it_wrote_only_when_it_answers(writing_app):
    client = writing_app.test_client()
    assert client.get("/test/add/kept").get_data(as_text=True) == "added"
    assert user_exists("kept")

    refused = client.get("/test/add-then-refuse/refused")
    assert (refused.status_code, "refused after the write" in refused.get_data(as_text=True)) == (409, True)
    assert not user_exists("refused")

    failed = client.get("/test/add-then-fail/failed")
    assert failed.status_code == 500
    assert not user_exists("failed")


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_a_commit_the_database_refuses_is_not_answered_as_a_success(writing_app):
    answer = writing_app.test_client().get("/test/add-twice-unflushed/twice")
    assert answer.status_code == 500 and "added twice" not in answer.get_data(as_text=True)
    assert not user_exists("twice")


@contextmanager
def counted() -> Iterator[dict[str, set | int]]:
    """The sessions that began a transaction, and the transactions the engine began, while the block runs."""
    seen: dict[str, set | int] = {"sessions": set(), "transactions": 0}

    def session_began(session, _transaction, _connection) -> None:  # type: ignore[no-untyped-def]
        seen["sessions"].add(id(session))  # type: ignore[union-attr]

    def engine_began(_connection) -> None:  # type: ignore[no-untyped-def]
        seen["transactions"] += 1  # type: ignore[operator]

    sessions, engine = get_sessionmaker(), get_engine()
    event.listen(sessions, "after_begin", session_began)
    event.listen(engine, "begin", engine_began)
    try:
        yield seen
    finally:
        event.remove(sessions, "after_begin", session_began)
        event.remove(engine, "begin", engine_began)


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_one_request_uses_one_session_and_one_transaction(app, client, folder_path):
    job_id = finished_train_job(folder_path)
    assert login(client, *WEB_ADMIN).status_code == 302
    token = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    # The job page (the user, the job, its epochs, files, children), an API read (the token's user, then the
    # job twice), and a form's write (the user, the job, its edit and audit row).
    with counted() as page:
        assert client.get(f"/jobs/{job_id}").status_code == 200
    with counted() as api:
        assert client.get(f"/api/jobs/{job_id}/metrics", headers=token).status_code == 200
    csrf = csrf_token(client, f"/jobs/{job_id}")
    with counted() as edit:
        answer = client.post(f"/jobs/{job_id}/edit", data={"csrf_token": csrf, "description": "one session"})
        assert answer.status_code == 302, answer.get_data(as_text=True)
    assert [(len(seen["sessions"]), seen["transactions"]) for seen in (page, api, edit)] == [(1, 1)] * 3
    with get_sessionmaker().begin() as session:
        assert jobs.options_of(session, jobs.get_job(session, job_id)).description == "one session"


def test_only_web_db_opens_a_session_in_the_web() -> None:
    """Every other web module uses the request's session (web.db.db); a module with a sessionmaker of its own
    would read and write beside it, in transactions of its own."""
    web = Path(__file__).resolve().parents[1] / "web"
    opening = sorted(
        str(path.relative_to(web)) for path in web.rglob("*.py") if "get_sessionmaker" in path.read_text(encoding="utf-8")
    )
    assert opening == ["db.py"]
