"""Claim benchmark: what the priority order costs a worker taking a message, and a queued job's position.

What runs: N queued job rows in one queue (priorities low/normal/high in turn) inserted in one
statement, then, repeated, `core.service.jobs.claim_next_job` (the best queued job of the queue: the
candidate query in CLAIM_ORDER and one conditional UPDATE) against `core.service.jobs.claim_job` (the
named job only, the claim before priorities), each in a transaction that is rolled back so the
queue stays N long; and `core.service.jobs.queue_position` of the last job in the order.

    .venv/bin/python bench/claim_bench.py --jobs 10000 --repeat 20 [--backend redis|embedded|both]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.list_bench import median_ms  # noqa: E402  (after the path set-up, as a script)
from bench.queue_bench import configure, release  # noqa: E402


def insert_queued(count: int) -> list[int]:
    from sqlalchemy import insert, select

    from core.service.db import get_sessionmaker
    from core.service.records import Job, JobStatus, utcnow

    now = utcnow()
    rows = [
        {
            "kind": "train",
            "status": JobStatus.queued,
            "params": {"arch": "resnet18"},
            "data_dir": "/bench",
            "queue": "gpu",
            "attempts": 0,
            "max_attempts": 3,
            "cancel_requested": False,
            "created_at": now,
            "progress": 0.0,
            "priority": i % 3,
        }
        for i in range(count)
    ]
    with get_sessionmaker().begin() as session:
        session.execute(insert(Job), rows)
        return list(session.scalars(select(Job.id).order_by(Job.id)))


def measure(backend: str, jobs_count: int, repeat: int) -> dict[str, float]:
    from core.service import jobs
    from core.service.db import get_sessionmaker

    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="claim-bench-") as tmp:
        _, database = configure(backend, Path(tmp))
        try:
            ids = insert_queued(jobs_count)
            oldest, last_in_order = ids[0], next(i for i in reversed(ids) if (i - ids[0]) % 3 == 0)

            def rolled_back(action) -> None:  # type: ignore[no-untyped-def]
                with get_sessionmaker()() as session:
                    session.begin()
                    assert action(session) is not None
                    session.rollback()

            figures["claim_job (the named job)"] = median_ms(
                lambda: rolled_back(lambda s: jobs.claim_job(s, oldest, owner="b", host="h")), repeat
            )
            figures["claim_next_job (best of the queue)"] = median_ms(
                lambda: rolled_back(lambda s: jobs.claim_next_job(s, oldest, owner="b", host="h")), repeat
            )
            with get_sessionmaker().begin() as session:
                last = jobs.get_job(session, last_in_order)
                assert jobs.queue_position(session, last) == jobs_count
                figures["queue_position (last in order)"] = median_ms(lambda: jobs.queue_position(session, last), repeat)
        finally:
            release(database)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--backend", choices=["redis", "embedded", "both"], default="both")
    args = parser.parse_args()
    for backend in ["redis", "embedded"] if args.backend == "both" else [args.backend]:
        name = "PostgreSQL" if backend == "redis" else "SQLite (embedded)"
        for label, value in measure(backend, args.jobs, args.repeat).items():
            print(f"{name:18s} {args.jobs} queued  {label:38s} {value:8.2f} ms (median of {args.repeat})")


if __name__ == "__main__":
    main()
