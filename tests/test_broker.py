"""The embedded broker's first use by several processes at once (web, CLI and worker starting together)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[1]
SENDERS = 4
ROUNDS = 6

# Each sender, once imported, says so with a file and waits for the start file; then it sends one
# message on a broker file nobody has used yet.
SENDER = """
import os, sys, time
from pathlib import Path
start, ready = Path(sys.argv[1]), Path(sys.argv[3])
from worker.celery_app import send_run_job
ready.touch()
while not start.exists():
    time.sleep(0.005)
send_run_job(int(sys.argv[2]), "gpu")
"""


def messages_in(broker_db: Path) -> int:
    import sqlite3

    with sqlite3.connect(broker_db) as connection:
        return connection.execute("SELECT count(*) FROM kombu_message").fetchone()[0]


@pytest.mark.parametrize("round_number", range(ROUNDS))
def test_processes_sending_first_at_once_all_get_through(tmp_path: Path, round_number: int) -> None:
    """kombu creates its tables and queue rows on first use, unguarded: before the lock in
    worker.celery_app.declare_queues, about half of these rounds lost a send to an IntegrityError
    on kombu_queue.name or "'NoneType' object has no attribute 'client'"."""
    home, start, ready = tmp_path / "home", tmp_path / "start", tmp_path / "ready"
    home.mkdir()
    ready.mkdir()
    env = {**os.environ, "LEUKEMIA_HOME": str(home), "BROKER_URL": "", "DATABASE_URL": "", "PYTHONPATH": str(REPO)}
    senders = [
        subprocess.Popen(
            [sys.executable, "-c", SENDER, str(start), str(job_id), str(ready / str(job_id))],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for job_id in range(1, SENDERS + 1)
    ]

    def all_alive() -> None:
        for sender in senders:
            if sender.poll() is not None:
                pytest.fail(f"a sender exited before the start: {sender.communicate()[0].strip()[-1500:]}")

    wait_for(lambda: len(list(ready.iterdir())) == SENDERS, 120, "every sender at the start line", check=all_alive)
    start.touch()
    outputs = [sender.communicate(timeout=120)[0] for sender in senders]
    failed = [output.strip().splitlines()[-1] for sender, output in zip(senders, outputs) if sender.returncode]
    assert failed == []
    assert messages_in(home / "broker.db") == SENDERS
