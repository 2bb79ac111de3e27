"""Helpers of the tests that watch real `leukemia worker`s while a job trains (monitoring, RabbitMQ):
the worker environment of a service backend, a job that trains until cancelled, cancelling it, stopping
a process group."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from click.testing import CliRunner

from core.service.records import Job
from leukemia.cli import main as leukemia_cli
from tests.test_worker import (
    TINY,
    WorkerProcess,
    epochs_of,
    submit,
    wait_finished,
    wait_for,
)

LONG_TRAIN = {**TINY, "epochs": 500}  # cancelled once the test has seen what it needs


def worker_env(service_backend: dict) -> dict[str, str]:
    """The environment of a worker on the backend's broker and database (one thread, unbuffered logs)."""
    return {**os.environ, **service_backend["env"], "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_training(data_dir: Path, queue: str, worker: WorkerProcess, params: dict = LONG_TRAIN) -> int:
    """Submit a train job to the worker's queue; its id once it is inside its epoch loop (an epoch recorded)."""
    job_id = submit("train", {"data_dir": str(data_dir), **params}, queue=queue)
    wait_for(lambda: epochs_of(job_id), 120, f"job {job_id} to finish an epoch", worker)
    return job_id


def cancel_and_wait(job_id: int, worker: WorkerProcess) -> Job:
    """`leukemia cancel JOB`, then the job's row once the worker has ended it."""
    result = CliRunner().invoke(leukemia_cli, ["cancel", str(job_id)])
    assert result.exit_code == 0, result.output
    return wait_finished(job_id, worker, timeout=60)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group (the worker and its pool), SIGKILL after 30 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
