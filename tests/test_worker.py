"""Real `leukemia worker` processes on both backends (Redis+PostgreSQL, embedded SQLite broker):
jobs run to the end, fail with their reason, cancel, survive kill -9 and run once when sent twice."""

from __future__ import annotations

import csv
import os
import secrets
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from core.common.errors import UserInputError
from core.service import jobs
from core.service.access import cli_actor
from core.service.db import get_sessionmaker
from core.service.records import Job
from core.service.settings import get_settings
from leukemia.cli import main as leukemia_cli
from tests import polling
from worker import dispatch
from worker.celery_app import RUN_JOB_TASK, get_app


def submit(kind: str, params: dict, **fields) -> int:
    """A job queued through worker.dispatch as the operator at the command line."""
    return dispatch.submit(
        jobs.JobRequest(kind=kind, params=params, **fields), actor=cli_actor(), origin=jobs.Origin.CLI, settings=get_settings()
    ).id


LEUKEMIA = [sys.executable, "-m", "leukemia.cli"]
TINY = {"image_size": 32, "batch_size": 8, "device": "cpu", "seed": 0}


# --- helpers --------------------------------------------------------------------------------


class WorkerProcess:
    """A `leukemia worker` subprocess in its own process group (so kill -9 takes all of it)."""

    def __init__(self, env: dict[str, str], queues: list[str], name: str, log_dir: Path, concurrency: int = 1) -> None:
        self.hostname = f"{name}-{secrets.token_hex(3)}@test"
        self.log_path = log_dir / f"{self.hostname}.log"
        command = [
            *LEUKEMIA,
            "worker",
            "--queues",
            ",".join(queues),
            "--hostname",
            self.hostname,
            "--concurrency",
            str(concurrency),
        ]
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(lambda: " ready." in self.log(), 90, f"worker {self.hostname} to start", self)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
        self.process.wait(timeout=60)


def stop_workers(*workers: WorkerProcess) -> None:
    """SIGTERM every worker's process group at once (each finishes or requeues its job), then wait
    for each; one still running after 30 s gets SIGKILL."""
    for worker in workers:
        if worker.process.poll() is None:
            os.killpg(worker.process.pid, signal.SIGTERM)
    for worker in workers:
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def wait_for(condition: Callable[[], object], timeout: float, what: str, *workers: WorkerProcess) -> object:
    """Poll until condition() is truthy (tests/polling.py); fail at once if a worker exits, and on
    timeout with what we waited for and the workers' logs."""

    def check() -> None:
        for worker in workers:
            if worker.process.poll() is not None:
                pytest.fail(f"worker {worker.hostname} exited while waiting for {what}:\n{worker.log()[-3000:]}")

    return polling.wait_for(
        condition, timeout, what, check=check, interval=0.2, describe=lambda: "\n".join(w.log()[-3000:] for w in workers)
    )


def job_row(job_id: int) -> Job:
    with get_sessionmaker().begin() as session:
        return jobs.get_job(session, job_id)


def epochs_of(job_id: int) -> list[int]:
    with get_sessionmaker().begin() as session:
        return [m.epoch for m in jobs.epoch_metrics(session, job_id)]


def artifact_names(job_id: int) -> set[str]:
    with get_sessionmaker().begin() as session:
        return {a.name for a in jobs.artifacts(session, job_id)}


def wait_finished(job_id: int, *workers: WorkerProcess, timeout: float = 120) -> Job:
    return wait_for(lambda: (j := job_row(job_id)).finished and j, timeout, f"job {job_id} to finish", *workers)


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(leukemia_cli, list(args))
    return result.exit_code, result.output


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory) -> Path:
    from core.engine.data.synth import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("queue-data") / "lab"
    write_synthetic_dataset(folder, train=24, valid=8, test=8, image_size=32, seed=0)
    return folder


@pytest.fixture(scope="module")
def queues(service_backend) -> dict[str, str]:
    """Queue names of this module's run, unique so parallel runs on the shared Redis never mix
    (a job id sent to another run's worker would name another database's job)."""
    token = secrets.token_hex(3)
    names = {
        "gpu": f"gpu-{token}",
        "cpu": f"cpu-{token}",
        "kill": f"kill-{token}",
        "nobody": f"nobody-{token}",
        "sweep": f"sweep-{token}",
    }
    yield names
    if service_backend["name"] == "redis+postgres":  # drop the messages nobody consumed
        import redis

        redis.Redis.from_url(service_backend["env"]["BROKER_URL"]).delete(*names.values())


