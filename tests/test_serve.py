"""`leukemia serve` as a user runs it: a subprocess on a free port with its own LEUKEMIA_HOME.

A training job submitted over the API is interrupted by Ctrl-C (SIGINT) mid-run; every
process serve started must be gone; a second `leukemia serve` finishes the job from its last
epoch checkpoint with every epoch recorded exactly once."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

LEUKEMIA = Path(sys.executable).with_name("leukemia")
# Settings of the machine or CI must not leak into the embedded default under test.
UNSET = ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR", "DATA_ROOTS", "API_TOKEN", "SECRET_KEY",
         "ADMIN_USERNAME", "ADMIN_PASSWORD", "LEUKEMIA_HOME")  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every process below pid (children, grandchildren, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class Serve:
    """One `leukemia serve` run, its output in a file."""

    def __init__(self, home: Path, port: int, log: Path) -> None:
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        env.update({"HEARTBEAT_SECONDS": "1", "STALE_AFTER_SECONDS": "5", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        self.log = log
        self.handle = open(log, "w")
        self.process = subprocess.Popen([str(LEUKEMIA), "serve", "--home", str(home), "--port", str(port)],
                                        env=env, stdout=self.handle, stderr=subprocess.STDOUT)  # fmt: skip
        self.base = f"http://127.0.0.1:{port}"

    def output(self) -> str:
        return self.log.read_text()

    def wait_ready(self, timeout: float = 150) -> dict[str, str]:
        """The URL, login, token and data folder serve prints once the web app answers."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            found = re.search(r"login: +(\S+) / (\S+)\n +API token: +(\S+)\n +data: +(\S+)", text)
            if found:
                return dict(zip(("username", "password", "token", "data"), found.groups()))
            assert self.process.poll() is None, f"serve exited with {self.process.returncode}:\n{text[-4000:]}"
            time.sleep(0.5)
        pytest.fail(f"serve printed no login within {timeout:.0f} s:\n{self.output()[-4000:]}")

    def stop(self, number: int = signal.SIGINT, timeout: float = 90) -> int:
        self.process.send_signal(number)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.handle.close()


def api(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode() if body is not None else None, method=method,
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def poll(predicate, timeout: float, what: str, serve: Serve):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert serve.process.poll() is None, f"serve exited while waiting for {what}:\n{serve.output()[-4000:]}"
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{serve.output()[-4000:]}")


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_serve_stops_on_ctrl_c_and_resumes_the_job_on_the_next_start(tmp_path):
    home = tmp_path / "home"
    first = Serve(home, free_port(), tmp_path / "serve-1.log")
    try:
        ready = first.wait_ready()
        assert ready["data"] == str(home / "data" / "demo") and (home / "data" / "demo" / "train.csv").is_file()
        assert ready["token"] == (home / "api_token").read_text().strip()
        status, body = api("GET", f"{first.base}/api/data-folders", ready["token"])
        assert status == 200 and [f["path"] for f in body["data_folders"]] == [ready["data"]]

        params = {"data_dir": ready["data"], "epochs": 3, "image_size": 32, "batch_size": 16, "seed": 3}
        status, job = api("POST", f"{first.base}/api/jobs", ready["token"], {"kind": "train", "params": params})
        assert status == 201, job
        job_id = job["id"]

        def epochs_done() -> list[dict]:
            status, body = api("GET", f"{first.base}/api/jobs/{job_id}/metrics", ready["token"])
            assert status == 200, body
            return body["epochs"]

        before = poll(epochs_done, 180, "the first epoch", first)
        status, job = api("GET", f"{first.base}/api/jobs/{job_id}", ready["token"])
        assert job["status"] == "running" and len(before) < 3, f"the job must still be running when interrupted: {job}"
        started = descendants(first.process.pid)
        assert len(started) >= 2, started  # the web app and the worker
    finally:
        code = first.stop(signal.SIGINT)
    assert code == 0, first.output()[-4000:]
    assert "Stopped." in first.output()
    left = [pid for pid in started if alive(pid)]
    assert not left, f"processes left after Ctrl-C: {left}"

    with sqlite3.connect(home / "leukemia.db") as db:
        status_after_stop, attempts = db.execute("SELECT status, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
    assert status_after_stop in ("queued", "running"), status_after_stop  # released, or left for the reaper
    assert (home / "artifacts" / "jobs" / str(job_id) / "last.pt").is_file()

    second = Serve(home, free_port(), tmp_path / "serve-2.log")
    try:
        again = second.wait_ready()
        assert (again["username"], again["password"], again["token"]) == (ready["username"], ready["password"], ready["token"])

        def finished() -> dict | None:
            status, job = api("GET", f"{second.base}/api/jobs/{job_id}", again["token"])
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = poll(finished, 240, f"job {job_id} to finish after the restart", second)
        assert job["status"] == "succeeded", f"{job}\n{second.output()[-4000:]}"
        status, body = api("GET", f"{second.base}/api/jobs/{job_id}/metrics", again["token"])
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.output()[-4000:]

    after = body["epochs"]
    assert [row["epoch"] for row in after] == [1, 2, 3]  # each epoch once
    # The epochs finished before Ctrl-C were not trained again: their rows (wall-clock seconds
    # included) are the ones recorded by the first run, replayed from last.pt's history.
    for row in before:
        assert after[row["epoch"] - 1]["seconds"] == row["seconds"], (row, after[row["epoch"] - 1])
    with sqlite3.connect(home / "leukemia.db") as db:
        assert db.execute("SELECT COUNT(*) FROM epoch_metrics WHERE job_id = ?", (job_id,)).fetchone() == (3,)


def serve_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run([str(LEUKEMIA), "serve", "--home", str(tmp_path / "home"), *args],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip


def test_serve_refuses_bad_input_in_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # Both wrong: the data folder is named first, as on the command line (and whatever
        # listens on the default port 8000 on this machine plays no part).
        missing = serve_command(tmp_path, "--data", str(tmp_path / "nope"), "--port", str(port))
        busy = serve_command(tmp_path, "--port", str(port))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: --data: {tmp_path / 'nope'} is not an existing folder"
    assert busy.returncode == 2 and "Traceback" not in busy.stderr
    assert busy.stderr.strip().startswith(f"error: --port: cannot listen on 127.0.0.1:{port}")
    assert not (tmp_path / "home" / "leukemia.db").exists()  # nothing was started
    assert not (tmp_path / "home" / "data").exists()  # not even the demo folder written
