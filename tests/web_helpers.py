"""Helpers shared by the web, API and browser tests: log in, read the CSRF token, make rows."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.engine.progress import EpochRecord
from core.service import jobs
from core.service.db import get_sessionmaker
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
    from core.engine.data.synth import write_synthetic_dataset

    folder = root / name
    write_synthetic_dataset(folder, train=8, valid=4, test=4, image_size=32, seed=1)
    return folder


def add_patients(folder: Path, patient_of_label: dict[int, list[str]] | None) -> None:
    """Give a lab folder's train.csv and valid.csv a patient column in place of the one they have (synthetic
    folders have one): the rows of each label take that label's patients in turn (a subject has one class,
    as in C-NMC). None: no patient column at all."""
    import csv

    for name in ("train.csv", "valid.csv"):
        with (folder / name).open(newline="") as handle:
            header, *rows = list(csv.reader(handle))
        kept = [index for index, column in enumerate(header) if column != "patient"]
        header, rows = [header[i] for i in kept], [[row[i] for i in kept] for row in rows]
        turns = dict.fromkeys(patient_of_label or {}, 0)
        with (folder / name).open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header + ["patient"] if patient_of_label else header)
            for row in rows:
                if not patient_of_label:
                    writer.writerow(row)
                    continue
                label = int(row[header.index("label")])
                writer.writerow([*row, patient_of_label[label][turns[label] % len(patient_of_label[label])]])
                turns[label] += 1


def finished_train_job(data_dir: str, *, epochs: int = 2, accuracy: float = 0.75) -> int:
    """A train job taken through the real job service: claimed, two epochs recorded, files recorded, succeeded."""
    artifacts_dir = get_settings().resolved_artifacts_dir
    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(
            session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": data_dir, "epochs": epochs})
        ).id
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, job_id, owner="test-worker", host="test-host")
        for epoch in range(1, epochs + 1):
            jobs.record_epoch(
                session,
                job_id,
                EpochRecord(
                    epoch=epoch,
                    train_loss=0.7 / epoch,
                    train_accuracy=0.5 + 0.1 * epoch,
                    valid_loss=0.8 / epoch,
                    valid_accuracy=accuracy - 0.1 * (epochs - epoch),
                    valid_balanced_accuracy=0.6,
                    valid_f1=0.62,
                    confusion=[[1, 1], [0, 2]],
                    lr=0.001,
                    seconds=1.5,
                    images_per_s=20.0,
                ),
            )
        run_folder = artifacts_dir / f"job-{job_id}"
        run_folder.mkdir(parents=True, exist_ok=True)
        (run_folder / "best.pt").write_bytes(b"not really a checkpoint")
        (run_folder / "metrics.csv").write_text("epoch,train_loss\n1,0.7\n2,0.35\n")
        jobs.add_artifact(session, job_id, "checkpoint", run_folder / "best.pt")
        jobs.add_artifact(session, job_id, "metrics", run_folder / "metrics.csv")
        jobs.finish_job(session, job_id, "test-worker", "succeeded")
    return job_id


def queued_job(data_dir: str, kind: str = "train") -> int:
    with get_sessionmaker().begin() as session:
        return jobs.create_job(session, jobs.JobRequest(kind=kind, params={**TRAIN, "data_dir": data_dir})).id


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


# The machine's own service settings: a server a test starts, and the test process sharing its home, never see them.
MACHINE_SETTINGS = ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR", "SECRET_KEY", "API_TOKEN", "RETENTION")


def server_env(root: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of a `leukemia web` or `worker` a test starts: LEUKEMIA_HOME=root/home (SQLite, embedded
    broker), none of MACHINE_SETTINGS, then the test's own settings."""
    env = {key: value for key, value in os.environ.items() if key not in MACHINE_SETTINGS}
    return {**env, "LEUKEMIA_HOME": str(root / "home"), "PYTHONUNBUFFERED": "1", **settings}


@contextlib.contextmanager
def web_server(root: Path, settings: dict[str, str]) -> Iterator[str]:
    """`leukemia web` on a free loopback port, as a user starts it, in server_env(root, settings); yields the base
    URL once /api/health answers (it has migrated the database). Log: root/web.log, its tail printed at the end."""
    base = f"http://127.0.0.1:{free_port()}"
    with (root / "web.log").open("w") as log:
        web = subprocess.Popen(
            [sys.executable, "-m", "leukemia.cli", "web", "--port", base.rsplit(":", 1)[1]],
            cwd=REPO,
            env=server_env(root, settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until_healthy(f"{base}/api/health", web)
            yield base
        finally:
            stop_process(web)
            print("--- web log (tail) ---\n" + "\n".join((root / "web.log").read_text().splitlines()[-25:]))


@contextlib.contextmanager
def shared_web_server(root: Path, settings: dict[str, str]) -> Iterator[str]:
    """web_server, with this test process pointed at the same LEUKEMIA_HOME (its settings and engines read afresh
    once the server has migrated) so that the test makes and reads rows in the server's database."""
    from tests.settings_override import overridden_settings

    with overridden_settings(**dict.fromkeys(MACHINE_SETTINGS), LEUKEMIA_HOME=str(root / "home")) as override:
        with web_server(root, settings) as base:
            override()
            yield base


def stop_process(process: subprocess.Popen) -> None:
    """Terminate a server or worker and wait for it; kill it if it does not stop within 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=20)


@contextlib.contextmanager
def web_and_worker(root: Path, settings: dict[str, str]) -> Iterator[str]:
    """`leukemia web` (web_server) and `leukemia worker --queues gpu,cpu`, as a user starts them, sharing
    LEUKEMIA_HOME=root/home (SQLite, embedded broker); yields the base URL. Logs: root/{web,worker}.log."""
    settings = {"HEARTBEAT_SECONDS": "1", "OMP_NUM_THREADS": "1", **settings}
    with web_server(root, settings) as base, (root / "worker.log").open("w") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "leukemia.cli", "worker", "--queues", "gpu,cpu"],
            cwd=REPO,
            env=server_env(root, settings),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            yield base
        finally:
            stop_process(worker)


def screenshots_dir(tmp_path: Path) -> Path:
    """Where a browser test saves its screenshots for review: $LEUKEMIA_SCREENSHOTS, else the test's tmp folder."""
    folder = Path(os.environ.get("LEUKEMIA_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def console_errors(page) -> list[str]:
    """The browser console's error lines, collected from now on (a CSP violation shows up here)."""
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    return errors


def logged_in_page(browser, base: str, username: str, password: str, height: int = 900) -> tuple[Any, list[str]]:
    """A new page of the browser fixture's Chromium, logged in (log_in_page), and its console_errors."""
    page = browser.new_page(viewport={"width": 1366, "height": height})
    errors = console_errors(page)
    log_in_page(page, base, username, password)
    return page, errors


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
