"""`leukemia delete`, `leukemia gc` and `leukemia disk`: free the storage of finished jobs and see
what the run folders take (core.service.deletion, core.service.disk). The CLI acts as an admin (core.service.access.cli_actor)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from core.common.errors import UserInputError
from core.service.access import cli_actor
from leukemia.commands.base import UserCommand, run_db_command

if TYPE_CHECKING:
    from core.service.deletion import Deletion


@click.command(name="delete", cls=UserCommand)
@click.argument("job_ids", nargs=-1, type=int)
@click.option("--sweep", "sweep_id", type=int, default=None, help="Delete this sweep and all its (finished) jobs.")
@click.option(
    "--cv", "cv_id", type=int, default=None, help="Delete this cross-validation: its (finished) fold and ensemble jobs, then it."
)
def delete_command(job_ids: tuple[int, ...], sweep_id: int | None, cv_id: int | None) -> None:
    """Delete finished jobs (or a sweep, or a cross-validation): their run folders and rows; prints the space freed."""
    run_db_command(lambda: _delete(list(job_ids), sweep_id, cv_id))


def _delete(job_ids: list[int], sweep_id: int | None, cv_id: int | None) -> None:
    from core.common.formats import human_bytes
    from core.service import deletion
    from core.service.db import get_sessionmaker

    if [bool(job_ids), sweep_id is not None, cv_id is not None].count(True) != 1:
        raise UserInputError("job_ids: give job ids, --sweep ID or --cv ID (one of them)", field="job_ids")
    actor = cli_actor()
    if cv_id is not None or sweep_id is not None:
        with get_sessionmaker().begin() as session:
            done = (
                deletion.delete_cross_validation(session, cv_id, actor=actor)
                if cv_id is not None
                else deletion.delete_sweep(session, sweep_id, actor=actor)
            )
        _echo_freed(done)
        return
    total = 0
    for job_id in job_ids:  # each in its own transaction: one refusal stops here, what went before stays gone
        with get_sessionmaker().begin() as session:
            done = deletion.delete_job(session, job_id, actor=actor)
        total += done.freed_bytes
        _echo_freed(done)
    if len(job_ids) > 1:
        click.echo(f"total: {human_bytes(total)} ({total} bytes) freed")


def _echo_freed(done: Deletion) -> None:
    """One line a delete: what went and the space freed, readable and in bytes."""
    from core.common.formats import human_bytes

    click.echo(f"deleted {done.what}: {human_bytes(done.freed_bytes)} ({done.freed_bytes} bytes) freed")


@click.command(name="gc", cls=UserCommand)
@click.option("--older-than", "older_than", required=True, help="Finished longer ago than this: 12h, 30d, 2w.")
@click.option(
    "--status",
    "statuses",
    default="failed,cancelled",
    show_default=True,
    help="Comma-separated finished statuses to collect (succeeded, failed, cancelled).",
)
@click.option("--dry-run", is_flag=True, help="Delete nothing; print what would go and the space it would free.")
def gc_command(older_than: str, statuses: str, dry_run: bool) -> None:
    """Delete old finished jobs (default: failed and cancelled) through the same delete as `leukemia delete`."""
    run_db_command(lambda: _gc(older_than, statuses, dry_run))


def _gc(older_than: str, statuses: str, dry_run: bool) -> None:
    from core.common.formats import human_bytes
    from core.service import deletion

    age, wanted = deletion.parse_age(older_than), deletion.parse_statuses(statuses)
    report = deletion.collect_garbage(age, wanted, dry_run=dry_run, actor=cli_actor())
    verb = "would free" if dry_run else "freed"
    for entry in report.jobs:
        finished = entry.finished_at.strftime("%Y-%m-%d %H:%M") if entry.finished_at else "—"
        head = f"job {entry.job_id} {entry.kind} {entry.status} (finished {finished})"
        if entry.skipped:
            click.echo(f"{head}: skipped: {entry.skipped}")
        else:
            click.echo(f"{head}: {verb} {human_bytes(entry.bytes)} ({entry.bytes} bytes)")
    went = [entry for entry in report.jobs if not entry.skipped]
    click.echo(
        f"{'dry run: ' if dry_run else ''}{len(went)} job(s) {'would go' if dry_run else 'deleted'}, "
        f"{verb} {human_bytes(report.total_bytes)} ({report.total_bytes} bytes) in total"
        + (f"; {len(report.jobs) - len(went)} skipped" if len(went) < len(report.jobs) else "")
    )


@click.command(name="disk", cls=UserCommand)
def disk_command() -> None:
    """Disk use: the jobs' run folders in the artifact store in total, the largest ones, and the artifacts volume's free space."""
    run_db_command(_disk)


def _disk() -> None:
    from sqlalchemy import select

    from core.common.formats import human_bytes
    from core.service.db import get_sessionmaker
    from core.service.disk import disk_summary
    from core.service.records import Job
    from core.service.settings import get_settings

    with get_sessionmaker().begin() as session:
        summary = disk_summary(session)
        largest = session.execute(
            select(Job.id, Job.kind, Job.status, Job.disk_bytes)
            .where(Job.disk_bytes.is_not(None))
            .order_by(Job.disk_bytes.desc(), Job.id)
            .limit(10)
        ).all()
    volume = summary.volume
    click.echo(
        f"run folders: {human_bytes(summary.jobs_bytes)} ({summary.jobs_bytes} bytes) over "
        f"{summary.measured_jobs} job(s); {summary.unmeasured_jobs} not measured (queued or running)"
    )
    if volume is not None:
        click.echo(
            f"artifacts volume ({volume.path}): {human_bytes(volume.free_bytes)} free of {human_bytes(volume.total_bytes)}"
        )
    else:
        click.echo(f"artifact store {summary.store_url}: what it holds is counted above")
    click.echo(f"retention policy (RETENTION): {get_settings().retention}")
    for job_id, kind, status, size in largest:
        click.echo(f"  job {job_id} {kind} {status}: {human_bytes(size)}")
