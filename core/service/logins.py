"""Failed-login throttling and server-side sessions, both kept in the database (web.auth's logins use them).

Several gunicorn workers (and `serve`'s processes) answer logins, so per-process memory cannot
count failures; the database is the one store every deployment has (SQLite in the embedded
default, PostgreSQL otherwise), while Redis exists only in some. Hence two small tables rather
than Flask-Limiter, whose storages are memory, Redis, Memcached or MongoDB, and which counts
requests rather than failures per account."""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.service.records import LoginFailure, LoginSession, User

USERNAME_LENGTH = 150  # users.username
ADDRESS_LENGTH = 64  # an IPv6 address with zone fits


@dataclass(frozen=True)
class LoginLimits:
    """How many failures within `window` lock an account name, or a client address."""

    per_account: int
    per_address: int
    window: timedelta


@dataclass(frozen=True)
class Lockout:
    scope: Literal["account", "address"]
    retry_after_s: int


def account_key(username: str) -> str:
    """The name failures are counted under; names no user can have (control characters) share one."""
    return username[:USERNAME_LENGTH] if username.isprintable() else ""


def lockout(session: Session, username: str, address: str, limits: LoginLimits, now: datetime) -> Lockout | None:
    """The lock on this account name or address, if the failures within the window reach its limit."""
    since = now - limits.window
    checks = (
        ("account", LoginFailure.username, account_key(username), limits.per_account),
        ("address", LoginFailure.address, address[:ADDRESS_LENGTH], limits.per_address),
    )
    for scope, column, value, limit in checks:
        recent = session.scalars(
            select(LoginFailure.at).where(column == value, LoginFailure.at > since).order_by(LoginFailure.at.desc()).limit(limit)
        ).all()
        if len(recent) >= limit:  # the lock lifts when the limit-th newest failure ages out
            retry_after = (recent[-1] + limits.window - now).total_seconds()
            return Lockout(scope, max(1, math.ceil(retry_after)))  # type: ignore[arg-type]
    return None


def record_failure(session: Session, username: str, address: str, limits: LoginLimits, now: datetime) -> None:
    """Count one failed login, and forget those older than the window."""
    session.execute(delete(LoginFailure).where(LoginFailure.at <= now - limits.window))
    session.add(LoginFailure(username=account_key(username), address=address[:ADDRESS_LENGTH], at=now))


def forget_failures(session: Session, username: str) -> None:
    """A successful login clears its account's count (not its address's)."""
    session.execute(delete(LoginFailure).where(LoginFailure.username == account_key(username)))


def _digest(token: str) -> str:
    """Rows keep a hash of the cookie's session id: a copy of the database cannot be replayed as cookies."""
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user_id: int, lifetime: timedelta, now: datetime) -> str:
    """A new server-side session for the user; returns the random id the cookie carries."""
    session.execute(delete(LoginSession).where(LoginSession.expires_at <= now))
    token = secrets.token_urlsafe(32)
    session.add(LoginSession(id=_digest(token), user_id=user_id, created_at=now, expires_at=now + lifetime))
    return token


def session_user(session: Session, token: str, now: datetime) -> User | None:
    """The user of a live session id; None once it was ended or has expired, or the user is disabled."""
    return session.scalar(
        select(User)
        .join(LoginSession, LoginSession.user_id == User.id)
        .where(LoginSession.id == _digest(token), LoginSession.expires_at > now, User.disabled.is_(False))
    )


def end_session(session: Session, token: str) -> None:
    session.execute(delete(LoginSession).where(LoginSession.id == _digest(token)))
