"""RabbitMQ as the broker of long jobs, against real `leukemia worker`s (the queue tests themselves run
on it through the rabbitmq+postgres service backend): a job that trains far longer than the AMQP
heartbeat timeout keeps its connection and is acked once, and a connection that drops mid-job does
not stop the job, which still runs once (docs/deploy.md, "RabbitMQ instead of Redis")."""

from __future__ import annotations

import secrets
import time

import pytest

from tests.conftest import rabbitmqctl
from tests.long_jobs import cancel_and_wait, start_training, stop, worker_env
from tests.test_worker import (
    TINY,
    WorkerProcess,
    epochs_of,
    job_row,
    wait_finished,
    wait_for,
)

BROKER_HEARTBEAT = 2  # seconds, negotiated with RabbitMQ, which drops a connection that misses them
LONG_JOB_SECONDS = 20  # ten broker heartbeat intervals
CONNECTION_TROUBLE = ("Connection to broker lost", "Couldn't ack", "not claimed", "missed heartbeats")


@pytest.fixture()
def rabbitmq(service_backend) -> dict[str, str]:
    """The worker environment and virtual host of the rabbitmq+postgres backend (other backends: skipped)."""
    if service_backend["name"] != "rabbitmq+postgres":
        pytest.skip("AMQP connections and heartbeats are RabbitMQ's; Redis and the embedded broker have neither")
    return {"env": worker_env(service_backend), "vhost": service_backend["env"]["BROKER_URL"].rsplit("/", 1)[1]}


def trouble_in(log: str) -> list[str]:
    return [line for line in log.splitlines() if any(sign in line for sign in CONNECTION_TROUBLE)]


def test_a_job_longer_than_the_broker_heartbeat_timeout_keeps_its_connection_and_runs_once(rabbitmq, synth_dir, tmp_path):
    """A short AMQP heartbeat (2 s, negotiated with RabbitMQ, whose own default is 60 s) and 20 s of
    training: the consumer sends its heartbeats while the job trains, RabbitMQ never drops the worker,
    the message is acked once at the end and never redelivered. With the consumer busy running the
    job (the solo pool), RabbitMQ closed the connection ("missed heartbeats from client, timeout: 2s"
    in its log), the ack failed ("Couldn't ack") and the message came back: the production report
    with 60 s and a 3-minute job, scaled down."""
    queue = f"long-{secrets.token_hex(3)}"
    env = {**rabbitmq["env"], "BROKER_HEARTBEAT_SECONDS": str(BROKER_HEARTBEAT)}
    worker = WorkerProcess(env, [queue], "long", tmp_path)
    try:
        timeouts = rabbitmqctl("list_connections", "-p", rabbitmq["vhost"], "--no-table-headers", "--quiet", "timeout")
        assert str(BROKER_HEARTBEAT) in timeouts.split(), f"no connection negotiated {BROKER_HEARTBEAT} s: {timeouts}"
        job_id = start_training(synth_dir, queue, worker)
        started, watch_start = job_row(job_id).started_at, time.monotonic()

        def long_enough() -> bool:
            assert trouble_in(worker.log()) == []
            return time.monotonic() - watch_start >= LONG_JOB_SECONDS

        wait_for(long_enough, LONG_JOB_SECONDS + 30, f"{LONG_JOB_SECONDS} s of training", worker)
        assert job_row(job_id).status == "running"
        job = cancel_and_wait(job_id, worker)
        assert (job.status, job.attempts, job.started_at) == ("cancelled", 1, started)
        wait_for(lambda: " succeeded in " in worker.log(), 30, "the task to return (and its message to be acked)", worker)
        counts = rabbitmqctl(
            "list_queues", "-p", rabbitmq["vhost"], "--no-table-headers", "--quiet", "name", "messages", "messages_unacknowledged"
        )
        assert f"{queue}\t0\t0" in counts.splitlines(), counts  # acked, nothing redelivered or waiting
        assert worker.log().count(f"job {job_id} (train) claimed") == 1
        assert trouble_in(worker.log()) == []
    finally:
        stop(worker.process)


