"""`leukemia users` and `leukemia tokens`: manage who may use the dashboard and the API, on the server.

The CLI acts as core.service.access.cli_actor() (an admin named cli:<os user> in the audit log). A password
or token made here is printed once; only its hash is kept. Bad input is one line and exit 2."""

from __future__ import annotations

import sys

import click

from core.service.access import cli_actor
from core.service.records import ROLES
from leukemia.commands.base import UserCommand, run_db_command


@click.group()
def users() -> None:
    """Users and roles: admin (everything), member (submit; change their own jobs), viewer (read)."""


@users.command(name="add", cls=UserCommand)
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), default="member", show_default=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input (default: generate one).")
def add_user(name: str, role: str, password_stdin: bool) -> None:
    """Add a user; a generated password is printed once."""
    password = sys.stdin.readline().rstrip("\r\n") if password_stdin else None

    def action() -> str | None:
        from core.service import users as service
        from core.service.db import get_sessionmaker

        with get_sessionmaker().begin() as session:
            _, made = service.add_user(session, cli_actor(), name, role, password)
            return made.value if made else None

    made = run_db_command(action)
    click.echo(f"user {name} added ({role})" + (f"; password: {made}  (shown once)" if made else ""))


@users.command(name="list", cls=UserCommand)
def list_users() -> None:
    """Every user: name, role, status, created."""

    def action() -> list[str]:
        from core.service import users as service
        from core.service.db import get_sessionmaker

        with get_sessionmaker().begin() as session:
            return [
                f"{u.id:>4}  {u.username:<24} {u.role:<7} {'disabled' if u.disabled else 'enabled':<9} "
                f"{u.created_at:%Y-%m-%d %H:%M}"
                for u in service.list_users(session, cli_actor())
            ]

    lines = run_db_command(action)
    click.echo("\n".join([f"{'id':>4}  {'name':<24} {'role':<7} {'status':<9} created (UTC)", *lines]))


def _change(name: str, change) -> None:  # type: ignore[no-untyped-def]
    """Apply change(session, user) to the named user in one transaction (with its audit row)."""
    from core.service import users as service
    from core.service.db import get_sessionmaker

    def action():  # type: ignore[no-untyped-def]
        with get_sessionmaker().begin() as session:
            return change(session, service.find_user(session, name))

    return run_db_command(action)


@users.command(name="disable", cls=UserCommand)
@click.argument("name")
def disable_user(name: str) -> None:
    """Disable a user: their sessions end and their tokens are refused at once."""
    from core.service.users import set_disabled

    _change(name, lambda session, user: set_disabled(session, cli_actor(), user, True))
    click.echo(f"user {name} disabled")


@users.command(name="enable", cls=UserCommand)
@click.argument("name")
def enable_user(name: str) -> None:
    """Enable a disabled user again."""
    from core.service.users import set_disabled

    _change(name, lambda session, user: set_disabled(session, cli_actor(), user, False))
    click.echo(f"user {name} enabled")


@users.command(name="set-role", cls=UserCommand)
@click.argument("name")
@click.argument("role", type=click.Choice(ROLES))
def set_role(name: str, role: str) -> None:
    """Change a user's role (the last enabled admin stays an admin)."""
    from core.service.users import set_role as change_role

    _change(name, lambda session, user: change_role(session, cli_actor(), user, role))
    click.echo(f"user {name} is now a {role}")


@users.command(name="reset-password", cls=UserCommand)
@click.argument("name")
def reset_password(name: str) -> None:
    """Give a user a new generated password (printed once); their sessions end and their API tokens are revoked."""
    from core.service.users import reset_password as reset

    made = _change(name, lambda session, user: reset(session, cli_actor(), user))
    click.echo(f"user {name}: new password: {made.value}  (shown once; their sessions ended and their API tokens were revoked)")


@click.group()
def tokens() -> None:
    """Per-user API tokens (Authorization: Bearer <token>), stored as SHA-256, revocable."""


@tokens.command(name="create", cls=UserCommand)
@click.option("--user", "name", required=True, help="Whose token it is (it acts with their role).")
@click.option("--name", "label", required=True, help="A label, e.g. the machine that uses it.")
def create_token(name: str, label: str) -> None:
    """Create a token for a user; it is printed once."""
    from core.service.users import create_token as create

    token, made = _change(name, lambda session, user: create(session, cli_actor(), user, label))
    click.echo(f"token {token.id} ({label}) for {name}: {made.value}  (shown once)")


@tokens.command(name="list", cls=UserCommand)
@click.option("--user", "name", default=None, help="Only this user's tokens.")
def list_tokens(name: str | None) -> None:
    """Tokens, newest first: id, user, name, prefix, created, last used, revoked."""

    def action() -> list[str]:
        from core.service import users as service
        from core.service.db import get_sessionmaker
        from core.service.records import User

        def when(moment) -> str:  # type: ignore[no-untyped-def]
            return "—" if moment is None else f"{moment:%Y-%m-%d %H:%M}"

        with get_sessionmaker().begin() as session:
            user_id = service.find_user(session, name).id if name is not None else None
            names = dict(session.query(User.id, User.username).all())
            return [
                f"{t.id:>4}  {names.get(t.user_id, '?'):<16} {t.name[:24]:<24} {t.prefix}…  {when(t.created_at):<16}  "
                f"{when(t.last_used_at):<16}  {when(t.revoked_at)}"
                for t in service.list_tokens(session, user_id)
            ]

    lines = run_db_command(action)
    header = f"{'id':>4}  {'user':<16} {'name':<24} {'prefix':<11}  {'created (UTC)':<16}  {'last used':<16}  revoked"
    click.echo("\n".join([header, *lines]))


@tokens.command(name="revoke", cls=UserCommand)
@click.argument("token_id", type=int)
def revoke_token(token_id: int) -> None:
    """Revoke a token: refused from the next request on."""

    def action() -> None:
        from core.service import users as service
        from core.service.db import get_sessionmaker

        with get_sessionmaker().begin() as session:
            service.revoke_token(session, cli_actor(), service.find_token(session, token_id))

    run_db_command(action)
    click.echo(f"token {token_id} revoked")
