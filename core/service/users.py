"""Users and their API tokens: add, list, disable/enable, set role, reset password; create, list,
revoke tokens; and the token → Actor lookup every API request makes (`token_actor`, its last use
recorded; `settings_token_actor`: the settings' API_TOKEN acts as the user ADMIN_USERNAME as they are
now). The last enabled admin is never disabled or demoted. `ensure_admin` is how `leukemia migrate` makes
or resets ADMIN_USERNAME, through the same audited writes, as the CLI actor.

Each write checks the actor's role (core.service.access) and writes its audit row (core.service.audit) in the
caller's transaction. A password or token made here is returned once and only its hash is kept:
passwords as werkzeug hashes (salted, slow), tokens as SHA-256 (32 random bytes need no salt or
stretching, and a plain hash can be looked up by value)."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session
from werkzeug.security import check_password_hash, generate_password_hash

from core.common.errors import NotFound, StateConflict, UserInputError
from core.common.text import CONTROL_CHARACTER
from core.service import audit
from core.service.access import Actor, check_role, require_admin
from core.service.db import unique_or_conflict
from core.service.records import MAX_ID, ApiToken, LoginSession, User, utcnow

USERNAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,149}$"  # also the API document's pattern
USERNAME = re.compile(USERNAME_PATTERN)
MIN_PASSWORD = 8
MAX_PASSWORD = 200
TOKEN_PREFIX = "lk_"  # tells a user token apart from the settings' API_TOKEN in logs and forms
TOKEN_NAME_LENGTH = 100
MANAGE = "manage users"  # what a non-admin is refused when reading users


@dataclass(frozen=True)
class Secret:
    """A password or token made now: shown to the person once, never stored."""

    value: str


def check_username(username: str) -> str:
    if not isinstance(username, str) or not USERNAME.fullmatch(username):
        raise UserInputError("username: use 1-150 letters, digits and . _ @ -, starting with a letter or digit", field="username")
    return username


def check_password(password: str) -> str:
    # Printable as names are (core.common.text): no control character, so the API's document can say it as a pattern.
    if not isinstance(password, str) or not MIN_PASSWORD <= len(password) <= MAX_PASSWORD or CONTROL_CHARACTER.search(password):
        raise UserInputError(f"password: give {MIN_PASSWORD} to {MAX_PASSWORD} printable characters", field="password")
    return password


def generated_password() -> str:
    return secrets.token_urlsafe(12)


def end_user_sessions(session: Session, user_id: int) -> None:
    """End every login session of a user (password reset, disabled): their cookies stop working at once."""
    session.execute(delete(LoginSession).where(LoginSession.user_id == user_id))


# --- users ----------------------------------------------------------------------------------------


def user_by_name(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))


def user_names(session: Session, user_ids: set[int | None]) -> dict[int | None, str]:
    """User id → name for the given ids (None, the CLI, is left out)."""
    wanted = [user_id for user_id in user_ids if user_id is not None]
    if not wanted:
        return {}
    return {user_id: name for user_id, name in session.execute(select(User.id, User.username).where(User.id.in_(wanted)))}


def find_user(session: Session, user: int | str, actor: Actor | None = None) -> User:
    """A user by id or by name; an unknown one is NotFound naming the field. Given the actor (a request),
    only an admin may look users up: refused before the lookup, so ids stay unknown to the rest."""
    if actor is not None:
        require_admin(actor, MANAGE)
    if isinstance(user, int):
        row = session.get(User, user) if 1 <= user <= MAX_ID else None
    else:
        row = user_by_name(session, user)
    if row is None:
        raise NotFound(f"user: no user {user!r}", field="user")
    return row


def list_users(session: Session, actor: Actor) -> list[User]:
    """Every user with role and status: for admins (and the CLI) only."""
    require_admin(actor, MANAGE)
    return list(session.scalars(select(User).order_by(User.username)))


def add_user(session: Session, actor: Actor, username: str, role: str, password: str | None = None) -> tuple[User, Secret | None]:
    """A new user; without a password one is generated and returned (shown once)."""
    require_admin(actor, "add users")
    check_username(username)
    check_role(role)
    made = None if password is not None else Secret(generated_password())
    check_password(password if password is not None else made.value)  # type: ignore[union-attr]
    taken = f"username: {username!r} is taken"
    if session.scalar(select(User.id).where(User.username == username)) is not None:
        raise StateConflict(taken, field="username")
    user = User(
        username=username,
        password_hash=generate_password_hash(password or made.value),  # type: ignore[union-attr]
        created_at=utcnow(),
        role=role,
        disabled=False,
    )
    with unique_or_conflict(session, taken, field="username"):  # added by another request since the check
        session.add(user)
    audit.record(session, actor, "user.add", "user", user.id, {"username": username, "role": role})
    return user, made


def _refuse_losing_last_admin(session: Session, user: User, what: str) -> None:
    """The service must keep one enabled admin, or nobody could manage users from the web.

    Every enabled admin's row is locked (FOR UPDATE, in id order) until the change commits, so two admins
    disabling or demoting each other at once are checked one after the other: the second sees the first's
    change (PostgreSQL reads a locked row again once it is free). SQLite runs one write transaction at a time."""
    if user.role != "admin" or user.disabled:
        return
    admins = session.scalars(
        select(User.id).where(User.role == "admin", User.disabled.is_(False)).order_by(User.id).with_for_update()
    ).all()
    if user.id in admins and len(admins) == 1:
        raise StateConflict(f"user: {user.username} is the last enabled admin and cannot be {what}", field="user")


def set_disabled(session: Session, actor: Actor, user: User, disabled: bool) -> User:
    """Disable (no login; sessions ended; tokens refused from the next request) or enable a user."""
    require_admin(actor, "disable or enable users")
    if disabled == user.disabled:
        return user
    if disabled:
        _refuse_losing_last_admin(session, user, "disabled")
        end_user_sessions(session, user.id)
    user.disabled = disabled
    audit.record(session, actor, "user.disable" if disabled else "user.enable", "user", user.id, {"username": user.username})
    return user


def set_role(session: Session, actor: Actor, user: User, role: str) -> User:
    require_admin(actor, "change roles")
    check_role(role)
    if role == user.role:
        return user
    if role != "admin":
        _refuse_losing_last_admin(session, user, "demoted")
    audit.record(session, actor, "user.role", "user", user.id, {"username": user.username, "from": user.role, "to": role})
    user.role = role
    return user


def reset_password(session: Session, actor: Actor, user: User) -> Secret:
    """A new generated password (shown once); the user's sessions end and their API tokens are revoked:
    whoever knew the old password could have made tokens with it, and a token outlives no reset."""
    made = Secret(generated_password())
    _replace_password(session, actor, user, made.value)
    return made


def _replace_password(session: Session, actor: Actor, user: User, password: str) -> None:
    """The one shape of a password reset, generated or configured: sessions end, tokens are revoked, audited."""
    require_admin(actor, "reset passwords")
    user.password_hash = generate_password_hash(password)
    end_user_sessions(session, user.id)
    revoked = session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    audit.record(session, actor, "user.reset_password", "user", user.id, {"username": user.username, "tokens_revoked": revoked})


def ensure_admin(session: Session, actor: Actor, username: str, password: str) -> Secret | None:
    """The configured admin (ADMIN_USERNAME/ADMIN_PASSWORD, `leukemia migrate`) made, or put back to an
    enabled admin with that password, through the same audited writes as any other user change. With no
    password configured and no user at all, an admin with a generated password (returned, shown once:
    the settings' API_TOKEN acts as this user); else nothing."""
    if username and password:
        try:
            check_username(username)
            check_password(password)
        except UserInputError as error:  # the operator fixes a setting, not a form field
            field = f"admin_{error.field}"
            raise UserInputError(f"{field.upper()}: {error}", field=field) from None
        user = user_by_name(session, username)
        if user is None:
            add_user(session, actor, username, "admin", password)
            return None
        set_role(session, actor, user, "admin")  # the configured admin is always an admin who can log in
        set_disabled(session, actor, user, False)
        if not check_password_hash(user.password_hash, password):
            _replace_password(session, actor, user, password)
        return None
    if session.scalar(select(User.id).limit(1)) is not None:
        return None
    return add_user(session, actor, username or "admin", "admin")[1]


# --- tokens ---------------------------------------------------------------------------------------


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, actor: Actor, user: User, name: str) -> tuple[ApiToken, Secret]:
    """A named token for a user (yourself, or anyone when admin); the token is returned once."""
    if user.id != actor.user_id:
        require_admin(actor, "create tokens for other users")
    name = name.strip() if isinstance(name, str) else ""
    if not 1 <= len(name) <= TOKEN_NAME_LENGTH or CONTROL_CHARACTER.search(name):
        raise UserInputError(f"name: give the token a name of 1 to {TOKEN_NAME_LENGTH} printable characters", field="name")
    made = Secret(TOKEN_PREFIX + secrets.token_urlsafe(32))
    token = ApiToken(user_id=user.id, name=name, token_hash=token_hash(made.value), prefix=made.value[:10], created_at=utcnow())
    session.add(token)
    session.flush()
    audit.record(session, actor, "token.create", "api_token", token.id, {"user": user.username, "name": name})
    return token, made


