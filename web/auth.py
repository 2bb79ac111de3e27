"""People log in (User rows, werkzeug password hashes); programs send `Authorization: Bearer <token>`.

The embedded default generates the secret key, the API token and an admin password once,
keeps the first two under LEUKEMIA_HOME (0600) and prints the new ones once."""

from __future__ import annotations

import functools
import hmac
import secrets
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import click
from flask import Blueprint, Flask, current_app, flash, g, redirect, render_template, request, session, url_for
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from core.db import get_sessionmaker, upgrade_database
from core.records import User, utcnow
from core.settings import persisted_secret

bp = Blueprint("auth", __name__)


def _persisted_secret(home: Path, name: str, announce: str | None = None) -> str:
    """A random secret kept in LEUKEMIA_HOME/<name> with 0600 permissions; made (and announced) once."""
    value, made_now = persisted_secret(home, name)
    if announce and made_now:
        click.echo(f"{announce}: {value}  (saved in {home / name})", err=True)
    return value


def ensure_admin(username: str, password: str) -> None:
    """Create (or reset) the admin from ADMIN_USERNAME/ADMIN_PASSWORD; with none set and no users, generate one."""
    with get_sessionmaker().begin() as db:
        if username and password:
            user = db.scalar(select(User).where(User.username == username))
            if user is None:
                db.add(User(username=username, password_hash=generate_password_hash(password), created_at=utcnow()))
            elif not check_password_hash(user.password_hash, password):
                user.password_hash = generate_password_hash(password)
            return
        if db.scalar(select(User.id).limit(1)) is None:
            generated = secrets.token_urlsafe(12)
            db.add(User(username="admin", password_hash=generate_password_hash(generated), created_at=utcnow()))
            click.echo(f"Dashboard login created: admin / {generated}  (shown once; set ADMIN_PASSWORD to choose it)", err=True)


def init_app(app: Flask) -> None:
    """Database schema, secrets and the admin user, then the per-request user lookup."""
    if app.config["UPGRADE_DATABASE"]:
        upgrade_database()
    home = Path(app.config["LEUKEMIA_HOME"])
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _persisted_secret(home, "secret_key")
    if not app.config["API_TOKEN"]:
        app.config["API_TOKEN"] = _persisted_secret(home, "api_token", announce="API token created")
    try:
        ensure_admin(app.config["ADMIN_USERNAME"], app.config["ADMIN_PASSWORD"])
    except IntegrityError:  # another gunicorn worker inserted the same admin at the same moment
        ensure_admin(app.config["ADMIN_USERNAME"], app.config["ADMIN_PASSWORD"])
    app.before_request(load_logged_in_user)


def load_logged_in_user() -> None:
    """g.user: the logged-in User row, or None."""
    user_id = session.get("user_id")
    g.user = None
    if isinstance(user_id, int):
        with get_sessionmaker().begin() as db:
            g.user = db.get(User, user_id)


def bearer_token_valid() -> bool:
    """True when the request carries the configured API token (constant-time compare)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return False
    return hmac.compare_digest(token.strip().encode(), current_app.config["API_TOKEN"].encode())


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """Send people who are not logged in to the login page, then back."""

    @functools.wraps(view)
    def wrapped(**kwargs: Any) -> Any:
        if g.user is None:
            return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
        return view(**kwargs)

    return wrapped


def _safe_next(target: str | None) -> str:
    """Only a local path may be the post-login destination (no open redirect)."""
    if target and target.startswith("/") and not target.startswith("//") and not urlparse(target).netloc:
        return target
    return url_for("views.job_list")


@bp.route("/login", methods=("GET", "POST"))
def login() -> Any:
    """Check the username and password against the User rows and start an expiring session."""
    error = None
    if request.method == "POST":
        username = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        with get_sessionmaker().begin() as db:
            user = db.scalar(select(User).where(User.username == username))
            valid = user is not None and check_password_hash(user.password_hash, password)
            user_id = user.id if valid else None
        if user_id is not None:
            session.clear()
            session.permanent = True
            session["user_id"] = user_id
            return redirect(_safe_next(request.args.get("next")))
        error = "username or password: not recognised"
    return render_template("login.html", error=error), (401 if error else 200)


@bp.route("/logout", methods=("POST",))
def logout() -> Any:
    """End the session."""
    session.clear()
    flash("Logged out.")
    return redirect(url_for("auth.login"))
