"""The API's users, tokens and audit log (core.service.users, core.service.audit), on the API blueprint: writes need a
bearer token like every API write; core.service.users checks the role and writes the audit row."""

from __future__ import annotations

from typing import Any

from flask import abort

from core.service import audit
from core.service import users as user_service
from web.api import schemas
from web.api.blueprint import answer, bp
from web.auth import current_actor
from web.db import db
from web.inputs import json_body, query_model
from web.openapi import operation


@operation(bp, "get", "/me", operation_id="getMe", tag="users", responses={200: schemas.Me})
def me() -> Any:
    """Who this request acts as, and their role"""
    actor = current_actor()
    return answer(schemas.Me(id=actor.user_id, username=actor.username, role=actor.role))


@operation(bp, "get", "/users", operation_id="listUsers", tag="users", responses={200: schemas.UserList}, errors=(403,))
def list_users() -> Any:
    """Every user with role and status (admin)"""
    actor = current_actor()
    rows = user_service.list_users(db(), actor)
    return answer(schemas.UserList(users=[schemas.UserInfo.model_validate(u) for u in rows]))


@operation(
    bp,
    "post",
    "/users",
    operation_id="addUser",
    tag="users",
    body=schemas.UserCreate,
    responses={201: schemas.UserCreated},
    errors=(400, 403, 409, 413),
)
def add_user() -> Any:
    """Add a user (admin); without a password one is generated and answered once"""
    request = json_body(schemas.UserCreate)
    user, made = user_service.add_user(db(), current_actor(), request.username, request.role, request.password)
    return answer(schemas.UserCreated(user=schemas.UserInfo.model_validate(user), password=made.value if made else None), 201)


@operation(
    bp,
    "patch",
    "/users/<int:user_id>",
    operation_id="updateUser",
    tag="users",
    body=schemas.UserUpdate,
    responses={200: schemas.UserInfo},
    errors=(400, 403, 404, 409, 413),
)
def update_user(user_id: int) -> Any:
    """Change a user's role, or disable/enable them (admin; the last enabled admin is kept)"""
    request = json_body(schemas.UserUpdate)
    actor = current_actor()
    user = user_service.find_user(db(), user_id, actor)
    if request.role is not None:
        user_service.set_role(db(), actor, user, request.role)
    if request.disabled is not None:
        user_service.set_disabled(db(), actor, user, request.disabled)
    return answer(schemas.UserInfo.model_validate(user))


@operation(
    bp,
    "post",
    "/users/<int:user_id>/reset-password",
    operation_id="resetUserPassword",
    tag="users",
    responses={200: schemas.PasswordReset},
    errors=(403, 404),
)
def reset_password(user_id: int) -> Any:
    """Give a user a new generated password, answered once; their sessions end and their API tokens are revoked (admin)"""
    actor = current_actor()
    user = user_service.find_user(db(), user_id, actor)
    made = user_service.reset_password(db(), actor, user)
    return answer(schemas.PasswordReset(user=schemas.UserInfo.model_validate(user), password=made.value))


@operation(bp, "get", "/tokens", operation_id="listTokens", tag="users", responses={200: schemas.TokenList})
def list_tokens() -> Any:
    """Your API tokens (never the tokens themselves: name, prefix, times)"""
    actor = current_actor()
    rows = user_service.list_tokens(db(), actor.user_id) if actor.user_id is not None else []
    return answer(schemas.TokenList(tokens=[schemas.TokenInfo.model_validate(t) for t in rows]))


@operation(
    bp,
    "post",
    "/tokens",
    operation_id="createToken",
    tag="users",
    body=schemas.TokenCreate,
    responses={201: schemas.TokenCreated},
    errors=(400, 403, 413),
)
def create_token() -> Any:
    """Create a named token for yourself; it is answered once"""
    request = json_body(schemas.TokenCreate)
    actor = current_actor()
    if actor.user_id is None:
        abort(403, description="this token belongs to no user: create the admin user (ADMIN_USERNAME) first")
    token, made = user_service.create_token(db(), actor, user_service.find_user(db(), actor.user_id), request.name)
    return answer(schemas.TokenCreated(token=schemas.TokenInfo.model_validate(token), secret=made.value), 201)


@operation(
    bp,
    "delete",
    "/tokens/<int:token_id>",
    operation_id="revokeToken",
    tag="users",
    responses={200: schemas.TokenInfo},
    errors=(403, 404),
)
def revoke_token(token_id: int) -> Any:
    """Revoke a token: refused from the next request on (yours; an admin may revoke anyone's)"""
    actor = current_actor()
    token = user_service.find_token(db(), token_id, actor)  # others' ids stay unknown
    return answer(schemas.TokenInfo.model_validate(user_service.revoke_token(db(), actor, token)))


@operation(
    bp,
    "get",
    "/audit",
    operation_id="listAuditLog",
    tag="users",
    query=schemas.PageQuery,
    responses={200: schemas.AuditPage},
    errors=(400, 403),
)
def audit_log() -> Any:
    """Every write, newest first: who, what, on which target, from where (admin)"""
    actor = current_actor()
    query = query_model(schemas.PageQuery)
    entries, total = audit.entries(db(), actor, page=query.page, per_page=query.per_page)
    return answer(
        schemas.AuditPage(
            entries=[schemas.AuditEntry.model_validate(e) for e in entries], total=total, page=query.page, per_page=query.per_page
        )
    )
