"""Dashboard pages of users, tokens and the audit log: /admin/users and /admin/audit for admins,
/tokens for every logged-in user. Each view parses its input, calls one core.service.users function (which
checks the role and writes the audit row) and renders rows; a password or token made now is shown
on the page that answers the action, once."""

from __future__ import annotations

from typing import Any, Callable

from flask import Blueprint, flash, g, render_template, request

from core.common.errors import StateConflict, UserInputError
from core.service import audit
from core.service import users as user_service
from core.service.access import Actor
from core.service.records import ROLES, User
from web.auth import current_actor, login_required
from web.db import db, rollback
from web.errors import refusal_status
from web.paging import Pager, requested_page

bp = Blueprint("users", __name__)
AUDIT_PER_PAGE = 50


def _users_page(
    actor: Actor, errors: dict[str, str] | None = None, shown: dict[str, str] | None = None, status: int = 200
) -> Any:
    """The user list (core.service.users refuses it to non-admins) with the add form."""
    rows = [
        {"id": u.id, "username": u.username, "role": u.role, "disabled": u.disabled, "created_at": u.created_at}
        for u in user_service.list_users(db(), actor)
    ]
    return render_template(
        "users.html", users=rows, roles=ROLES, errors=errors or {}, shown=shown, form=request.form if errors else None
    ), status


@bp.route("/admin/users", methods=("GET", "POST"))
@login_required
def user_list() -> Any:
    """Every user with role and status; add a user (a generated password is shown once)."""
    actor = current_actor()
    if request.method == "GET":
        return _users_page(actor)
    username, role = request.form.get("username", "").strip(), request.form.get("role", "member")
    password = request.form.get("password", "") or None
    try:
        _, made = user_service.add_user(db(), actor, username, role, password)
    except (UserInputError, StateConflict) as error:
        rollback()
        return _users_page(actor, {error.field or "form": str(error)}, status=refusal_status(error))
    flash(f"User {username} added ({role}).")
    return _users_page(actor, shown={"username": username, "password": made.value} if made else None)


def _change_user(user_id: int, change: Callable[[Any, Any, User], Any], done: str) -> Any:
    """Apply one core.service.users change to a user; a refusal (the last admin) is shown above the list."""
    actor = current_actor()
    try:
        user = user_service.find_user(db(), user_id, actor)
        made = change(db(), actor, user)
        name = user.username
    except (UserInputError, StateConflict) as error:
        rollback()
        return _users_page(actor, {"form": str(error)}, status=refusal_status(error))
    flash(done.format(name=name))
    shown = {"username": name, "password": made.value} if isinstance(made, user_service.Secret) else None
    return _users_page(actor, shown=shown)


@bp.post("/admin/users/<int:user_id>/role")
@login_required
def set_role(user_id: int) -> Any:
    role = request.form.get("role", "")
    return _change_user(user_id, lambda s, a, u: user_service.set_role(s, a, u, role), "{name}: role set to " + role + ".")


@bp.post("/admin/users/<int:user_id>/disable")
@login_required
def disable(user_id: int) -> Any:
    return _change_user(
        user_id,
        lambda s, a, u: user_service.set_disabled(s, a, u, True),
        "{name} disabled: their sessions ended and their tokens are refused.",
    )


@bp.post("/admin/users/<int:user_id>/enable")
@login_required
def enable(user_id: int) -> Any:
    return _change_user(user_id, lambda s, a, u: user_service.set_disabled(s, a, u, False), "{name} enabled.")


@bp.post("/admin/users/<int:user_id>/reset-password")
@login_required
def reset_password(user_id: int) -> Any:
    return _change_user(
        user_id, user_service.reset_password, "New password for {name}; their sessions ended and their API tokens were revoked."
    )


# --- tokens -------------------------------------------------------------------------------------


def _tokens_page(errors: dict[str, str] | None = None, made: str | None = None, status: int = 200) -> Any:
    rows = [
        {
            "id": t.id,
            "name": t.name,
            "prefix": t.prefix,
            "created_at": t.created_at,
            "last_used_at": t.last_used_at,
            "revoked_at": t.revoked_at,
        }
        for t in user_service.list_tokens(db(), g.user.id)
    ]
    return render_template("tokens.html", tokens=rows, errors=errors or {}, made=made), status


@bp.route("/tokens", methods=("GET", "POST"))
@login_required
def tokens() -> Any:
    """Your API tokens: create one (shown once), see when each was last used, revoke."""
    if request.method == "GET":
        return _tokens_page()
    try:
        _, made = user_service.create_token(
            db(), current_actor(), user_service.find_user(db(), g.user.id), request.form.get("name", "")
        )
    except UserInputError as error:
        rollback()
        return _tokens_page({error.field or "form": str(error)}, status=400)
    flash("Token created: copy it now, it is not shown again.")
    return _tokens_page(made=made.value)


@bp.post("/tokens/<int:token_id>/revoke")
@login_required
def revoke_token(token_id: int) -> Any:
    actor = current_actor()
    token = user_service.find_token(db(), token_id, actor)
    user_service.revoke_token(db(), actor, token)
    name = token.name
    flash(f"Token {name} revoked: it is refused from now on.")
    return _tokens_page()


# --- audit log ------------------------------------------------------------------------------------


@bp.get("/admin/audit")
@login_required
def audit_log() -> Any:
    """Every write, newest first, one page at a time (admins)."""
    actor = current_actor()
    page = requested_page()
    entries, total = audit.entries(db(), actor, page=page, per_page=AUDIT_PER_PAGE)
    rows = [
        {
            "at": e.at,
            "username": e.username,
            "action": e.action,
            "target": f"{e.target_type} {e.target_id or ''}",
            "detail": e.detail,
            "address": e.address,
        }
        for e in entries
    ]
    return render_template("audit.html", rows=rows, paged=Pager(page, AUDIT_PER_PAGE, total), total=total)