def list_tokens(session: Session, user_id: int | None = None) -> list[ApiToken]:
    """Tokens newest first, of one user or (None) of everyone."""
    query = select(ApiToken).order_by(ApiToken.id.desc())
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return list(session.scalars(query))


def find_token(session: Session, token_id: int, actor: Actor | None = None) -> ApiToken:
    """A token by id; NotFound when there is none, or when actor (a non-admin) does not own it, so
    other users' token ids stay unknown to them."""
    token = session.get(ApiToken, token_id) if 1 <= token_id <= MAX_ID else None
    if token is None or (actor is not None and token.user_id != actor.user_id and not actor.is_admin):
        raise NotFound(f"token: no token {token_id}", field="token")
    return token


def revoke_token(session: Session, actor: Actor, token: ApiToken) -> ApiToken:
    """Refuse the token from the next request on (an admin may revoke anyone's)."""
    if token.user_id != actor.user_id:
        require_admin(actor, "revoke other users' tokens")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        audit.record(session, actor, "token.revoke", "api_token", token.id, {"name": token.name})
    return token


def settings_token_actor(session: Session, username: str, address: str | None) -> Actor | None:
    """The Actor of the settings' single API_TOKEN: the user ADMIN_USERNAME as they are now, so it loses
    admin rights with a demotion and is refused once that user is disabled (or when there is none);
    what it submits is theirs."""
    user = user_by_name(session, username)
    if user is None or user.disabled:
        return None
    return Actor(user.id, user.username, user.role, address)


def token_actor(session: Session, token: str, address: str | None, now: datetime | None = None) -> Actor | None:
    """The Actor of a live user token (not revoked, user enabled), its last use recorded; else None."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    found = session.execute(
        select(ApiToken, User).join(User, User.id == ApiToken.user_id).where(ApiToken.token_hash == token_hash(token))
    ).first()
    if found is None:
        return None
    row, user = found
    if row.revoked_at is not None or user.disabled:
        return None
    row.last_used_at = now or utcnow()
    return Actor(user.id, user.username, user.role, address)
