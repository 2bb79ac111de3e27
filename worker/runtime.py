"""The worker process around Celery: its row in the workers table (presence heartbeat), the
reaper that re-queues jobs whose worker went silent (and reports the worker lost), the webhook
sender, and serving the queues. The CLI parses the options and calls `serve_worker`; Celery runs
`worker.tasks.run_next_job` for each message (this module imports worker.tasks, where it is declared).
One job at a time runs on Celery's thread pool, so the consumer thread stays free for remote control,
events and broker heartbeats while it trains; more than one run in prefork children."""

from __future__ import annotations

import ast
import logging
import os
import threading
from pathlib import Path

from celery.signals import setup_logging, worker_shutting_down

import worker.tasks  # noqa: F401  (it declares the job task, run_next_job; this worker's app takes it when it starts)
from core.service import jobs, webhooks
from core.service.db import get_sessionmaker, upgrade_database
from core.service.logs import configure_logging, set_process_log_fields
from core.service.settings import Settings, get_settings
from worker import metrics
from worker.celery_app import RUN_JOB_TASK, declare_queues, get_app
from worker.dispatch import requeue_and_resend_lost_jobs, resend_waiting_jobs
from worker.job_progress import SHUTTING_DOWN

log = logging.getLogger("leukemia.worker")


class WorkerPresence(threading.Thread):
    """Heartbeats this worker's row and reaps jobs whose worker went silent (then re-sends them)."""

    def __init__(self, hostname: str, queues: list[str], settings: Settings, health_file: Path | None = None) -> None:
        super().__init__(name="worker-presence", daemon=True)
        self.hostname = hostname
        self.queues = queues
        self.settings = settings
        self.health_file = health_file
        self.done = threading.Event()

    def run(self) -> None:
        settings = self.settings
        try:
            resent = resend_waiting_jobs(self.queues)
            if resent:
                log.info("sent waiting jobs again at start (a duplicate is skipped by the claim): %s", resent)
        except Exception:  # the broker may not be up yet; the jobs keep their place in the table
            log.exception("re-sending waiting jobs at start failed")
        reap_every = max(settings.stale_after_seconds / 2, 1.0)
        since_reap = reap_every  # reap at once: a restarted worker picks up what its predecessor lost
        while True:
            try:
                with get_sessionmaker().begin() as session:
                    jobs.worker_seen(session, self.hostname)
                if self.health_file is not None:  # after the row is committed: its age says what the row's would
                    self.health_file.touch()
                if since_reap >= reap_every:
                    since_reap = 0.0
                    requeued = requeue_and_resend_lost_jobs()
                    if requeued:
                        log.warning("requeued jobs whose worker was lost: %s", requeued)
            except Exception:  # the database or broker may be briefly away; try again next beat
                log.exception("worker presence/reaper step failed")
            if self.done.wait(settings.heartbeat_seconds):
                return
            since_reap += settings.heartbeat_seconds


class WebhookSender(threading.Thread):
    """Sends due webhook deliveries (core.service.webhooks.deliver_due) beside the jobs: its own thread and
    transactions, so a slow or failing receiver never holds up or fails a job; errors are logged."""

    POLL_SECONDS = 1.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(name="webhook-sender", daemon=True)
        self.settings = settings
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                webhooks.deliver_due(self.settings)
            except Exception:  # the database may be briefly away; the deliveries wait in their table
                log.exception("webhook delivery pass failed")
            self.done.wait(self.POLL_SECONDS)


@setup_logging.connect
def _configure_logging(loglevel: int | str = logging.INFO, **_: object) -> None:
    """Celery leaves the logging to us (a receiver of this signal): LOG_FORMAT's lines, as the web's."""
    configure_logging(loglevel or logging.INFO)
    for name in ("celery.worker.strategy", "celery.app.trace"):  # a filter sees its own logger's records only
        logging.getLogger(name).addFilter(celery_task_fields)


def say_through_logging(message: str, f: object = None) -> None:
    """celery.apps.worker.safe_say's lines as log records (Celery calls it from its signal handlers)."""
    logging.getLogger("celery.apps.worker").warning(message.strip())


