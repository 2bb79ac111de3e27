"""Logins: failed attempts are throttled per account and per address (in the database, so every
gunicorn worker sees them), an unknown user costs what a wrong password costs, and logout ends the
session on the server so a copied cookie is worthless afterwards."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from core.service.records import utcnow
from tests.conftest import WEB_ADMIN
from tests.web_helpers import csrf_token, login

TOO_MANY = "too many failed logins"


def throttle(settings_override, *, per_account: int, per_address: int, window_s: float) -> None:
    """The login limits, set as an operator sets them: in the environment the settings read."""
    settings_override(
        LOGIN_MAX_FAILURES_PER_ACCOUNT=str(per_account),
        LOGIN_MAX_FAILURES_PER_ADDRESS=str(per_address),
        LOGIN_FAILURE_WINDOW_SECONDS=str(window_s),
    )


def client_from(app, address: str):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def test_failed_logins_lock_the_account_out_then_it_recovers(app, client, monkeypatch, settings_override):
    clock = {"ahead": timedelta(0)}  # the login view's clock, moved on instead of waiting out the window
    monkeypatch.setattr("web.auth.utcnow", lambda: utcnow() + clock["ahead"])
    throttle(settings_override, per_account=3, per_address=100, window_s=60)
    for _ in range(3):
        assert login(client, WEB_ADMIN[0], "wrong").status_code == 401
    locked = login(client, *WEB_ADMIN)  # even the right password waits out the window
    text = locked.get_data(as_text=True)
    assert locked.status_code == 429 and TOO_MANY in text and "this account" in text
    assert locked.headers["Retry-After"].isdigit() and 1 <= int(locked.headers["Retry-After"]) <= 60
    clock["ahead"] = timedelta(seconds=30)
    assert login(client, *WEB_ADMIN).status_code == 429  # still inside the window
    clock["ahead"] = timedelta(seconds=60.1)
    assert login(client, *WEB_ADMIN).status_code == 302


def test_failed_logins_from_one_address_lock_that_address_out(app, settings_override):
    throttle(settings_override, per_account=100, per_address=4, window_s=60)
    attacker = client_from(app, "10.9.8.7")
    for number in range(4):
        assert login(attacker, f"guess{number}", "wrong").status_code == 401
    locked = login(attacker, *WEB_ADMIN)
    assert locked.status_code == 429 and "this address" in locked.get_data(as_text=True)
    colleague = client_from(app, "10.9.8.8")
    assert login(colleague, *WEB_ADMIN).status_code == 302


def test_unknown_user_costs_the_same_time_as_a_wrong_password(app, client, settings_override):
    throttle(settings_override, per_account=1000, per_address=1000, window_s=60)

    def seconds(username: str) -> float:
        token = csrf_token(client)
        start = time.perf_counter()
        response = client.post("/login", data={"username": username, "password": "wrong", "csrf_token": token})
        elapsed = time.perf_counter() - start
        assert response.status_code == 401
        return elapsed

    seconds(WEB_ADMIN[0])  # warm up
    # Interleaved, and the fastest of each: load on the machine only ever adds time, to either kind
    # alike, so the minimum is the cost of the work itself. Skipping the hash was 10x faster; the
    # bounds are loose enough that a loaded machine cannot fail them.
    pairs = [(seconds(WEB_ADMIN[0]), seconds("nobody-by-this-name")) for _ in range(7)]
    wrong_password, unknown_user = min(p[0] for p in pairs), min(p[1] for p in pairs)
    assert 1 / 3 < unknown_user / wrong_password < 3, (unknown_user, wrong_password)


def test_logout_ends_the_session_for_a_copied_cookie(app, client):
    assert login(client, *WEB_ADMIN).status_code == 302
    copied = client.get_cookie("session").value
    thief = app.test_client()
    thief.set_cookie("session", copied)
    assert thief.get("/").status_code == 200 and thief.get("/api/jobs").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/")}).location == "/login"
    assert thief.get("/").status_code == 302
    assert thief.get("/api/jobs").status_code == 401
    assert client.get("/").status_code == 302


def test_a_password_reset_ends_that_users_sessions(app, client):
    from web.auth import ensure_admin

    assert login(client, *WEB_ADMIN).status_code == 302
    with app.app_context():
        ensure_admin(WEB_ADMIN[0], "a-new-password-1")
    assert client.get("/").status_code == 302
    assert login(client, WEB_ADMIN[0], "a-new-password-1").status_code == 302


def admin_audit_rows() -> list[tuple[str, str, dict]]:
    from sqlalchemy import select

    from core.service.db import get_sessionmaker
    from core.service.records import AuditEntry

    with get_sessionmaker().begin() as session:
        rows = session.execute(
            select(AuditEntry.username, AuditEntry.action, AuditEntry.detail)
            .where(AuditEntry.action.like("user.%"))
            .order_by(AuditEntry.id)
        )
        return [(name, action, detail) for name, action, detail in rows]


def test_migrate_makes_and_resets_the_admin_through_the_audited_user_service(app, client, settings_override):
    """`leukemia migrate` (prepare_database) writes the configured admin like every other user write:
    the CLI operator's audit row when it creates the admin, and again when ADMIN_PASSWORD changes it."""
    from web.auth import prepare_database

    [(actor, action, detail)] = admin_audit_rows()  # the app fixture ran prepare_database once
    assert (actor.startswith("cli:"), action, detail) == (True, "user.add", {"username": WEB_ADMIN[0], "role": "admin"})
    prepare_database()  # nothing to change: nothing written
    assert len(admin_audit_rows()) == 1
    assert login(client, *WEB_ADMIN).status_code == 302
    settings_override(ADMIN_PASSWORD="a-new-password-1")
    prepare_database()
    actor, action, detail = admin_audit_rows()[-1]
    assert (actor.startswith("cli:"), action, detail) == (
        True,
        "user.reset_password",
        {"username": WEB_ADMIN[0], "tokens_revoked": 0},
    )
    assert client.get("/").status_code == 302  # the reset ended the session
    assert login(client, WEB_ADMIN[0], "a-new-password-1").status_code == 302


def test_migrate_refuses_an_admin_password_the_user_service_would_refuse(app, settings_override):
    from core.common.errors import UserInputError
    from web.auth import prepare_database

    settings_override(ADMIN_PASSWORD="short")
    with pytest.raises(UserInputError, match=r"^ADMIN_PASSWORD: password: give 8 to 200 printable characters$"):
        prepare_database()
    assert len(admin_audit_rows()) == 1
