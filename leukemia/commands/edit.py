"""`leukemia edit`: change a job's or a sweep's notes, tags, priority or retention after submit
(core.service.job_edits, the same change as PATCH /api/jobs/{id} and the dashboard's edit form)."""

from __future__ import annotations

from typing import Any

import click

from core.common.errors import UserInputError
from core.service.access import cli_actor
from core.service.job_options import COLUMN_OPTIONS, RETENTION_HELP, JobOptions, parse_edit
from leukemia.commands.base import UserCommand, params_options, run_db_command, run_user_command, schema_values


@click.command(name="edit", cls=UserCommand)
@click.argument("job_id", type=int, required=False)
@click.option("--sweep", "sweep_id", type=int, default=None, help="Edit this sweep instead of a job.")
@click.option("--note", default=None, help="New notes (replace the old ones; '' clears them).")
@click.option("--tag", "tags", multiple=True, help="Replace every tag with these (repeat for more).")
@click.option("--no-tags", is_flag=True, help="Remove every tag.")
@click.option("--add-tag", "add_tags", multiple=True, help="Add a tag (repeat for more).")
@click.option("--remove-tag", "remove_tags", multiple=True, help="Remove a tag (repeat for more).")
@click.option(
    "--priority",
    type=click.Choice(["low", "normal", "high"]),
    default=None,
    help="Among queued jobs of a queue, higher starts first; a sweep's also goes to its queued jobs.",
)
@click.option("--retention", default=None, help=f"{RETENTION_HELP}; '' returns to the global policy.")
# Every other option of JobOptions, as `leukemia submit` spells it ('' clears it).
@params_options(JobOptions, exclude=COLUMN_OPTIONS, show_defaults=False)
def edit_command(
    job_id: int | None,
    sweep_id: int | None,
    note: str | None,
    tags: tuple[str, ...],
    no_tags: bool,
    add_tags: tuple[str, ...],
    remove_tags: tuple[str, ...],
    priority: str | None,
    retention: str | None,
    **more: Any,
) -> None:
    """Edit a job (JOB_ID) or a sweep (--sweep ID): options left out stay as they are."""
    if (job_id is None) == (sweep_id is None):
        run_user_command(lambda: _refuse("give a JOB_ID or --sweep SWEEP_ID (one of them)"))
    values: dict[str, Any] = {"add_tags": list(add_tags), "remove_tags": list(remove_tags), **schema_values(more)}
    if tags or no_tags:
        values["tags"] = list(tags)
    for name, value in (("description", note), ("priority", priority), ("retention", retention)):
        if value is not None:
            values[name] = value
    if retention == "":  # the option's way of saying "the global policy"
        values["retention"] = None
    changes = run_user_command(lambda: parse_edit(values))

    def edit() -> str:
        from core.service import job_edits
        from core.service.db import get_sessionmaker
        from core.service.settings import get_settings

        with get_sessionmaker().begin() as session:
            if sweep_id is not None:
                changed = job_edits.edit_sweep(session, cli_actor(), sweep_id, changes)
                return job_edits.describe_changes(f"sweep {sweep_id}", changed)
            changed = job_edits.edit_job(session, cli_actor(), job_id, changes, get_settings())  # type: ignore[arg-type]
            return job_edits.describe_changes(f"job {job_id}", changed)

    click.echo(run_db_command(edit))


def _refuse(message: str) -> None:
    raise UserInputError(message)
