"""Helpers shared by the web, API and browser tests: log in, read the CSRF token, make rows."""

from __future__ import annotations

import re
from pathlib import Path

from core import jobs
from core.db import get_sessionmaker
from core.settings import get_settings

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
    from core.synth import write_synthetic_dataset

    folder = root / name
    write_synthetic_dataset(folder, train=8, valid=4, test=4, image_size=32, seed=1)
    return folder


def finished_train_job(data_dir: str, *, epochs: int = 2, accuracy: float = 0.75) -> int:
    """A train job taken through the real job service: claimed, two epochs recorded, files recorded, succeeded."""
    artifacts_dir = get_settings().resolved_artifacts_dir
    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(session, "train", {**TRAIN, "data_dir": data_dir, "epochs": epochs}).id
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, job_id, owner="test-worker", host="test-host")
        for epoch in range(1, epochs + 1):
            jobs.record_epoch(session, job_id, {
                "epoch": epoch, "train_loss": 0.7 / epoch, "train_accuracy": 0.5 + 0.1 * epoch, "valid_loss": 0.8 / epoch,
                "valid_accuracy": accuracy - 0.1 * (epochs - epoch), "valid_balanced_accuracy": 0.6, "valid_f1": 0.62,
                "confusion": [[1, 1], [0, 2]], "lr": 0.001, "seconds": 1.5, "images_per_s": 20.0})
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
