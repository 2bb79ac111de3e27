"""Helpers shared by the web, API and browser tests: log in, read the CSRF token, make rows."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from core.service import jobs
from core.service.db import get_sessionmaker
from core.engine.progress import EpochRecord
from core.service.settings import get_settings
from tests.polling import wait_for

REPO = Path(__file__).resolve().parents[1]
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')
TRAIN = {"epochs": 2, "image_size": 32, "batch_size": 4}


def csrf_token(client, url: str = "/login") -> str:
    """The CSRF token a page's form carries."""
    match = CSRF_INPUT.search(client.get(url).get_data(as_text=True))
    assert match, f"no csrf_token input on {url}"
    return match.group(1)


def login(client, username: str, password: str):
    return client.post("/login", data={"username": username, "password": password, "csrf_token": csrf_token(client)})


def synthetic_folder(root: Path, name: str = "synth") -> Path:
    """A tiny lab-layout data folder (32 px) under a data root."""
    from core.engine.synth import write_synthetic_dataset

    folder = root / name
    write_synthetic_dataset(folder, train=8, valid=4, test=4, image_size=32, seed=1)
    return folder


def add_patients(folder: Path, patient_of_label: dict[int, list[str]]) -> None:
    """Give a lab folder's train.csv and valid.csv a patient column: the rows of each label take that label's
    patients in turn (a subject has one class, as in C-NMC)."""
    import csv

    for name in ("train.csv", "valid.csv"):
        with (folder / name).open(newline="") as handle:
            header, *rows = list(csv.reader(handle))
        turns = {label: 0 for label in patient_of_label}
        with (folder / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow([*header, "patient"])
            for row in rows:
                label = int(row[header.index("label")])
                writer.writerow([*row, patient_of_label[label][turns[label] % len(patient_of_label[label])]])
                turns[label] += 1


def finished_train_job(data_dir: str, *, epochs: int = 2, accuracy: float = 0.75) -> int:
    """A train job taken through the real job service: claimed, two epochs recorded, files recorded, succeeded."""
    artifacts_dir = get_settings().resolved_artifacts_dir
    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(session, "train", {**TRAIN, "data_dir": data_dir, "epochs": epochs}).id
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, job_id, owner="test-worker", host="test-host")
        for epoch in range(1, epochs + 1):
            jobs.record_epoch(session, job_id, EpochRecord(
                epoch=epoch, train_loss=0.7 / epoch, train_accuracy=0.5 + 0.1 * epoch, valid_loss=0.8 / epoch,
                valid_accuracy=accuracy - 0.1 * (epochs - epoch), valid_balanced_accuracy=0.6, valid_f1=0.62,
                confusion=[[1, 1], [0, 2]], lr=0.001, seconds=1.5, images_per_s=20.0))
        run_dir = artifacts_dir / f"job-{job_id}"
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "best.pt").write_bytes(b"not really a checkpoint")
        (run_dir / "metrics.csv").write_text("epoch,train_loss\n1,0.7\n2,0.35\n")
        jobs.add_artifact(session, job_id, "checkpoint", run_dir / "best.pt")
        jobs.add_artifact(session, job_id, "metrics", run_dir / "metrics.csv")
        jobs.finish_job(session, job_id, "test-worker", "succeeded")
    return job_id


def queued_job(data_dir: str, kind: str = "train") -> int:
    with get_sessionmaker().begin() as session:
        return jobs.create_job(session, kind, {**TRAIN, "data_dir": data_dir}).id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_healthy(url: str, process: subprocess.Popen, seconds: float = 60) -> None:
    """Poll url until it answers 200, failing at once if the server's process exits."""

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def running() -> None:
        if process.poll() is not None:
            pytest.fail(f"the web server exited with {process.returncode}")

    wait_for(healthy, seconds, f"{url} to answer 200", check=running, interval=0.3)


@contextlib.contextmanager
def web_and_worker(root: Path, settings: dict[str, str]) -> Iterator[str]:
    """`leukemia web` on a free loopback port and `leukemia worker --queues gpu,cpu`, as a user starts them,
    sharing LEUKEMIA_HOME=root/home (SQLite, embedded broker); yields the base URL. Logs: root/{web,worker}.log."""
    env = {**os.environ, "LEUKEMIA_HOME": str(root / "home"), "HEARTBEAT_SECONDS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONUNBUFFERED": "1", **settings}
    for key in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR", "SECRET_KEY"):
        env.pop(key, None)
    port = free_port()
    logs = {name: (root / f"{name}.log").open("w") for name in ("web", "worker")}
    web = subprocess.Popen([sys.executable, "-m", "leukemia.cli", "web", "--port", str(port)], cwd=REPO, env=env,
                           stdout=logs["web"], stderr=subprocess.STDOUT)
    processes = [web]
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}/api/health", web)
        worker = subprocess.Popen([sys.executable, "-m", "leukemia.cli", "worker", "--queues", "gpu,cpu"], cwd=REPO,
                                  env=env, stdout=logs["worker"], stderr=subprocess.STDOUT)
        processes.append(worker)
        yield f"http://127.0.0.1:{port}"
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        for handle in logs.values():
            handle.close()


def console_errors(page) -> list[str]:
    """The browser console's error lines, collected from now on (a CSP violation shows up here)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def log_in_page(page, base: str, username: str, password: str) -> None:
    """Log in through the dashboard's form, as a person does; returns once the job list shows."""
    page.goto(f"{base}/")
    page.fill('input[name="username"]', username)
    page.fill('input[name="password"]', password)
    page.click('button[type="submit"]')
    page.wait_for_selector("h1:has-text('Jobs')")


def register_folder_page(page, base: str, path: Path) -> None:
    """Register a data folder through the dashboard's form; returns once its check passed."""
    page.goto(f"{base}/data-folders")
    page.fill('input[name="path"]', str(path))
    page.click("text=Register and check")
    page.wait_for_selector("text=check passed")
