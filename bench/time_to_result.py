"""The "time to result" section of `python -m bench.run`: what a user waits for.

Whole-process wall time of the real commands (`leukemia train`, `finetune`, `predict --tta`,
`evaluate`) and of one queued train job on a real `leukemia worker`, each cold (a new CACHE_DIR
and a new process; the OS page cache is not dropped) and warm (the same CACHE_DIR again), next
to the model-only time computed from ceilings measured in the same run, on the same device,
batch size, image size, precision and thread count. The goals are checked and printed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from bench import throughput
from bench.throughput import Setup
from core.engine.model.resnet import build_model

REPO = Path(__file__).resolve().parents[1]
ARCH = "resnet18"
EPOCHS = 3
TTA_VIEWS = 8  # predict --tta runs the 8 dihedral views of every image
LAB_TEST_IMAGES = 2500  # "a lab-size test set": the CPU goal is judged from this many test images on
WORKER_START_TIMEOUT_S = 180
JOB_TIMEOUT_S = 3600


@dataclass(frozen=True)
class Workload:
    """What the commands process, and how: the same figures feed the ceilings."""

    train: int
    valid: int
    test: int
    image_size: int
    train_batch: int
    predict_batch: int
    device: str  # "cpu" or "cuda", passed to every command and job


@dataclass(frozen=True)
class Ceilings:
    """Model-only images/s measured in this run: a training step and a forward pass."""

    train: float
    inference: float

    def seconds(self, work: Workload) -> dict[str, float]:
        """Model-only seconds of each command: its images divided by the matching ceiling."""
        return {
            "train": EPOCHS * (work.train / self.train + work.valid / self.inference),
            "finetune": EPOCHS * (work.train + work.valid) / self.train,  # train_all, no validation split
            "predict --tta": TTA_VIEWS * work.test / self.inference,
            "evaluate": work.test / self.inference,
        }


@dataclass
class Timing:
    """One command or job, cold or warm: its wall time next to its model-only time."""

    what: str
    state: str  # cold | warm
    wall_s: float
    model_s: float
    details: dict


def measure_ceilings(work: Workload, setup: Setup) -> Ceilings:
    """resnet18's training and inference ceilings at the commands' batch and image size."""
    train_model = throughput.prepare_model(build_model(ARCH), setup, compile_model=False)
    train = throughput.train_ceiling(train_model, work.train_batch, work.image_size, setup)
    infer_model = throughput.prepare_model(build_model(ARCH), setup, compile_model=False)
    inference = throughput.inference_ceiling(infer_model, work.predict_batch, work.image_size, setup)
    return Ceilings(train=train, inference=inference)


def command_environment(home: Path, cache_dir: Path) -> dict[str, str]:
    """This process's environment with its own home and cache, and the ceilings' torch thread count."""
    environment = {
        **os.environ,
        "LEUKEMIA_HOME": str(home),
        "CACHE_DIR": str(cache_dir),
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    for key in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR"):
        environment.pop(key, None)
    return environment


def timed_command(arguments: list[str], environment: dict[str, str]) -> float:
    """Wall seconds of `leukemia ARGUMENTS` in a new process, start-up included."""
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "leukemia.cli", *arguments], env=environment, cwd=REPO, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        tail = (completed.stderr or completed.stdout).strip()[-1500:]
        raise RuntimeError(f"`leukemia {' '.join(arguments)}` exited {completed.returncode}: {tail}")
    return wall


def epoch_seconds(run_folder: Path) -> list[float]:
    """Each epoch's seconds (training and validation) as the run's metrics.json records them."""
    history = json.loads((run_folder / "metrics.json").read_text())["history"]
    return [round(row["seconds"], 2) for row in history]


def checkpoint_facts(run_folder: Path) -> dict:
    """Sizes of best.pt and last.pt, and whether each holds optimizer state."""
    facts = {}
    for name in ("best", "last"):
        path = run_folder / f"{name}.pt"
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        facts[f"{name}_pt_mb"] = round(path.stat().st_size / 1e6, 1)
        facts[f"{name}_pt_has_optimizer"] = checkpoint.get("optimizer") is not None
    return facts


def run_commands(
    work: Workload,
    model_s: dict[str, float],
    folder: Path,
    root: Path,
    launch: Callable[[list[str], dict[str, str]], float] = timed_command,
) -> list[Timing]:
    """Each command cold (its own new CACHE_DIR) then warm (that cache again), in new processes
    (launch: how a command is run and timed; tests/test_bench.py's smoke test runs them in process)."""
    timings: list[Timing] = []
    common = ["--data", str(folder), "--device", work.device]
    first_run = root / "train-cold"
    commands = {
        "train": lambda out: [
            "train",
            *common,
            "--arch",
            ARCH,
            "--epochs",
            str(EPOCHS),
            "--image-size",
            str(work.image_size),
            "--batch-size",
            str(work.train_batch),
            "--out",
            str(out),
        ],
        "finetune": lambda out: [
            "finetune",
            *common,
            "--from",
            str(first_run),
            "--epochs",
            str(EPOCHS),
            "--batch-size",
            str(work.train_batch),
            "--out",
            str(out),
        ],
        "predict --tta": lambda out: [
            "predict",
            *common,
            "--checkpoint",
            str(first_run),
            "--csv",
            "test.csv",
            "--tta",
            "--batch-size",
            str(work.predict_batch),
            "--out",
            str(out),
        ],
        "evaluate": lambda out: [
            "evaluate",
            *common,
            "--checkpoint",
            str(first_run),
            "--csv",
            "test_labels.csv",
            "--batch-size",
            str(work.predict_batch),
            "--out",
            str(out),
        ],
    }
    for what, arguments in commands.items():
        cache_dir = root / f"cache-{what.split()[0]}"
        shutil.rmtree(cache_dir, ignore_errors=True)
        for state in ("cold", "warm"):
            slug = what.split()[0]
            out = root / (f"{slug}-{state}.csv" if slug == "predict" else f"{slug}-{state}")
            wall = launch(arguments(out), command_environment(root / "home", cache_dir))
            details: dict = {}
            if slug in ("train", "finetune"):
                details["epoch_seconds"] = epoch_seconds(out)
            if slug == "train" and state == "cold":
                details.update(checkpoint_facts(out))
            timings.append(Timing(what, state, wall, model_s[what], details))
            _echo(timings[-1])
    return timings


def run_queued_jobs(work: Workload, model_s: dict[str, float], folder: Path, root: Path) -> list[Timing]:
    """The train command as a queued job on a real worker (embedded broker and database): cold on a
    new worker with a new CACHE_DIR, then warm (the same worker and cache). Wall: submit to finish."""
    home, cache_dir = root / "queue-home", root / "cache-queue"
    shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(cache_dir, ignore_errors=True)
    environment = command_environment(home, cache_dir)
    saved = {key: os.environ.get(key) for key in ("LEUKEMIA_HOME", "CACHE_DIR", "DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR")}
    _apply_environment({key: environment.get(key) for key in saved})
    worker = None
    try:
        from core.service.access import cli_actor
        from core.service.jobs.request import JobRequest, Origin
        from core.service.records import JobStatus
        from core.service.settings import get_settings
        from worker.dispatch import submit

        queue = f"bench-ttr-{os.getpid()}"
        worker = _start_worker(environment, queue, root / "worker.log")
        params = {
            "data_dir": str(folder),
            "arch": ARCH,
            "epochs": EPOCHS,
            "image_size": work.image_size,
            "batch_size": work.train_batch,
            "device": work.device,
        }
        timings = []
        for state in ("cold", "warm"):
            started = time.perf_counter()
            job_id = submit(
                JobRequest(kind="train", params=params, queue=queue),
                actor=cli_actor(),
                origin=Origin.CLI,
                settings=get_settings(),
            ).id
            status, error, claimed, finished = _wait_finished(job_id)
            wall = time.perf_counter() - started
            if status != JobStatus.succeeded:
                raise RuntimeError(f"queued train job {job_id} ended {status}: {error}; see {root / 'worker.log'}")
            details = {"job": job_id, "claim_to_finish_s": round((finished - claimed).total_seconds(), 2)}
            timings.append(Timing("queued train job", state, wall, model_s["train"], details))
            _echo(timings[-1])
        return timings
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
        _apply_environment(saved)


def _apply_environment(values: dict[str, str | None]) -> None:
    """Point this process's settings and database engines at these values (None: unset)."""
    from core.service.db import reset_engines
    from core.service.settings import get_settings

    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    get_settings.cache_clear()
    reset_engines()


def _start_worker(environment: dict[str, str], queue: str, log_path: Path) -> subprocess.Popen:
    """A real `leukemia worker` on its own queue, returned once it has registered."""
    from core.service import jobs
    from core.service.db import get_sessionmaker, upgrade_database

    upgrade_database()
    command = [
        sys.executable,
        "-m",
        "leukemia.cli",
        "worker",
        "--queues",
        queue,
        "--hostname",
        f"{queue}@local",
        "--loglevel",
        "WARNING",
    ]
    worker = subprocess.Popen(
        command, env=environment, cwd=REPO, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + WORKER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise RuntimeError(f"the worker exited with {worker.returncode}; see {log_path}")
        with get_sessionmaker().begin() as session:
            if queue in jobs.live_queues(session):
                time.sleep(3)  # registered before Celery consumes: give it time to connect
                return worker
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGTERM)
    raise RuntimeError(f"the worker did not register within {WORKER_START_TIMEOUT_S} s; see {log_path}")


def _wait_finished(job_id: int):  # type: ignore[no-untyped-def]
    """(status, error, started_at, finished_at) of a job once it has finished."""
    from sqlalchemy import select

    from core.service.db import get_sessionmaker
    from core.service.records import FINISHED_STATUSES, Job

    deadline = time.monotonic() + JOB_TIMEOUT_S
    while time.monotonic() < deadline:
        with get_sessionmaker().begin() as session:
            row = session.execute(select(Job.status, Job.error, Job.started_at, Job.finished_at).where(Job.id == job_id)).one()
        if row.status in FINISHED_STATUSES:
            return tuple(row)
        time.sleep(0.05)
    raise RuntimeError(f"queued job {job_id} did not finish within {JOB_TIMEOUT_S} s")


def _echo(timing: Timing) -> None:
    import click

    click.echo(
        f"  {timing.what + ' (' + timing.state + ')':<44} {timing.wall_s:>8.1f} s wall, "
        f"{timing.model_s:.1f} s model-only  {timing.details}"
    )


def goals(timings: list[Timing], work: Workload, root: Path) -> list[dict]:
    """The issue's goals, each with what was measured, its limit and whether it is met (None: not judged)."""
    return command_goals(timings, work, root) + queued_goals(timings)


def queued_goals(timings: list[Timing]) -> list[dict]:
    """A queued train job against the train command, cold and warm."""
    by_key = {(t.what, t.state): t for t in timings}
    rows = []
    for state in ("cold", "warm"):
        job, command = by_key[("queued train job", state)], by_key[("train", state)]
        rows.append(_goal(f"queued train job {state}: wall <= train command + 3 s", job.wall_s, command.wall_s + 3, True))
    return rows


def command_goals(timings: list[Timing], work: Workload, root: Path) -> list[dict]:
    """The goals of the commands run as a user runs them (run_commands' timings)."""
    by_key = {(t.what, t.state): t for t in timings}
    on_gpu = work.device == "cuda"
    train = by_key[("train", "cold")]
    first, *_, third = train.details["epoch_seconds"]
    predict = by_key[("predict --tta", "cold")]
    rows = [
        _goal("train cold: wall <= 1.5 x model-only + 10 s", train.wall_s, 1.5 * train.model_s + 10, on_gpu),
        _goal("train cold: first epoch <= 1.3 x third", first, 1.3 * third, on_gpu),
        _goal("predict --tta cold: wall <= 2 x model-only + 6 s", predict.wall_s, 2 * predict.model_s + 6, on_gpu),
    ]
    lab_size = work.test >= LAB_TEST_IMAGES
    for what in ("evaluate", "predict --tta"):
        timing = by_key[(what, "cold")]
        outside = timing.wall_s - timing.model_s
        rows.append(
            _goal(
                f"CPU, {what} cold, lab-size test set: time outside the model <= in it",
                outside,
                timing.model_s,
                not on_gpu and lab_size,
            )
        )
    facts = train.details
    rows.append(
        {
            "goal": "best.pt holds no optimizer state (last.pt keeps it for resume)",
            "measured": f"best.pt {facts['best_pt_mb']} MB, last.pt {facts['last_pt_mb']} MB",
            "limit": "-",
            "met": not facts["best_pt_has_optimizer"] and facts["last_pt_has_optimizer"],
        }
    )
    same = (root / "predict-cold.csv").read_bytes() == (root / "predict-warm.csv").read_bytes()
    rows.append(
        {
            "goal": "predictions identical cold and warm",
            "measured": "identical" if same else "DIFFERENT",
            "limit": "-",
            "met": same,
        }
    )
    return rows


def _goal(name: str, measured: float, limit: float, judged: bool) -> dict:
    return {
        "goal": name,
        "measured": round(measured, 2),
        "limit": round(limit, 2),
        "met": (measured <= limit) if judged else None,
    }


def measure_time_to_result(work: Workload, setup: Setup, folder: Path, root: Path) -> tuple[list[Timing], list[dict], Ceilings]:
    """The whole section: ceilings, commands, queued jobs, goals."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    ceilings = measure_ceilings(work, setup)
    model_s = ceilings.seconds(work)
    timings = run_commands(work, model_s, folder, root)
    timings += run_queued_jobs(work, model_s, folder, root)
    return timings, goals(timings, work, root), ceilings
