"""`leukemia db upgrade` and `leukemia worker`: bring the schema up, and run a Celery worker that takes
queued jobs (its queues, GPU pinning, name, metrics port and health file): options parsed here,
worker.runtime.serve_worker runs it. Every bad input is one line and exit 2."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import click

from core.common.errors import UserInputError
from core.service.settings import get_settings
from leukemia.commands.base import UserCommand, run_db_command, run_user_command

# --- database ----------------------------------------------------------------------------


@click.group()
def db() -> None:
    """Database schema (Alembic migrations packaged in core)."""


@db.command(cls=UserCommand)
def upgrade() -> None:
    """Apply every pending migration (safe to run again)."""
    from core.service.db import upgrade_database

    run_db_command(upgrade_database)
    click.echo(f"database is up to date ({_safe_url(get_settings().resolved_database_url)})")


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


# --- worker ------------------------------------------------------------------------------


@click.command(cls=UserCommand)
@click.option("--queues", default="gpu,cpu", show_default=True, help="Comma-separated queues to consume.")
@click.option("--gpu", default=None, help="Pin this worker to one GPU (sets CUDA_VISIBLE_DEVICES before CUDA starts).")
@click.option(
    "--concurrency",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="Jobs at once; 1 per GPU worker (a pool thread), more uses the prefork pool.",
)
@click.option("--hostname", default=None, help="Worker name (default: worker-<gpu|cpu>-<pid>@<host>).")
@click.option("--loglevel", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
@click.option(
    "--metrics-port",
    default=None,
    type=click.IntRange(1, 65535),
    help="Serve this process's Prometheus metrics on this port (needs METRICS_TOKEN and --concurrency 1).",
)
@click.option(
    "--health-file",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Touch this file each time the worker's presence heartbeat reached the database (for a cheap healthcheck).",
)
def worker(
    queues: str,
    gpu: str | None,
    concurrency: int,
    hostname: str | None,
    loglevel: str,
    metrics_port: int | None,
    health_file: Path | None,
) -> None:
    """Run a Celery worker that takes queued jobs, with its presence heartbeat and the lost-job reaper."""
    queue_names = [q.strip() for q in queues.split(",") if q.strip()]
    if not queue_names:
        run_user_command(lambda: _raise("queues: give at least one queue name"))
    if metrics_port is not None and concurrency != 1:
        run_user_command(
            lambda: _raise(
                "--metrics-port: needs --concurrency 1 (a prefork pool runs jobs in child "
                "processes, whose counters this process cannot serve); the web's /metrics "
                "covers every worker"
            )
        )
    # CUDA numbers devices fastest first unless told otherwise; NVML (nvidia-smi, the GPU metrics) by PCI bus.
    # The same order for both, so --gpu N, cuda:N and the exporter's gpu="N" are one device.
    os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if gpu is not None:
        if not gpu.strip().isdigit():
            run_user_command(lambda: _raise(f"gpu: {gpu!r} is not a GPU index"))
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu.strip()  # before anything initialises CUDA
    hostname = hostname or f"worker-{'gpu' + gpu if gpu is not None else 'cpu'}-{os.getpid()}@{socket.gethostname()}"

    def serve() -> None:
        from worker.runtime import serve_worker

        serve_worker(queue_names, gpu, concurrency, hostname, loglevel, metrics_port, health_file)

    run_db_command(serve)


def _raise(message: str) -> None:
    raise UserInputError(message)
