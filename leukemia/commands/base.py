"""What every `leukemia` command shares: one-line errors (exit 2) and options built from the
pydantic schemas, so the CLI, `leukemia submit`, the API and the forms share names, defaults and checks.
`run_user_command` turns a OneLineError into that line; `run_db_command` also an unreachable or
uninitialised database; `UserCommand` does the same for click's own option errors."""

from __future__ import annotations

import sys
import typing
from typing import Callable, TypeVar

import click
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from core.common.errors import NoSpaceLeft, OneLineError
from core.engine.model.limits import is_no_space

T = TypeVar("T")


def run_user_command(action: Callable[[], T]) -> T:
    """Run a command body: bad input is one line and exit 2, never a traceback."""
    try:
        return action()
    except OneLineError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except OSError as error:
        if is_no_space(error):
            click.echo(f"error: {NoSpaceLeft(error.filename or 'the output folder')}", err=True)
            sys.exit(2)
        if error.filename is None:
            raise  # not about a path the user gave: a bug, keep the traceback
        # An output folder that cannot be made, a read-only cache, a full disk: the path says which.
        click.echo(f"error: cannot use {error.filename}: {error.strerror}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


def run_db_command(action: Callable[[], T]) -> T:
    """run_user_command, plus: an unreachable or uninitialised database is one line, not a traceback."""
    from sqlalchemy.exc import OperationalError, ProgrammingError

    from core.service.db import database_unavailable

    def guarded() -> T:
        try:
            return action()
        except (OperationalError, ProgrammingError) as error:
            raise database_unavailable(error) from None

    return run_user_command(guarded)


# ---------------------------------------------------------------- train, finetune, evaluate, predict
# Options are built from the pydantic schemas in core.engine.params, so the CLI, `leukemia submit`,
# the API and the forms share one set of names, defaults and checks.

SCHEMA_FLAG_ALIASES = {"augment": "--aug/--no-aug"}  # the lab's `--no-aug` spelling


class UserCommand(click.Command):
    """A click command whose option errors are one line (`error: ...`, exit 2), like UserInputError."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as error:
            click.echo(f"error: {error.format_message()}", err=True)
            sys.exit(2)


def _schema_option(name: str, info: FieldInfo, option_name: str | tuple[str, ...] | None, show_default: bool = True) -> Callable:
    """One click option for one schema field: bools as --x/--no-x, Literals as choices, lists repeated.
    A tuple of option names gives the field several spellings (`--csv` / `--split`)."""
    annotation = info.annotation
    arguments = typing.get_args(annotation)
    optional = type(None) in arguments
    if optional:
        annotation = next(a for a in arguments if a is not type(None))
    flags = (option_name,) if isinstance(option_name, str) else option_name or (f"--{name.replace('_', '-')}",)
    flag = flags[0]
    default = None if info.is_required() else info.get_default(call_default_factory=True)
    help_text = info.description or ""
    if info.is_required():
        help_text = f"{help_text} [required]"
    elif show_default and default not in (None, "", []):
        shown = str(default).lower() if isinstance(default, bool) else default
        help_text = f"{help_text} [default: {shown}]"
    # Options default to None: only what the user typed reaches the schema (see schema_values).
    settings: dict = {"default": None, "help": help_text.strip()}
    if annotation is bool:
        declarations = [f"{flag}/--no-{flag[2:]}"]
        if name in SCHEMA_FLAG_ALIASES:
            declarations.append(SCHEMA_FLAG_ALIASES[name])
        return click.option(*declarations, name, **settings)
    if typing.get_origin(annotation) is typing.Literal:
        settings["type"] = click.Choice([str(v) for v in typing.get_args(annotation)])
    elif typing.get_origin(annotation) is list:
        settings.update(multiple=True, default=())
    else:
        settings["type"] = {int: click.INT, float: click.FLOAT}.get(annotation, click.STRING)
    return click.option(*flags, name, **settings)


def params_options(
    schema: type[BaseModel],
    *,
    exclude: tuple[str, ...] = (),
    rename: dict[str, str | tuple[str, ...]] | None = None,
    show_defaults: bool = True,
) -> Callable[[Callable], Callable]:
    """Decorator adding one option per field of a core.engine.params schema (`data_dir` → `--data-dir`).

    Unset options arrive as None (lists as ()), so `schema_values` passes only what the user typed
    and the schema supplies its own defaults. `rename` maps a field to its option (`{"data_dir": "--data"}`)."""
    rename = rename or {}

    def decorate(command: Callable) -> Callable:
        fields = [(n, i) for n, i in schema.model_fields.items() if n != "kind" and n not in exclude]
        for name, info in reversed(fields):  # click lists options in decoration order, bottom up
            command = _schema_option(name, info, rename.get(name), show_defaults)(command)
        return command

    return decorate


def schema_values(options: dict) -> dict:
    """The options the user actually gave, ready for core.engine.params.parse_params."""
    given = {name: value for name, value in options.items() if value is not None and value != ()}
    return {name: list(value) if isinstance(value, tuple) else value for name, value in given.items()}
