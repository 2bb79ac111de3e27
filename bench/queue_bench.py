"""Queue benchmark: submit-to-start latency on an idle worker, and jobs per second through N jobs.

What runs: a real `leukemia worker` subprocess (concurrency 1: one pool thread) and the real
run_next_job path for every job: commit the row, send the id, deliver, claim (conditional UPDATE),
start and stop the heartbeat thread, call core.engine.training.loop.train, record the outcome. To measure
the queue and not the model, each job is a train job whose data folder does not exist: core
refuses it at once (UserInputError), so the job ends `failed` in milliseconds. A real job adds
its own compute on top of these figures.

    .venv/bin/python bench/queue_bench.py --jobs 1000 --latency-samples 20 [--backend redis|embedded|both]
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MISSING_DATA = "/nonexistent/queue-bench-data"


def configure(backend: str, home: Path) -> tuple[dict[str, str], str | None]:
    """Environment for a backend (also applied to this process); the PostgreSQL database to drop, if any."""
    import psycopg

    env = {"LEUKEMIA_HOME": str(home), "HEARTBEAT_SECONDS": "5", "STALE_AFTER_SECONDS": "60"}
    database = None
    if backend == "redis":
        database = f"leukemia_bench_{secrets.token_hex(4)}"
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {database}")
        env["DATABASE_URL"] = f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}"
        env["BROKER_URL"] = "redis://127.0.0.1:6379/0"
    for key in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR"):
        os.environ.pop(key, None)
    os.environ.update(env)
    from core.service.db import reset_engines, upgrade_database
    from core.service.settings import get_settings

    get_settings.cache_clear()
    reset_engines()
    upgrade_database()
    return env, database


def release(database: str | None) -> None:
    """Undo configure: close this process's engines and drop its PostgreSQL database, if it made one."""
    from core.service.db import reset_engines

    reset_engines()
    if database:
        import psycopg

        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def start_worker(env: dict[str, str], queue: str, log_path: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "leukemia.cli",
        "worker",
        "--queues",
        queue,
        "--hostname",
        f"bench-{queue}@local",
        "--loglevel",
        "WARNING",
    ]
    worker = subprocess.Popen(
        command,
        env={**os.environ, **env, "OMP_NUM_THREADS": "1"},
        cwd=REPO,
        stdout=log_path.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    from core.service import jobs
    from core.service.db import get_sessionmaker

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with get_sessionmaker().begin() as session:
            if queue in jobs.live_queues(session):
                time.sleep(3)  # registered before Celery consumes: give it time to connect
                return worker
        time.sleep(0.2)
    raise SystemExit(f"worker did not start; see {log_path}")


def wait_finished(job_ids: list[int], timeout: float) -> None:
    from sqlalchemy import func, select

    from core.service.db import get_sessionmaker
    from core.service.records import FINISHED_STATUSES, Job

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_sessionmaker().begin() as session:
            done = session.scalar(select(func.count(Job.id)).where(Job.id.in_(job_ids), Job.status.in_(FINISHED_STATUSES)))
        if done == len(job_ids):
            return
        time.sleep(0.05)
    raise SystemExit(f"timed out: {done}/{len(job_ids)} jobs finished")


def job_times(job_ids: list[int]):  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from core.service.db import get_sessionmaker
    from core.service.records import Job

    with get_sessionmaker().begin() as session:
        rows = session.execute(select(Job.created_at, Job.started_at, Job.finished_at, Job.error).where(Job.id.in_(job_ids)))
        return list(rows)


def measure(backend: str, jobs_count: int, latency_samples: int) -> dict[str, float]:
    from core.service.access import cli_actor
    from core.service.jobs.request import JobRequest, Origin
    from core.service.settings import get_settings
    from worker.dispatch import submit

    queue = f"bench-{secrets.token_hex(3)}"
    request = JobRequest(kind="train", params={"data_dir": MISSING_DATA, "image_size": 32, "device": "cpu"}, queue=queue)

    def submit_job() -> int:
        return submit(request, actor=cli_actor(), origin=Origin.CLI, settings=get_settings()).id

    with tempfile.TemporaryDirectory(prefix="queue-bench-") as tmp:
        env, database = configure(backend, Path(tmp))
        worker = start_worker(env, queue, Path(tmp) / "worker.log")
        try:
            latencies = []
            for _ in range(latency_samples):  # one at a time: the worker is idle at each submit
                job_id = submit_job()
                wait_finished([job_id], 60)
                created, started, _, error = job_times([job_id])[0]
                assert error and "queue-bench-data" in error, error  # the real path ran and core refused the folder
                latencies.append((started - created).total_seconds())
            started_submit = time.perf_counter()
            job_ids = [submit_job() for _ in range(jobs_count)]
            submit_seconds = time.perf_counter() - started_submit
            wait_finished(job_ids, 1800)
            drain_seconds = time.perf_counter() - started_submit
            times = job_times(job_ids)
            first_start = min(t[1] for t in times)
            last_finish = max(t[2] for t in times)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
            release(database)
    return {
        "latency_median_s": statistics.median(latencies),
        "latency_max_s": max(latencies),
        "submits_per_s": jobs_count / submit_seconds,
        "jobs_per_s_worker": jobs_count / (last_finish - first_start).total_seconds(),
        "jobs_per_s_end_to_end": jobs_count / drain_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--latency-samples", type=int, default=20)
    parser.add_argument("--backend", choices=["redis", "embedded", "both"], default="both")
    args = parser.parse_args()
    backends = ["redis", "embedded"] if args.backend == "both" else [args.backend]
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores, {args.jobs} jobs")
    for backend in backends:
        label = "Redis + PostgreSQL" if backend == "redis" else "embedded (SQLite + kombu SQLAlchemy broker)"
        figures = measure(backend, args.jobs, args.latency_samples)
        print(
            f"{label}: submit-to-start latency median {figures['latency_median_s'] * 1000:.0f} ms "
            f"(max {figures['latency_max_s'] * 1000:.0f} ms, {args.latency_samples} jobs on an idle worker); "
            f"submit {figures['submits_per_s']:.0f} jobs/s; worker {figures['jobs_per_s_worker']:.1f} jobs/s "
            f"(first start to last finish), {figures['jobs_per_s_end_to_end']:.1f} jobs/s end to end",
            flush=True,
        )


if __name__ == "__main__":
    main()
