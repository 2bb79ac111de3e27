"""Watching real `leukemia worker`s with Celery's own tools while a job trains: `celery -A worker
inspect ping|active|stats` (a real CLI subprocess) and Flower's API answer, because the job runs in
the worker's pool thread and its consumer stays free. The embedded broker cannot broadcast: there
`inspect` gets no reply (docs/deploy.md, "Monitoring")."""

from __future__ import annotations

import base64
import json
import secrets
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.long_jobs import cancel_and_wait, start_training, stop, worker_env
from tests.test_worker import WorkerProcess, job_row, wait_for

REPO = Path(__file__).resolve().parents[1]


# --- helpers --------------------------------------------------------------------------------


def celery_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`celery -A worker ARGS`, as an operator types it in the checkout (the app found by `-A worker`)."""
    return subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def inspect(env: dict[str, str], worker: WorkerProcess, command: str) -> dict:
    """`celery -A worker inspect COMMAND --json` addressed to one worker: its reply."""
    done = celery_cli(env, "inspect", command, "--destination", worker.hostname, "--timeout", "10", "--json")
    assert done.returncode == 0, f"inspect {command}: {done.stdout}{done.stderr}\n{worker.log()[-3000:]}"
    return json.loads(done.stdout)[worker.hostname]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", name="worker_env")
def worker_env_fixture(service_backend) -> dict[str, str]:
    return worker_env(service_backend)


@pytest.fixture(scope="module")
def watched(service_backend, worker_env, tmp_path_factory):
    """One worker per backend on a queue of this module's own; stopped at the end."""
    queue = f"watch-{secrets.token_hex(3)}"
    worker = WorkerProcess(worker_env, [queue], "watched", tmp_path_factory.mktemp("monitoring-logs"))
    yield worker, queue
    stop(worker.process)
    if service_backend["name"] == "redis+postgres":  # drop any message nobody consumed
        import redis

        redis.Redis.from_url(service_backend["env"]["BROKER_URL"]).delete(queue)


# --- tests ----------------------------------------------------------------------------------


def test_celery_inspect_answers_while_a_job_trains(service_backend, watched, worker_env, synth_dir):
    worker, queue = watched
    job_id = start_training(synth_dir, queue, worker)
    if service_backend["name"] == "embedded":
        # kombu's SQLAlchemy transport has no fanout: the broadcast reaches no worker.
        done = celery_cli(worker_env, "inspect", "ping", "--destination", worker.hostname, "--timeout", "2")
        assert done.returncode != 0 and "No nodes replied" in done.stdout + done.stderr, done.stdout + done.stderr
    else:
        assert inspect(worker_env, worker, "ping") == {"ok": "pong"}
        active = inspect(worker_env, worker, "active")
        assert [(task["name"], task["args"], task["hostname"]) for task in active] == [
            ("leukemia.run_job", [job_id], worker.hostname)
        ], active
        stats = inspect(worker_env, worker, "stats")
        assert stats["pool"]["max-concurrency"] == 1 and stats["total"] == {"leukemia.run_job": 1}, stats
    job = job_row(job_id)
    assert job.status == "running" and not job.finished, "the job must still be training while inspect answers"
    assert cancel_and_wait(job_id, worker).status == "cancelled"


