"""People log in (User rows, werkzeug password hashes); programs send `Authorization: Bearer <token>`.

A login starts a session kept on the server (core.service.logins); the signed cookie carries only its id,
so logout ends it everywhere. Failed logins are throttled per account name and per address.
`current_actor()` says who a request acts as: a bearer token's owner (the settings' API_TOKEN is the user
ADMIN_USERNAME as they are now), else the logged-in user; `access` tells templates what a page may show.

Creating the app writes nothing. The explicit steps do, before it: `prepare_database` (run by
`leukemia migrate`, compose's migrate service, `leukemia serve` and `leukemia web`) brings the
schema to the newest migration and creates the admin; `make_secrets` (run by `leukemia web`; serve
makes its own) generates the embedded default's secret key and API token once, keeps them under
LEUKEMIA_HOME (0600) and prints a new token once. The app only reads them."""

from __future__ import annotations

import functools
import hmac
import math
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from flask import Blueprint, Flask, current_app, flash, g, make_response, redirect, render_template, request, session, url_for
from werkzeug.security import check_password_hash, generate_password_hash

from core.common.errors import StateConflict
from core.service import logins, users
from core.service.access import Actor, PermissionDenied, cli_actor, require_admin, require_owner, require_submit
from core.service.db import upgrade_database
from core.service.logs import announce as announce_line
from core.service.records import User, utcnow
from core.service.settings import get_settings, persisted_secret
from web.db import commit, db, transaction
from web.settings import app_settings

bp = Blueprint("auth", __name__)
NOT_RECOGNISED = "username or password: not recognised"


@functools.cache
def dummy_password_hash() -> str:
    """Checked when the user name is unknown, so that costs what a wrong password costs."""
    return generate_password_hash(secrets.token_urlsafe(16))


def _persisted_secret(home: Path, name: str, announce: str | None = None) -> str:
    """A random secret kept in LEUKEMIA_HOME/<name> with 0600 permissions; made (and announced) once."""
    value, made_now = persisted_secret(home, name)
    if announce and made_now:
        announce_line(f"{announce}: {value}  (saved in {home / name})")
    return value


def ensure_admin(username: str, password: str) -> None:
    """Create (or reset) the admin from ADMIN_USERNAME/ADMIN_PASSWORD as the CLI operator (core.service.users,
    audited); with none set and no users, generate one and print it once."""
    with transaction() as session:
        made = users.ensure_admin(session, cli_actor(), username, password)
    if made is not None:
        announce_line(
            f"Dashboard login created: {username or 'admin'} / {made.value}  (shown once; set ADMIN_PASSWORD to choose it)"
        )


def prepare_database() -> None:
    """The explicit setup step: the schema at the newest migration, then the admin from the settings."""
    settings = get_settings()
    upgrade_database()
    try:
        ensure_admin(settings.admin_username, settings.admin_password)
    except StateConflict:  # another process inserted the same admin at the same moment
        ensure_admin(settings.admin_username, settings.admin_password)


def make_secrets() -> None:
    """The embedded default's secret key and API token, generated once into LEUKEMIA_HOME when not set."""
    settings = get_settings()
    if not settings.secret_key:
        _persisted_secret(settings.leukemia_home, "secret_key")
    if not settings.api_token:
        _persisted_secret(settings.leukemia_home, "api_token", announce="API token created")


def init_app(app: Flask) -> None:
    """The API token checked now (a missing one is one line at start, not a failing request), then
    the per-request user lookup."""
    app_settings(app).api_token_or_stored
    dummy_password_hash()  # made now, so the first unknown name is not slower than the rest
    app.before_request(load_logged_in_user)
    app.context_processor(lambda: {"access": PageAccess(g.get("user"))})


class PageAccess:
    """What the logged-in user may do, for templates to hide what they may not (core.service.access decides)."""

    def __init__(self, user: User | None) -> None:
        self.actor = None if user is None else Actor(user.id, user.username, user.role)

    def _allowed(self, check: Callable[[Actor], None]) -> bool:
        if self.actor is None:
            return False
        try:
            check(self.actor)
        except PermissionDenied:
            return False
        return True

    @property
    def submit(self) -> bool:
        return self._allowed(require_submit)

    @property
    def admin(self) -> bool:
        return self._allowed(lambda actor: require_admin(actor, "manage"))

    def may_change(self, owner_id: int | None) -> bool:
        """Cancel, retry, edit or delete a job or sweep submitted by owner_id."""
        return self._allowed(lambda actor: require_owner(actor, owner_id, "it"))


def load_logged_in_user() -> None:
    """g.user: the User of the cookie's server-side session, or None (a cookie of an ended session is dropped).
    Detached from the request's session, so a rollback does not expire it: an error page still shows who is in."""
    token = session.get("sid")
    g.user = None
    if isinstance(token, str):
        g.user = logins.session_user(db(), token, utcnow())
        if g.user is None:
            session.clear()
        else:
            db().expunge(g.user)


