"""Job-list benchmark: how long a page of the job list takes with N jobs in the database.

What runs: N job rows (with tags) inserted in one statement, then, repeated, `core.service.jobs.list_jobs` and the
real Flask app (test client, logged in) serving the dashboard's list `/` and `GET /api/jobs`,
first page and a deep page, unfiltered and filtered by status. The tests check that these
queries are served by indexes with no sort (tests/test_jobs.py); this measures what that buys.

    .venv/bin/python bench/list_bench.py --jobs 10000 --repeat 20 [--backend redis|embedded|both]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.queue_bench import configure, release  # noqa: E402  (after the path set-up, as a script)

USER = ("bench", "bench-password")
TOKEN = "bench-token"
URLS = (
    "/",
    "/?page=100",
    "/?status=queued",
    "/?status=queued&page=50",
    "/api/jobs?status=failed&page=20",
    "/?tag=baseline",
    "/api/jobs?tag=baseline&status=succeeded&page=5",
)


def insert_jobs(count: int) -> None:
    from sqlalchemy import insert
    from werkzeug.security import generate_password_hash

    from core.service.db import get_sessionmaker
    from core.service.records import Job, JobStatus, JobTag, User, utcnow

    now = utcnow()
    statuses = (JobStatus.queued, JobStatus.running, JobStatus.succeeded, JobStatus.failed)
    rows = [
        {
            "kind": "train",
            "status": statuses[i % 4],
            "params": {"arch": "resnet18"},
            "data_dir": "/bench",
            "queue": "gpu",
            "attempts": 0,
            "max_attempts": 3,
            "cancel_requested": False,
            "created_at": now,
            "progress": 0.5,
            "best_valid_accuracy": 0.8,
        }
        for i in range(count)
    ]
    with get_sessionmaker().begin() as session:
        session.execute(insert(Job), rows)
        # Every job has one of 20 tags; every 10th also carries "baseline" (the tag filter's page).
        tags = [{"job_id": i, "tag": f"lr-{i % 20}"} for i in range(1, count + 1)]
        tags += [{"job_id": i, "tag": "baseline"} for i in range(1, count + 1, 10)]
        session.execute(insert(JobTag), tags)
        session.add(User(username=USER[0], password_hash=generate_password_hash(USER[1]), created_at=now))


def median_ms(action: Callable[[], object], repeat: int) -> float:
    action()  # warm: first-use costs (templates, statement cache) are not the list's
    timings = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


def measure(backend: str, jobs_count: int, repeat: int) -> dict[str, float]:
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.records import JobStatus
    from core.service.settings import get_settings
    from web import create_app

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="list-bench-") as tmp:
        _, database = configure(backend, Path(tmp))
        try:
            insert_jobs(jobs_count)

            def core_page() -> None:
                with get_sessionmaker().begin() as session:
                    jobs.list_jobs(session, status=JobStatus.failed, page=20, per_page=50)

            figures["core list_jobs(status=failed, page=20)"] = median_ms(core_page, repeat)
            # The bench's own secrets, as settings the app is given (API_TOKEN is a setting, not Flask config).
            settings = get_settings().model_copy(update={"secret_key": "bench-" * 6, "api_token": TOKEN})
            app = create_app(settings, test_config={"TESTING": True, "WTF_CSRF_ENABLED": False})
            client = app.test_client()
            assert client.post("/login", data={"username": USER[0], "password": USER[1]}).status_code == 302
            for url in URLS:

                def get(url: str = url) -> None:
                    response = client.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
                    assert response.status_code == 200, (url, response.status_code)

                figures[f"GET {url}"] = median_ms(get, repeat)
        finally:
            release(database)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backend", choices=["redis", "embedded", "both"], default="both")
    args = parser.parse_args()
    backends = ["redis", "embedded"] if args.backend == "both" else [args.backend]
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPU cores, {args.jobs} jobs, "
        f"median of {args.repeat}"
    )
    for backend in backends:
        label = "PostgreSQL" if backend == "redis" else "SQLite (embedded)"
        figures = measure(backend, args.jobs, args.repeat)
        print(f"{label}: " + "; ".join(f"{what} {ms:.1f} ms" for what, ms in figures.items()), flush=True)


if __name__ == "__main__":
    main()