def test_flower_lists_the_worker_and_its_running_task(service_backend, watched, worker_env, synth_dir, tmp_path):
    """Flower 2.2 run as docs/deploy.md says, against the Redis broker. It is told not to switch the
    workers' events on itself (--enable_events=False, like `celery events`): what it shows, the
    workers send of their own accord."""
    if service_backend["name"] != "redis+postgres":
        pytest.skip("Flower once, on Redis; the embedded broker cannot broadcast")
    worker, queue = watched
    port, password = free_port(), secrets.token_hex(8)
    log_path = tmp_path / "flower.log"
    with log_path.open("wb") as log_file:
        flower = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker",
                "flower",
                f"--port={port}",
                "--address=127.0.0.1",
                f"--basic-auth=monitor:{password}",
                "--enable_events=False",
            ],
            cwd=REPO,
            env=worker_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    authorization = "Basic " + base64.b64encode(f"monitor:{password}".encode()).decode()

    def api(path: str) -> dict | None:
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": authorization})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if flower.poll() is not None:
                pytest.fail(f"flower exited:\n{log_path.read_text()[-3000:]}")
            return None

    try:
        # Flower fills a worker's entry one inspect reply at a time, and a reply that misses its one-second
        # timeout on a loaded machine leaves its key out until the next refresh: ask again until stats came.
        def listed() -> dict | None:
            entry = (api("/api/workers?refresh=1") or {}).get(worker.hostname) or {}
            return entry.get("stats")

        stats = wait_for(listed, 60, "Flower to list the worker with its stats", worker)
        assert stats["pool"]["max-concurrency"] == 1, stats
        job_id = start_training(synth_dir, queue, worker)

        def running_task() -> dict | None:
            tasks = api("/api/tasks") or {}
            return next((task for task in tasks.values() if task["args"] == f"[{job_id}]"), None)

        task = wait_for(
            lambda: (found := running_task()) and found["state"] == "STARTED" and found,
            30,
            f"Flower to show job {job_id}'s task as started",
            worker,
        )
        assert (task["name"], task["worker"]) == ("leukemia.run_job", worker.hostname)

        def active() -> list | None:
            entry = (api(f"/api/workers?refresh=1&workername={worker.hostname}") or {}).get(worker.hostname) or {}
            return entry.get("active")

        running = wait_for(active, 30, "Flower to list the worker's active task", worker)
        assert [(t["name"], t["args"]) for t in running] == [("leukemia.run_job", f"[{job_id}]")], running
        assert job_row(job_id).status == "running"
        assert cancel_and_wait(job_id, worker).status == "cancelled"
        wait_for(lambda: (running_task() or {}).get("state") == "SUCCESS", 30, "Flower to see the task end", worker)
    finally:
        stop(flower)


def test_celery_terminate_cancels_the_running_job_as_leukemia_cancel_does_and_the_worker_takes_the_next(
    service_backend, watched, worker_env, synth_dir
):
    """What Flower's Terminate button and `celery -A worker control terminate SIGTERM TASK_ID` send (a revoke
    with terminate) cancels the job the task runs: it ends cancelled, audited as celery:terminate, with no
    NotImplementedError from the thread pool, and the worker runs the next job to the end."""
    if service_backend["name"] == "embedded":
        pytest.skip("the embedded broker cannot broadcast: no remote control reaches the worker")
    from sqlalchemy import select

    from core.service.db import get_sessionmaker
    from core.service.records import AuditEntry
    from tests.test_worker import TINY, submit, wait_finished

    worker, queue = watched
    for terminate in ("cli", "flower"):
        job_id = start_training(synth_dir, queue, worker)
        [task] = inspect(worker_env, worker, "active")
        if terminate == "cli":
            done = celery_cli(
                worker_env, "control", "terminate", "SIGTERM", task["id"], "--destination", worker.hostname, "--timeout", "10"
            )
            assert done.returncode == 0 and f"terminate: {task['id']}" in done.stdout, done.stdout + done.stderr
        else:  # what Flower's button calls (flower/api/control.py: TaskRevoke with terminate)
            from worker import app

            app.control.revoke(task["id"], terminate=True, signal="SIGTERM", destination=[worker.hostname])
        job = wait_finished(job_id, worker, timeout=60)
        assert job.status == "cancelled", (job.status, job.error)
        with get_sessionmaker().begin() as session:
            rows = session.scalars(
                select(AuditEntry).where(AuditEntry.target_id == str(job_id), AuditEntry.action == "job.cancel")
            )
            assert [row.username for row in rows] == ["celery:terminate"]
        assert f"job {job_id}: cancel requested by Celery's terminate of task {task['id']}" in worker.log()
    assert "NotImplementedError" not in worker.log() and "kill_job" not in worker.log()
    after = submit("train", {"data_dir": str(synth_dir), "epochs": 1, **TINY}, queue=queue)
    assert wait_finished(after, worker, timeout=120).status == "succeeded"