@pytest.mark.parametrize("concurrency", [1, 2], ids=["thread", "prefork"])
def test_a_dropped_broker_connection_does_not_stop_the_running_job(rabbitmq, synth_dir, tmp_path, concurrency):
    """RabbitMQ closes every connection of the worker mid-job (as a broker restart would). The job
    goes on training (worker_cancel_long_running_tasks_on_connection_loss=False), the redelivered
    message finds the job leased and is skipped, and the job succeeds on its first attempt with
    every epoch once. With prefork (--concurrency 2) the setting decides: set to True, Celery
    terminated the child running the job, which the reaper then requeued (attempt 2)."""
    queue = f"drop-{secrets.token_hex(3)}"
    worker = WorkerProcess(rabbitmq["env"], [queue], "drop", tmp_path, concurrency=concurrency)
    try:
        job_id = start_training(synth_dir, queue, worker, {**TINY, "epochs": 6})
        rabbitmqctl("close_all_connections", "-p", rabbitmq["vhost"], "test: the broker goes away mid-job")
        wait_for(lambda: "Connection to broker lost" in worker.log(), 30, "the worker to see its connection drop", worker)
        assert job_row(job_id).status == "running" and len(epochs_of(job_id)) < 6, "the drop must come mid-job"
        job = wait_finished(job_id, worker)
        assert (job.status, job.error, job.attempts, epochs_of(job_id)) == ("succeeded", None, 1, [1, 2, 3, 4, 5, 6])
        wait_for(lambda: f"job {job_id} not claimed" in worker.log(), 30, "the redelivered message to be skipped", worker)
        assert worker.log().count(f"job {job_id} (train) claimed") == 1
    finally:
        stop(worker.process)


def test_every_connection_to_rabbitmq_asks_for_the_heartbeat(rabbitmq, synth_dir, tmp_path):
    """Not only the worker's consumer: its event connection, and the senders' (the web's submit, the worker's
    reaper re-sending lost jobs) negotiate BROKER_HEARTBEAT_SECONDS too. RabbitMQ's connection list showed
    timeout 0 for them; a sender no longer keeps a connection idle between messages (one whose heartbeats
    nobody sends would be dropped by RabbitMQ, and the next message written into it lost)."""
    from tests.test_worker import submit
    from worker.celery_app import make_app, send_run_job

    queue = f"beat-{secrets.token_hex(3)}"
    env = {**rabbitmq["env"], "BROKER_HEARTBEAT_SECONDS": str(BROKER_HEARTBEAT)}
    worker = WorkerProcess(env, [queue], "beat", tmp_path)
    try:
        job_id = submit("train", {"data_dir": str(synth_dir), "epochs": 1, **TINY}, queue=queue)  # the web's send
        assert wait_finished(job_id, worker).status == "succeeded"
        send_run_job(job_id, queue)  # a duplicate, as the reaper re-sends: skipped by the claim
        wait_for(lambda: f"job {job_id} not claimed" in worker.log(), 30, "the duplicate to be skipped", worker)

        def timeouts() -> list[str]:
            listed = rabbitmqctl("list_connections", "-p", rabbitmq["vhost"], "--no-table-headers", "--quiet", "timeout")
            return listed.split()

        assert "0" not in timeouts() and timeouts().count(str(BROKER_HEARTBEAT)) >= 2, timeouts()  # consumer, events
        sender = make_app(env["BROKER_URL"]).connection_for_write()  # a web process's, open
        sender.connect()
        try:
            assert "0" not in timeouts() and "60" in timeouts(), timeouts()  # the default BROKER_HEARTBEAT_SECONDS
        finally:
            sender.release()
    finally:
        stop(worker.process)
