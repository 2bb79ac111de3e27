"""`leukemia serve` as a user runs it: a subprocess on a free port with its own LEUKEMIA_HOME.

A training job submitted over the API is interrupted by Ctrl-C (SIGINT) mid-run; every
process serve started must be gone; a second `leukemia serve` finishes the job from its last
epoch checkpoint with every epoch recorded exactly once."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.polling import wait_for

LEUKEMIA = Path(sys.executable).with_name("leukemia")
# Settings of the machine or CI must not leak into the embedded default under test.
UNSET = (
    "DATABASE_URL",
    "BROKER_URL",
    "ARTIFACTS_DIR",
    "CACHE_DIR",
    "DATA_ROOTS",
    "API_TOKEN",
    "SECRET_KEY",
    "ADMIN_USERNAME",
    "ADMIN_PASSWORD",
    "LEUKEMIA_HOME",
)


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
    """One `leukemia serve` run, its output in a file; with terminal=True serve writes to a
    pseudo-terminal (as when a person runs it) and the test copies what it shows into the file."""

    def __init__(self, home: Path, port: int, log: Path, *, terminal: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if k not in UNSET}
        env.update({"HEARTBEAT_SECONDS": "1", "STALE_AFTER_SECONDS": "5", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        self.home, self.log = home, log
        self.handle = open(log, "wb")
        controller, stdout = pty.openpty() if terminal else (None, self.handle)
        self.process = subprocess.Popen(
            [str(LEUKEMIA), "serve", "--home", str(home), "--port", str(port)], env=env, stdout=stdout, stderr=subprocess.STDOUT
        )
        self.copier = None
        if controller is not None:
            os.close(stdout)
            self.copier = threading.Thread(target=self._copy_terminal, args=(controller,), daemon=True)
            self.copier.start()
        self.base = f"http://127.0.0.1:{port}"

    def _copy_terminal(self, controller: int) -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: serve has exited and closed the terminal
                break
            if not chunk:
                break
            self.handle.write(chunk)
            self.handle.flush()
        os.close(controller)

    def output(self) -> str:
        return self.log.read_bytes().decode(errors="replace").replace("\r\n", "\n")

    def wait_ready(self, timeout: float = 150) -> dict[str, str]:
        """The summary serve prints once the web app answers, its data folder, and the login and
        token that serve keeps in LEUKEMIA_HOME (read from there: serve prints them once at most)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.output()
            found = re.search(r"Leukemia service running at .*?\n +data: +(\S+)\n", text, re.DOTALL)
            if found:
                return {
                    "summary": found.group(0),
                    "data": found.group(1),
                    "username": "admin",
                    "password": (self.home / "admin_password").read_text().strip(),
                    "token": (self.home / "api_token").read_text().strip(),
                }
            assert self.process.poll() is None, f"serve exited with {self.process.returncode}:\n{text[-4000:]}"
            time.sleep(0.5)
        pytest.fail(f"serve printed no summary within {timeout:.0f} s:\n{self.output()[-4000:]}")

    def stop(self, number: int = signal.SIGINT, timeout: float = 90) -> int:
        self.process.send_signal(number)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            if self.copier is not None:
                self.copier.join(timeout=10)
            self.handle.close()


def assert_no_secret_in_logs(home: Path) -> None:
    """No log serve's children write holds the password, the token or the session key."""
    values = {name: (home / name).read_text().strip() for name in ("admin_password", "api_token", "secret_key")}
    for log in (home / "logs").glob("*.log"):
        text = log.read_text(errors="replace")
        assert not [name for name, value in values.items() if value in text], f"a secret is written into {log}"


def child_pids(pid: int, command_word: str) -> list[int]:
    """The direct children of pid whose command line holds the word (e.g. serve's `worker`)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            words = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == pid and command_word.encode() in words and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def api(method: str, url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def poll(predicate, timeout: float, what: str, serve: Serve):
    """tests/polling.py's wait, failing at once when serve exits, with its output."""

    def running() -> None:
        assert serve.process.poll() is None, f"serve exited while waiting for {what}:\n{serve.output()[-4000:]}"

    return wait_for(predicate, timeout, what, check=running, describe=lambda: serve.output()[-4000:], interval=0.5)


