"""The models of users, API tokens and the audit log (core.service.users, core.service.audit)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from core.common.text import PRINTABLE_PATTERN, name_pattern
from core.service.records import ROLES
from core.service.users import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    TOKEN_NAME_LENGTH,
    USERNAME_PATTERN,
)
from web.api.schemas.common import JsonRequest, Paged, Row, UtcTime

Role = Literal[ROLES]  # type: ignore[valid-type]


class Me(BaseModel):
    """Who the request acts as: the token's user (the settings' API_TOKEN: the user ADMIN_USERNAME, with their
    role now), or the logged-in one."""

    id: int
    username: str
    role: Role


class UserInfo(Row):
    id: int
    username: str
    role: Role
    disabled: bool = Field(description="no login, and its tokens are refused")
    created_at: UtcTime


class UserList(BaseModel):
    users: list[UserInfo]


class UserCreate(JsonRequest):
    """POST /api/users."""

    username: str = Field(
        description="1-150 letters, digits and . _ @ -, starting with a letter or digit",
        json_schema_extra={"pattern": USERNAME_PATTERN},
    )
    role: Role = "member"
    password: str | None = Field(
        None,
        description="8-200 characters; omitted: one is generated and answered once",
        json_schema_extra={"minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD, "pattern": PRINTABLE_PATTERN},
    )


class UserCreated(BaseModel):
    user: UserInfo
    password: str | None = Field(description="the generated password, shown this once; null when one was given")


class UserUpdate(JsonRequest):
    """PATCH /api/users/{user_id}: the fields to change."""

    role: Role | None = None
    disabled: bool | None = Field(None, description="true ends the user's sessions and refuses their tokens at once")


class PasswordReset(BaseModel):
    user: UserInfo
    password: str = Field(description="the new generated password, shown this once; the user's sessions ended")


class TokenInfo(Row):
    id: int
    user_id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: UtcTime
    last_used_at: UtcTime | None
    revoked_at: UtcTime | None


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class TokenCreate(JsonRequest):
    """POST /api/tokens: a token for yourself."""

    name: str = Field(
        description="a label, e.g. the machine that uses it (1-100 characters)",
        json_schema_extra={"maxLength": TOKEN_NAME_LENGTH, "pattern": name_pattern()},
    )


class TokenCreated(BaseModel):
    token: TokenInfo
    secret: str = Field(description="the token, shown this once (only its SHA-256 is kept): send it as Bearer")


class AuditEntry(Row):
    id: int
    at: UtcTime
    user_id: int | None
    username: str
    action: str = Field(description="<target>.<verb>, e.g. job.submit, user.disable, token.revoke")
    target_type: str
    target_id: str | None
    detail: dict[str, Any] | None
    address: str | None = Field(description="the client address of the web request; null from the CLI")


class AuditPage(Paged):
    entries: list[AuditEntry]