def celery_task_fields(record: logging.LogRecord) -> bool:
    """Celery's own lines about a run_next_job task ("Task ... received", "... succeeded in 2.1s") carry the
    task id, as the job's lines do, and the job id its message names as `message_job_id` (the job the task
    runs may be another of that queue, worker.tasks.run_next_job); Celery passes both as the record's `data`."""
    data = getattr(record, "data", None)
    if isinstance(data, dict) and data.get("name") == RUN_JOB_TASK and data.get("id"):
        fields: dict[str, object] = {"task_id": data["id"]}
        try:
            fields["message_job_id"] = int(ast.literal_eval(str(data.get("args")))[0])
        except (ValueError, SyntaxError, TypeError, IndexError):
            pass
        record.log_fields = fields
    return True


@worker_shutting_down.connect
def _stop_running_job(**_: object) -> None:
    """SIGTERM/SIGINT: the running job stops at its next batch and is queued again (see worker.tasks)."""
    SHUTTING_DOWN.set()


def pool_for(concurrency: int) -> str:
    """The pool that runs jobs off the consumer's thread, so that while a job trains the worker still
    answers remote control (`celery -A worker inspect`, Flower), sends its event heartbeats and
    broker (AMQP) heartbeats, and acks. One job: a thread (the solo pool would run it on the
    consumer's own thread and block all of that); the job's SIGTERM stop (SHUTTING_DOWN) is
    process-wide, so it reaches the thread. More: prefork children, as before."""
    return "threads" if concurrency == 1 else "prefork"


def serve_worker(
    queue_names: list[str],
    gpu: str | None,
    concurrency: int,
    hostname: str,
    loglevel: str,
    metrics_port: int | None = None,
    health_file: Path | None = None,
) -> None:
    """Register this worker, keep its presence and the reaper going, and consume the queues until stopped."""
    settings = get_settings()
    # Before the first line (the migration's, the reaper's): every line in LOG_FORMAT, naming this worker.
    set_process_log_fields(worker=hostname)
    configure_logging(loglevel)
    upgrade_database()
    metrics.configure(gpu)
    if metrics_port is not None:
        metrics.start_exporter(metrics_port, settings.metrics_token, host=settings.worker_metrics_address)
    # Import torch, the core runners and what they load when first used (matplotlib's plots, Grad-CAM)
    # now, not inside the first job: a multi-second import holds the GIL and would starve that job's
    # heartbeat thread.
    import core.engine.evaluation.explain  # noqa: F401
    import core.engine.evaluation.plots  # noqa: F401
    import core.engine.evaluation.predict  # noqa: F401
    import core.engine.training.loop  # noqa: F401

    app = get_app()  # it takes the task worker.tasks declares when the worker finalizes it
    declare_queues(app, queue_names)  # before Celery's consumer declares them unguarded
    with get_sessionmaker().begin() as session:
        webhooks.report_replaced_worker(session, hostname)  # one of this name that never unregistered died
        jobs.register_worker(session, hostname=hostname, queues=queue_names, gpu=gpu, pid=os.getpid())
    presence = WorkerPresence(hostname, queue_names, settings, health_file)
    presence.start()
    sender = WebhookSender(settings)
    sender.start()
    # Worker heartbeats on (task events: worker.celery_app): Flower and `celery events` build on them.
    # Gossip (every worker consuming every other's events) and mingle (a start-up round trip to
    # sync revoked task ids) stay off: nothing here uses them, and the job lease does what they would.
    argv = [
        "worker",
        f"--queues={','.join(queue_names)}",
        f"--concurrency={concurrency}",
        f"--pool={pool_for(concurrency)}",
        f"--hostname={hostname}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
    ]
    if settings.log_format == "json":
        # Celery prints its banner and its shutdown lines ("worker: Warm shutdown (MainProcess)") straight to
        # the process's stdout, outside logging. Under JSON the banner is silenced (one log line says what
        # matters of it) and those lines go through logging: every line of the process is one JSON object.
        import celery.apps.worker

        argv.insert(0, "--quiet")
        celery.apps.worker.safe_say = say_through_logging
        log.info(
            "worker %s starting: queues %s, %s pool of %s, broker %s",
            hostname,
            ",".join(queue_names),
            pool_for(concurrency),
            concurrency,
            app.connection_for_write().as_uri(),
        )
    try:
        app.worker_main(argv)
    finally:
        presence.done.set()
        sender.done.set()
        presence.join(timeout=10)
        with get_sessionmaker().begin() as session:
            jobs.unregister_worker(session, hostname)
