"""Who may do what: the one place roles are turned into permissions.

admin: everything, user and webhook management. member: submit; cancel, retry, edit and delete
their own jobs and sweeps; read all. viewer: read. The CLI runs on the server with the database's
credentials, so it acts as an admin (its audit rows name the operating-system user)."""

from __future__ import annotations

import getpass
from dataclasses import dataclass

from core.common.errors import OneLineError
from core.service.records import ROLES


class PermissionDenied(OneLineError):
    """The actor's role does not allow this; the API answers 403, the CLI exits 2."""


@dataclass(frozen=True)
class Actor:
    """Who is acting: a user (by login or token), or the CLI on the server (user_id None)."""

    user_id: int | None
    username: str
    role: str
    address: str | None = None  # the client address of a web request, for the audit log

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def cli_actor() -> Actor:
    """The operator at the server's command line."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (containers)
        name = "unknown"
    return Actor(user_id=None, username=f"cli:{name}", role="admin")


def check_role(role: str) -> str:
    """A role name as stored, or the one-line refusal naming the choices."""
    if role not in ROLES:
        from core.common.errors import UserInputError

        raise UserInputError(f"role: {role!r} is not a role; choose one of {', '.join(ROLES)}", field="role")
    return role


def require_submit(actor: Actor) -> None:
    """Admins and members submit; viewers only read."""
    if actor.role not in ("admin", "member"):
        raise PermissionDenied(f"{actor.username} is a {actor.role}: only members and admins may submit or change jobs")


def require_admin(actor: Actor, what: str) -> None:
    if not actor.is_admin:
        raise PermissionDenied(f"{actor.username} is a {actor.role}: only admins may {what}")


def require_owner(actor: Actor, owner_id: int | None, what: str) -> None:
    """A member may change what they submitted; an admin anything. `what` names it ("job 7")."""
    if actor.is_admin:
        return
    require_submit(actor)
    if owner_id is None or owner_id != actor.user_id:
        raise PermissionDenied(f"{what} was submitted by someone else: only its owner or an admin may change it")
