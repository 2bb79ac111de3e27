"""The Celery app, configured from settings: the broker carries job ids only, no result backend.

Redis or RabbitMQ in deployment; the embedded default is kombu's SQLAlchemy transport over SQLite
in LEUKEMIA_HOME. Late acks and prefetch 1 keep at most one unstarted message per worker; the
job row's lease, not the broker, is what keeps a job from running twice.

Config only: senders name the task (RUN_JOB_TASK, `leukemia.run_job`, through `send_run_job`) and import
no task code. Task events are on, every connection asks for the AMQP heartbeat from settings, RabbitMQ
senders pool no connections, and a lost broker connection never cancels a running job. `declare_queues`
creates the embedded broker's tables and queue rows under a lock file, since kombu's first use is not safe
across processes. The embedded broker cannot broadcast, so Celery's remote control and events (`celery
inspect`, Flower) need Redis or RabbitMQ."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import worker_process_init

from core.service.db import private_sqlite_file, reset_engines, sqlite_path
from core.service.settings import get_settings

# The job task's name (worker.tasks.run_next_job): kept as it was when the function was run_job, since
# messages already queued carry it.
RUN_JOB_TASK = "leukemia.run_job"
EMBEDDED_POLLING_SECONDS = 0.2

_apps: dict[str, Celery] = {}
_declared_queues: set[tuple[str, str]] = set()  # (broker url, queue) this process has declared


class ServiceCelery(Celery):
    """Celery whose every broker connection asks for the AMQP heartbeat (broker_heartbeat): Celery gives it
    to the worker's consumer only, so the senders' connections (the web's submit, the worker's reaper)
    and the worker's event connection had none (RabbitMQ listed them with timeout 0)."""

    def connection_for_write(self, url: Any = None, heartbeat: float | None = None, **kwargs: Any) -> Any:
        return super().connection_for_write(
            url, heartbeat=self.conf.broker_heartbeat if heartbeat is None else heartbeat, **kwargs
        )


def make_app(broker_url: str) -> Celery:
    """A Celery app for one broker URL. Senders name the task (RUN_JOB_TASK); its body is declared in
    worker.tasks, which only a consuming worker imports (worker.runtime), so sending never imports task code."""
    app = ServiceCelery("leukemia", broker=broker_url, set_as_current=False)
    transport_options: dict[str, object] = {}
    if broker_url.startswith("sqla+"):
        # kombu passes these to its create_engine: wait on a locked SQLite file instead of failing.
        transport_options["connect_args"] = {"timeout": 30}
        # The SQL transport polls an empty queue every polling_interval (1 s by default, which is
        # then the submit-to-start latency). It cannot go in transport_options (kombu would hand it
        # to create_engine too), so it is set on the transport class, for this process only.
        from kombu.transport import sqlalchemy as kombu_sqlalchemy

        kombu_sqlalchemy.Transport.polling_interval = EMBEDDED_POLLING_SECONDS
        use_wal(broker_url.removeprefix("sqla+"))
    app.conf.update(
        task_ignore_result=True,  # the job rows are the results
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="gpu",
        task_create_missing_queues=True,
        task_serializer="json",
        accept_content=["json"],
        broker_transport_options=transport_options,  # visibility_timeout left at its default (1 h)
        broker_connection_retry_on_startup=True,
        # RabbitMQ (py-amqp): the worker's consumer sends these heartbeats from its own thread while a
        # job trains in the pool (worker.runtime.pool_for), so a job of any length keeps its connection.
        broker_heartbeat=get_settings().broker_heartbeat_seconds,
        # RabbitMQ: a sender connects for each message instead of keeping pooled connections. An idle one
        # sends no heartbeats (nothing of a web process or the reaper would), so RabbitMQ closes it, and the
        # next message written into it before the close is noticed is lost. Measured: 5.4 ms a send
        # against 0.5 ms pooled (200 sends, 2 cores at load 3). Redis has no heartbeats; its pool stays.
        broker_pool_limit=0 if broker_url.startswith(("amqp", "pyamqp")) else 10,
        # A lost broker connection does not stop the running job: its lease in the database stays
        # fresh, and the message the broker redelivers finds the job leased and is skipped (claimed
        # once). Cancelling would throw away the epoch in progress, and a thread cannot be cancelled.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        # Task events for Flower and `celery events` (worker heartbeats: worker.runtime); the embedded
        # broker cannot broadcast, so there they go nowhere (docs/deploy.md, "Monitoring").
        worker_send_task_events=True,
        worker_hijack_root_logger=True,
        worker_redirect_stdouts_level="INFO",
        enable_utc=True,
    )
    return app


def use_wal(sqlite_url: str) -> None:
    """Put the broker's SQLite file in WAL mode (a persistent setting of the file), so the polling
    worker and the submitting web/CLI do not block each other's reads."""
    path = sqlite_path(sqlite_url)
    if path is None:
        return
    private_sqlite_file(path)
    # Under the broker file's lock: processes switching a new file to WAL at once can get "database is
    # locked" at once, without SQLite's busy wait (seen in tests/test_broker.py, one round in about 18).
    with broker_file_lock(path), closing(sqlite3.connect(path, timeout=30)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


@contextmanager
def broker_file_lock(path: Path | str) -> Iterator[None]:
    """An exclusive lock on a lock file beside the embedded broker's file: its first use, one process at a time."""
    lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock_fd)  # closing the descriptor releases the lock


def declare_queues(app: Celery, queues: list[str] | tuple[str, ...]) -> None:
    """Create the embedded broker's tables and these queues' rows, one process at a time.

    kombu's SQL transport creates both on first use and does not guard against another process
    doing the same at that moment: a web app, a CLI and a worker starting together then fail with
    an IntegrityError on kombu_queue.name, or with "'NoneType' object has no attribute 'client'"
    from a transport that the failed attempt closed. A lock file beside the broker file makes
    that first use serial; after it, sends and consumers only find the rows. Redis needs none."""
    url = str(app.conf.broker_url)
    path = sqlite_path(url.removeprefix("sqla+")) if url.startswith("sqla+") else None
    todo = [queue for queue in queues if (url, queue) not in _declared_queues]
    if path is None or not todo:
        return
    with broker_file_lock(path), app.connection_for_write() as connection:
        channel = connection.default_channel
        for queue in todo:
            channel.queue_declare(queue=queue, durable=True, auto_delete=False)
    _declared_queues.update((url, queue) for queue in todo)


def send_run_job(job_id: int, queue: str) -> None:
    """Send one job id to its queue (declared first on the embedded broker)."""
    app = get_app()
    declare_queues(app, [queue])
    app.send_task(RUN_JOB_TASK, args=[job_id], queue=queue)


def get_app() -> Celery:
    """The process's app for the configured broker (made on first use)."""
    url = get_settings().resolved_broker_url
    if url not in _apps:
        _apps[url] = make_app(url)
    return _apps[url]


@worker_process_init.connect
def _fresh_engine_in_child(**_: object) -> None:
    """A prefork child must not share the parent's database connections."""
    reset_engines(close=False)
