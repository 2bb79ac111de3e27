"""`leukemia` commands that need no server: check, synth, train, finetune, evaluate, predict.

Each command parses its options, calls one core function and prints the outcome.
A UserInputError becomes one line on stderr and exit code 2 (see `run_user_command`)."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

import click

from core.errors import UserInputError

T = TypeVar("T")


def run_user_command(action: Callable[[], T]) -> T:
    """Run a command body: bad input is one line and exit 2, never a traceback."""
    try:
        return action()
    except UserInputError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


@click.group(name="core")
def core_cli() -> None:
    """Commands that run the machine-learning job directly, with no server."""


# Commands are added below by @core_cli.command(...).