@pytest.fixture(scope="module")
def worker_env(service_backend) -> dict[str, str]:
    return {**os.environ, **service_backend["env"], "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("worker-logs")


@pytest.fixture(scope="module")
def extra_workers(service_backend) -> list[WorkerProcess]:
    """Every worker the module starts, stopped together at the end (per backend: without the
    service_backend dependency one list would span both backends)."""
    started: list[WorkerProcess] = []
    yield started
    stop_workers(*started)


@pytest.fixture(scope="module")
def main_worker(worker_env, queues, log_dir, extra_workers):
    """The module's worker on the gpu and cpu queues."""
    worker = WorkerProcess(worker_env, [queues["gpu"], queues["cpu"]], "main", log_dir)
    extra_workers.append(worker)
    return worker


@pytest.fixture(scope="module")
def twin_worker(main_worker, worker_env, queues, log_dir, extra_workers):
    """A second worker on the gpu queue, for a message delivered to both."""
    worker = WorkerProcess(worker_env, [queues["gpu"]], "twin", log_dir)
    extra_workers.append(worker)
    return worker


@pytest.fixture(scope="module")
def trained_job(main_worker, synthetic_data, queues) -> int:
    job_id = submit("train", {"data_dir": str(synthetic_data), "epochs": 2, **TINY}, queue=queues["gpu"])
    job = wait_finished(job_id, main_worker)
    assert (job.status, job.error) == ("succeeded", None)
    return job_id


# --- tests ------------------------------------------------------------------------------------


def test_job_on_a_queue_nobody_serves_is_flagged(main_worker, synthetic_data, queues):
    job_id = submit("train", {"data_dir": str(synthetic_data), **TINY}, queue=queues["nobody"])
    with get_sessionmaker().begin() as session:
        live = jobs.live_queues(session)
        assert queues["gpu"] in live and queues["nobody"] not in live
    code, output = cli("jobs", "--status", "queued")
    line = next(line for line in output.splitlines() if line.startswith(f"{job_id} "))
    assert code == 0 and f"#1 in {queues['nobody']} NO WORKER" in line
    code, output = cli("job", str(job_id))
    assert code == 0 and f"no live worker consumes queue '{queues['nobody']}'" in output
    assert cli("cancel", str(job_id)) == (0, f"job {job_id} cancelled\n")


def test_train_then_finetune_and_predict_from_it(trained_job, main_worker, synthetic_data, queues, tmp_path):
    assert epochs_of(trained_job) == [1, 2]
    train = job_row(trained_job)
    assert train.attempts == 1 and train.best_valid_accuracy is not None and train.progress == 1.0
    assert {"best.pt", "last.pt", "metrics.csv", "metrics.json", "events.out.tfevents.leukemia"} <= artifact_names(trained_job)

    finetune_id = submit(
        "finetune",
        {"data_dir": str(synthetic_data), "epochs": 1, "device": "cpu", "batch_size": 8},
        parent_id=trained_job,
        queue=queues["gpu"],
    )
    predict_id = submit(
        "predict",
        {"data_dir": str(synthetic_data), "csv": "test.csv", "device": "cpu"},
        parent_id=trained_job,
        queue=queues["cpu"],
    )
    finetune, predict = wait_finished(finetune_id, main_worker), wait_finished(predict_id, main_worker)
    assert (finetune.status, finetune.error, epochs_of(finetune_id)) == ("succeeded", None, [1])
    assert (predict.status, predict.error) == ("succeeded", None)

    code, output = cli("download", str(predict_id), "predictions.csv", "--out", str(tmp_path))
    assert code == 0, output
    with (tmp_path / "predictions.csv").open() as file:
        predicted = list(csv.DictReader(file))
    with (synthetic_data / "test.csv").open() as file:
        expected = list(csv.DictReader(file))
    assert len(predicted) == len(expected) == 8 and all(row["label"] in ("0", "1") for row in predicted)
    assert cli("download", str(predict_id), "nothing.pt")[0] == 2


def test_bad_inputs_fail_with_their_reason_and_the_next_job_runs(trained_job, main_worker, synthetic_data, queues, tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(synthetic_data, corrupt)
    with (corrupt / "train.csv").open() as file:
        first_image = next(iter(csv.DictReader(file)))["Path"]
    (corrupt / first_image).write_bytes(b"this is not a bitmap")

    missing_id = submit("train", {"data_dir": str(tmp_path / "absent"), **TINY}, queue=queues["gpu"])
    corrupt_id = submit("train", {"data_dir": str(corrupt), **TINY}, queue=queues["gpu"])
    wrong_arch_id = submit(
        "finetune",
        {"data_dir": str(synthetic_data), "arch": "resnet50", "device": "cpu"},
        parent_id=trained_job,
        queue=queues["gpu"],
    )
    good_id = submit("evaluate", {"data_dir": str(synthetic_data), "device": "cpu"}, parent_id=trained_job, queue=queues["gpu"])

    code, output = cli("submit", "train", "--data", str(synthetic_data), "--arch", "resnet34", "--queue", queues["gpu"])
    assert code == 2 and "arch" in output and len(output.strip().splitlines()) == 1
    with pytest.raises(UserInputError, match="arch"):
        submit("train", {"data_dir": str(synthetic_data), "arch": "resnet34"})

    missing, corrupted, wrong_arch = (wait_finished(i, main_worker) for i in (missing_id, corrupt_id, wrong_arch_id))
    assert missing.status == "failed" and "absent" in missing.error, missing.error
    assert corrupted.status == "failed" and Path(first_image).name in corrupted.error, corrupted.error
    assert wrong_arch.status == "failed" and "resnet50" in wrong_arch.error, wrong_arch.error
    for job in (missing, corrupted, wrong_arch):
        assert "\n" not in job.error and not job.error.startswith("internal error"), job.error
    good = wait_finished(good_id, main_worker)
    assert (good.status, good.error) == ("succeeded", None)
    assert "evaluation.json" in artifact_names(good_id)
    assert cli("job", "987654") == (2, "error: job 987654 not found\n")


def test_cancel_a_queued_and_a_running_job(main_worker, synthetic_data, queues):
    running_id = submit("train", {"data_dir": str(synthetic_data), "epochs": 20, **TINY}, queue=queues["gpu"])
    waiting_id = submit("train", {"data_dir": str(synthetic_data), **TINY}, queue=queues["gpu"])
    wait_for(lambda: epochs_of(running_id), 90, f"job {running_id} epoch 1", main_worker)
    assert job_row(waiting_id).status == "queued"
    assert cli("cancel", str(waiting_id)) == (0, f"job {waiting_id} cancelled\n")
    code, output = cli("cancel", str(running_id))
    assert code == 0 and "cancel requested" in output
    running = wait_finished(running_id, main_worker, timeout=60)
    assert running.status == "cancelled" and 1 <= len(epochs_of(running_id)) < 20
    assert "last.pt" in artifact_names(running_id)  # the last completed epoch's checkpoint is kept
    assert cli("cancel", str(running_id)) == (2, f"error: job {running_id} is already cancelled; nothing to cancel\n")
    # the cancelled queued job's message reaches the worker and is skipped; it never starts
    wait_for(lambda: f"job {waiting_id} not claimed" in main_worker.log(), 30, "the skipped message", main_worker)
    assert job_row(waiting_id).started_at is None


def test_kill_9_mid_training_then_a_new_worker_finishes_every_epoch_once(
    worker_env, synthetic_data, queues, log_dir, extra_workers
):
    doomed = WorkerProcess(worker_env, [queues["kill"]], "doomed", log_dir)
    job_id = submit("train", {"data_dir": str(synthetic_data), "epochs": 3, **TINY}, queue=queues["kill"])
    wait_for(lambda: epochs_of(job_id), 90, f"job {job_id} epoch 1", doomed)
    doomed.kill(signal.SIGKILL)
    assert job_row(job_id).status == "running" and epochs_of(job_id) in ([1], [1, 2])
    # A job whose message went down with the killed worker before it was claimed: a committed
    # row with no message left in the broker.
    with get_sessionmaker().begin() as session:
        orphan_id = jobs.create_job(
            session,
            jobs.JobRequest(kind="train", params={"data_dir": str(synthetic_data), "epochs": 1, **TINY}, queue=queues["kill"]),
        ).id

    successor = WorkerProcess(worker_env, [queues["kill"]], "successor", log_dir)
    extra_workers.append(successor)
    job = wait_finished(job_id, successor, timeout=120)
    assert (job.status, job.error, job.attempts) == ("succeeded", None, 2)
    assert epochs_of(job_id) == [1, 2, 3]
    assert job.worker_host == successor.hostname
    orphan = wait_finished(orphan_id, successor, timeout=120)  # re-sent when the successor started
    assert (orphan.status, orphan.attempts, epochs_of(orphan_id)) == ("succeeded", 1, [1])


def test_a_message_delivered_twice_to_two_workers_runs_once(main_worker, twin_worker, synthetic_data, queues):
    both = (main_worker, twin_worker)
    job_id = submit("train", {"data_dir": str(synthetic_data), "epochs": 2, **TINY}, queue=queues["gpu"])
    get_app().send_task(RUN_JOB_TASK, args=[job_id], queue=queues["gpu"])  # the same job id, a second time
    job = wait_finished(job_id, *both)
    assert (job.status, job.attempts, epochs_of(job_id)) == ("succeeded", 1, [1, 2])

    def all_logs() -> str:
        return "".join(worker.log() for worker in both)

    wait_for(lambda: f"job {job_id} not claimed" in all_logs(), 30, "the second delivery to be skipped", *both)
    assert all_logs().count(f"job {job_id} (train) claimed") == 1


def test_a_sweep_makes_one_job_per_grid_point(service_backend, synthetic_data, queues):
    code, output = cli(
        "submit",
        "sweep",
        "--kind",
        "train",
        "--data",
        str(synthetic_data),
        "--image-size",
        "32",
        "--grid",
        "arch=resnet18,resnet50",
        "--grid",
        "lr=0.001,0.0003",
        "--queue",
        queues["sweep"],
    )
    assert code == 0 and output.startswith("sweep ") and "4 jobs queued" in output, output
    sweep_id = int(output.split()[1].rstrip(":"))
    code, output = cli("jobs", "--sweep", str(sweep_id))
    rows = [line for line in output.splitlines()[1:] if "train" in line]
    assert code == 0 and len(rows) == 4 and "POINT" in output.splitlines()[0]
    assert sum("arch=resnet50, lr=0.0003" in row for row in rows) == 1
    assert all("NO WORKER" in row for row in rows)
    code, output = cli("submit", "sweep", "--data", str(synthetic_data), "--grid", "arch=resnet18,resnet34")
    assert code == 2 and output.startswith("error: grid point arch=resnet34: arch") and output.count("\n") == 1, output


def test_early_stopping_by_patience_and_by_the_sweeps_median_rule(service_backend, request, tmp_path):
    """Two real runs on a folder whose validation accuracy is exactly 0.5 at every epoch: patience 1
    stops one at epoch 2; the median rule (two finished points at 0.9 and 0.8) stops a sweep point at
    epoch 2. Both end succeeded, with stopped_epoch and the reason on the row, the API model and
    `leukemia job`; progress is 1.0 and the epoch count no longer promises the unrun epochs."""
    if service_backend["name"] == "embedded":  # the rule's query on SQLite: tests/test_early_stopping.py, both backends
        pytest.skip("two training runs; once, on Redis and PostgreSQL, keeps the suite short")
    main_worker, queues = request.getfixturevalue("main_worker"), request.getfixturevalue("queues")
    from core.service.sweep_stopping import MedianStopRule
    from tests.test_early_stopping import finish_point, write_plateau_folder
    from web import row_models

    data = write_plateau_folder(tmp_path / "plateau")
    params = {"data_dir": str(data), "epochs": 5, **TINY, "batch_size": 16}  # one step per epoch
    patient = submit(
        "train", {**params, "early_stopping_metric": "valid_accuracy", "early_stopping_patience": 1}, queue=queues["gpu"]
    )
    with get_sessionmaker().begin() as session:
        sweep, points = jobs.create_sweep(
            session,
            jobs.SweepRequest(
                kind="train",
                base_params=params,
                grid={"seed": [0, 1, 2]},
                queue=queues["gpu"],
                early_stopping=MedianStopRule(metric="valid_accuracy"),
            ),
        )
        ids = [job.id for job in points]
        finish_point(session, ids[0], [0.6, 0.9, 0.9])
        finish_point(session, ids[1], [0.6, 0.8, 0.9])
    dispatch.send_job(ids[2], queues["gpu"])

    expected = {
        patient: "stopped early at epoch 2: valid_accuracy did not improve for 1 epoch (best 0.5 at epoch 1)",
        ids[2]: "stopped by the sweep's median rule at epoch 2: valid_accuracy 0.5 < median 0.85 of 2 finished points",
    }
    for job_id, reason in expected.items():
        job = wait_finished(job_id, main_worker)
        assert (job.status, job.error, job.stopped_epoch, job.stop_reason) == ("succeeded", None, 2, reason)
        assert (job.progress, job.epoch, job.epochs_total) == (1.0, 2, 2) and epochs_of(job_id) == [1, 2]
        with get_sessionmaker().begin() as session:
            answered = row_models.job_models(session, [job])[0]
            best = jobs.job_checkpoint(session, job_id, "best")
        assert (answered.stopped_epoch, answered.stop_reason) == (2, reason)
        code, output = cli("job", str(job_id))
        assert code == 0 and "train succeeded (stopped early at epoch 2)" in output and reason in output.splitlines()
        from core.engine.model.checkpoint import load_checkpoint

        assert load_checkpoint(best)["epoch"] == 1  # the first of the flat epochs is the best
    code, output = cli("jobs", "--sweep", str(sweep.id))
    assert code == 0 and output.splitlines()[0] == (
        f"sweep {sweep.id}: median stopping rule on valid_accuracy: acts from epoch 2 once 2 point(s) have finished"
    )