@pytest.mark.timeout(420)
def test_serve_stops_on_ctrl_c_and_resumes_the_job_on_the_next_start(tmp_path):
    home = tmp_path / "home"
    first = Serve(home, free_port(), tmp_path / "serve-1.log", terminal=True)
    try:
        ready = first.wait_ready()
        assert ready["data"] == str(home / "data" / "demo") and (home / "data" / "demo" / "train.csv").is_file()
        # The first start made the password and the token: shown on the terminal, once, and in no log.
        assert f"login:      admin / {ready['password']}  (shown once; kept in {home / 'admin_password'})" in ready["summary"]
        assert f"API token:  {ready['token']}  (shown once; kept in {home / 'api_token'})" in ready["summary"]
        assert_no_secret_in_logs(home)
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
    # The run folder is jobs/<id>-<run key> (core.engine.run_folder.resolver).
    assert [p.name for p in (home / "artifacts" / "jobs").glob(f"{job_id}-*/last.pt")] == ["last.pt"]

    second = Serve(home, free_port(), tmp_path / "serve-2.log", terminal=True)
    try:
        again = second.wait_ready()
        assert (again["username"], again["password"], again["token"]) == (ready["username"], ready["password"], ready["token"])
        # Not made at this start: not shown again, even on a terminal; serve says where they are.
        assert f"login:      admin / (in {home / 'admin_password'})" in again["summary"]
        assert f"API token:  (in {home / 'api_token'})" in again["summary"]
        assert again["password"] not in second.output() and again["token"] not in second.output()

        def finished() -> dict | None:
            status, job = api("GET", f"{second.base}/api/jobs/{job_id}", again["token"])
            return job if job["status"] in ("succeeded", "failed", "cancelled") else None

        job = poll(finished, 240, f"job {job_id} to finish after the restart", second)
        assert job["status"] == "succeeded", f"{job}\n{second.output()[-4000:]}"
        status, body = api("GET", f"{second.base}/api/jobs/{job_id}/metrics", again["token"])
    finally:
        assert second.stop(signal.SIGTERM) == 0, second.output()[-4000:]
    assert_no_secret_in_logs(home)

    after = body["epochs"]
    assert [row["epoch"] for row in after] == [1, 2, 3]  # each epoch once
    # The epochs finished before Ctrl-C were not trained again: their rows (wall-clock seconds
    # included) are the ones recorded by the first run, replayed from last.pt's history.
    for row in before:
        assert after[row["epoch"] - 1]["seconds"] == row["seconds"], (row, after[row["epoch"] - 1])
    with sqlite3.connect(home / "leukemia.db") as db:
        assert db.execute("SELECT COUNT(*) FROM epoch_metrics WHERE job_id = ?", (job_id,)).fetchone() == (3,)


def health(base: str) -> int:
    try:
        with urllib.request.urlopen(f"{base}/api/health", timeout=30) as response:  # a loaded machine is slow, not down
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


@pytest.mark.timeout(420)
def test_serve_restarts_a_killed_worker_and_web_app_and_keeps_the_dashboard_up(tmp_path):
    home = tmp_path / "home"
    serve = Serve(home, free_port(), tmp_path / "serve.log")  # output to a file, as under a service manager
    try:
        ready = serve.wait_ready()
        # A first start whose output is not a terminal: the secrets it made are named by file, never printed.
        assert f"login:      admin / (in {home / 'admin_password'})" in ready["summary"]
        assert ready["password"] not in serve.output() and ready["token"] not in serve.output()
        [worker] = poll(lambda: child_pids(serve.process.pid, "worker"), 30, "the worker", serve)
        [web] = child_pids(serve.process.pid, "web")

        os.kill(worker, signal.SIGKILL)
        restarted = []

        def new_worker() -> list[int]:
            assert health(serve.base) == 200  # the dashboard answers all along
            restarted[:] = [pid for pid in child_pids(serve.process.pid, "worker") if pid != worker]
            return restarted

        poll(new_worker, 60, "a new worker", serve)
        assert "serve: worker killed by SIGKILL; restarting it in 1 s" in serve.output()
        assert "serve: worker killed by SIGKILL" in (home / "logs" / "worker.log").read_text()
        assert child_pids(serve.process.pid, "web") == [web]

        params = {"data_dir": ready["data"], "epochs": 1, "image_size": 32, "batch_size": 16, "seed": 1}
        status, job = api("POST", f"{serve.base}/api/jobs", ready["token"], {"kind": "train", "params": params})
        assert status == 201, job

        def finished() -> dict | None:
            assert health(serve.base) == 200
            status, body = api("GET", f"{serve.base}/api/jobs/{job['id']}", ready["token"])
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        done = poll(finished, 240, f"job {job['id']} on the restarted worker", serve)
        assert (done["status"], done["worker_host"] is not None) == ("succeeded", True), done

        os.kill(web, signal.SIGKILL)  # the web app is supervised the same way
        poll(
            lambda: health(serve.base) == 200 and child_pids(serve.process.pid, "web") not in ([], [web]),
            90,
            "the dashboard to answer again from a new web app",
            serve,
        )
        assert "serve: web killed by SIGKILL; restarting it in 1 s" in serve.output()
        started = descendants(serve.process.pid)
    finally:
        code = serve.stop(signal.SIGHUP)  # the terminal closed: stopped as by Ctrl-C, no child left behind
    assert code == 0 and "Stopped." in serve.output(), serve.output()[-4000:]
    assert not [pid for pid in started if alive(pid)]
    assert_no_secret_in_logs(home)


def serve_command(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in UNSET}
    return subprocess.run(
        [str(LEUKEMIA), "serve", "--home", str(tmp_path / "home"), *args], env=env, capture_output=True, text=True, timeout=60
    )


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
