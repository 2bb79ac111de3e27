"""Issue 18, item 1: on the embedded backend (SQLite database and broker) the web is restarted
under a live worker, and the next job still runs.

The worker once dropped its own SQLite locks (core.service.db.private_sqlite_file opened and closed the
database file beside its connections); the restarted web then took itself for the file's last user,
deleted the -wal and -shm the worker still used, and the worker saw no job submitted after that.
Only the web and the worker touch the files here: this test process speaks HTTP alone, since a
connection of its own would keep the WAL alive and hide the fault."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.web_helpers import REPO, free_port, wait_until_healthy

pytestmark = pytest.mark.timeout(180)
TOKEN = "restart-test-token"
LEUKEMIA = [sys.executable, "-m", "leukemia.cli"]


def api(base: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{base}/api{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.load(response)


def run_to_the_end(base: str, params: dict, worker: subprocess.Popen, log: Path) -> dict:
    """Submit a train job over the API and poll it until it finishes (deadline 60 s)."""
    job = api(base, "/jobs", {"kind": "train", "params": params})
    deadline = time.monotonic() + 60
    while not job["finished"]:
        assert worker.poll() is None, f"the worker exited:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"job {job['id']} still {job['status']}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
        job = api(base, f"/jobs/{job['id']}")
    return job


def start_web(env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    with log.open("ab") as output:
        web = subprocess.Popen(
            [*LEUKEMIA, "web", "--port", str(port)], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    wait_until_healthy(f"{base}/api/health", web)
    return web, base


def test_the_web_restarted_under_a_live_worker_then_the_next_job_runs(tmp_path):
    from core.engine.data.synth import write_synthetic_dataset

    folder = tmp_path / "data" / "synth"
    write_synthetic_dataset(folder, train=8, valid=4, test=4, image_size=32, seed=1)
    env = {
        **os.environ,
        "LEUKEMIA_HOME": str(tmp_path / "home"),
        "DATA_ROOTS": str(tmp_path / "data"),
        "API_TOKEN": TOKEN,
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR", "SECRET_KEY"):
        env.pop(key, None)
    params = {"data_dir": str(folder), "epochs": 1, "image_size": 32, "batch_size": 4, "device": "cpu"}
    web_log, worker_log = tmp_path / "web.log", tmp_path / "worker.log"
    web, base = start_web(env, web_log)
    with worker_log.open("wb") as output:
        worker = subprocess.Popen(
            [*LEUKEMIA, "worker", "--queues", "gpu"], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        api(base, "/data-folders", {"path": str(folder), "name": "synth"})
        first = run_to_the_end(base, params, worker, worker_log)
        assert first["status"] == "succeeded", first

        web.kill()  # as a crash (kill -9); `leukemia serve` would start a new one the same way
        web.wait(timeout=30)
        web, base = start_web(env, web_log)

        second = run_to_the_end(base, params, worker, worker_log)
        assert second["status"] == "succeeded", (second, worker_log.read_text()[-3000:])
    finally:
        for process in (web, worker):  # nothing to keep: the files are the test's own
            process.kill()
            process.wait(timeout=30)