def bearer_token() -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def bearer_actor() -> Actor | None:
    """Who the request's bearer token belongs to, looked up once per request: the settings' single
    API_TOKEN is the user ADMIN_USERNAME's (compose uses it), a user token its user's; either is refused
    once revoked or its user disabled, from the very next request, and acts with its user's role now
    (core.service.users). None: no valid token."""
    if "bearer_actor" not in g:
        g.bearer_actor = None
        token, address = bearer_token(), request.remote_addr
        if token is None:
            return None
        if hmac.compare_digest(token.encode(), app_settings().api_token_or_stored.encode()):
            g.bearer_actor = users.settings_token_actor(db(), app_settings().admin_username, address)
        else:
            g.bearer_actor = users.token_actor(db(), token, address)
            commit()  # the token's last use is recorded whatever the request goes on to do
    return g.bearer_actor


def bearer_token_valid() -> bool:
    """True when the request carries a valid token: the settings' API_TOKEN or a live user token."""
    return bearer_actor() is not None


def current_actor() -> Actor:
    """Who sends this request (core.service.access): the bearer token's owner, else the logged-in user."""
    actor = bearer_actor()
    if actor is not None:
        return actor
    if g.get("user") is not None:
        return Actor(g.user.id, g.user.username, g.user.role, request.remote_addr)
    raise PermissionDenied("not logged in and no API token: log in, or send 'Authorization: Bearer <token>'")


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Send people who are not logged in to the login page, then back."""

    @functools.wraps(view)
    def wrapped(**kwargs: Any) -> Any:
        if g.user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(**kwargs)

    return wrapped


def _safe_next(target: str | None) -> str:
    """Only a local path may be the post-login destination: no open redirect (`//host`, `/\\host`,
    which browsers read as `//host`) and no control characters (a line break would split the header)."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and target.isprintable()
        and not urlparse(target).netloc
    ):
        return target
    return url_for("views.job_list")


def login_limits() -> logins.LoginLimits:
    settings = app_settings()
    return logins.LoginLimits(
        per_account=settings.login_max_failures_per_account,
        per_address=settings.login_max_failures_per_address,
        window=timedelta(seconds=settings.login_failure_window_seconds),
    )


def lockout_message(lockout: logins.Lockout) -> str:
    minutes = math.ceil(lockout.retry_after_s / 60)
    wait = f"{lockout.retry_after_s} s" if lockout.retry_after_s < 120 else f"{minutes} minutes"
    return f"too many failed logins for this {lockout.scope}: try again in {wait}"


def check_login(username: str, password: str, address: str) -> tuple[int | None, logins.Lockout | None]:
    """(user id, None) on success, (None, lockout) when locked, else (None, None) with the failure counted."""
    limits, now = login_limits(), utcnow()
    lockout = logins.lockout(db(), username, address, limits, now)
    if lockout is not None:
        return None, lockout
    user = users.user_by_name(db(), username) if logins.account_key(username) else None
    # An unknown name is checked against a dummy hash: the same cost, so timing reveals no user names.
    matches = check_password_hash(user.password_hash if user else dummy_password_hash(), password)
    if user is not None and matches and not user.disabled:  # disabled: the same answer as a wrong password
        logins.forget_failures(db(), username)
        return user.id, None
    logins.record_failure(db(), username, address, limits, now)
    return None, None


@bp.route("/login", methods=("GET", "POST"))
def login() -> Any:
    """Check the username and password (throttled), then start a server-side session."""
    if request.method == "GET":
        return render_template("login.html", error=None)
    username = request.form.get("username", "").strip()
    user_id, lockout = check_login(username, request.form.get("password", ""), request.remote_addr or "unknown")
    if lockout is not None:
        response = make_response(render_template("login.html", error=lockout_message(lockout)), 429)
        response.headers["Retry-After"] = str(lockout.retry_after_s)
        return response
    if user_id is None:
        return render_template("login.html", error=NOT_RECOGNISED), 401
    end_current_session()
    token = logins.start_session(db(), user_id, current_app.permanent_session_lifetime, utcnow())
    session.permanent = True
    session["sid"] = token
    return redirect(_safe_next(request.args.get("next")))


def end_current_session() -> None:
    """End the cookie's session on the server and clear the cookie."""
    token = session.get("sid")
    if isinstance(token, str):
        logins.end_session(db(), token)
    session.clear()


@bp.route("/logout", methods=("POST",))
def logout() -> Any:
    """End the session on the server: a copy of the cookie is worthless afterwards."""
    end_current_session()
    flash("Logged out.")
    return redirect(url_for("auth.login"))
