"""Priorities order the work: among queued jobs of a queue the higher priority starts first (ties: the
oldest), on Redis+PostgreSQL and on the embedded broker, with a priority changed while queued taking
effect; queue positions follow the same order; a job is never claimed by two workers."""

from __future__ import annotations

import os
import secrets
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import update

from core.engine.params import parse_params
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.job_options import JobOptions
from core.service.records import Job, utcnow
from leukemia.cli import main as leukemia_cli
from tests.test_worker import WorkerProcess, epochs_of, stop_workers, submit, wait_for

TRAIN = {"data_dir": "/data/lab", "epochs": 1, "image_size": 32}


@pytest.fixture()
def db(service_backend):
    return get_sessionmaker()


def queued(db, queue: str, priority: str = "normal") -> int:
    with db.begin() as session:
        return jobs.create_job(
            session, jobs.JobRequest(kind="train", params=TRAIN, queue=queue, options=JobOptions(priority=priority))
        ).id


def set_priority(db, job_id: int, priority: str) -> None:
    """The edit a user makes on a queued job (core.service.jobs.apply_options, as the edit endpoint does)."""
    with db.begin() as session:
        job = jobs.get_job(session, job_id)
        jobs.apply_options(session, job, jobs.options_of(session, job).model_copy(update={"priority": priority}))


def positions(db, job_ids: list[int]) -> list[int | None]:
    with db.begin() as session:
        return [jobs.queue_position(session, jobs.get_job(session, job_id)) for job_id in job_ids]


# --- the claim order, in core -----------------------------------------------------------------


def test_a_message_claims_the_best_queued_job_of_its_queue(db):
    queue = f"prio-{secrets.token_hex(3)}"
    low, normal, high, normal_2 = (queued(db, queue, p) for p in ("low", "normal", "high", "normal"))
    other_queue_high = queued(db, f"{queue}-other", "high")
    assert positions(db, [low, normal, high, normal_2]) == [4, 2, 1, 3]
    assert positions(db, [other_queue_high]) == [1]  # positions count within a queue only

    set_priority(db, low, "high")  # changed while queued: it is now first among the highs by age
    assert positions(db, [low, normal, high, normal_2]) == [1, 3, 2, 4]

    order = []
    with db.begin() as session:
        for _ in range(4):  # whichever message arrives, it starts the best job (here: low's message each time)
            job = jobs.claim_next_job(session, low, owner="w", host="h")
            order.append(job.id)
        assert jobs.claim_next_job(session, low, owner="w", host="h") is None  # a surplus message: nothing left
        assert jobs.get_job(session, other_queue_high).status == "queued"  # another queue's job is not taken
    assert order == [low, high, normal, normal_2]
    assert positions(db, [low, normal, high, normal_2]) == [None] * 4


def test_cancelled_jobs_are_never_claimed_and_a_stale_lease_is_the_fallback(db):
    queue = f"prio-{secrets.token_hex(3)}"
    cancelled, waiting = queued(db, queue, "high"), queued(db, queue, "low")
    running = queued(db, queue, "normal")
    with db.begin() as session:
        jobs.request_cancel(session, cancelled)
        assert jobs.claim_job(session, running, owner="dead", host="h") is not None
        assert jobs.queue_position(session, jobs.get_job(session, waiting)) == 1
        # the cancelled job's message starts the one still waiting, never the cancelled one
        assert jobs.claim_next_job(session, cancelled, owner="w", host="h").id == waiting
        assert jobs.get_job(session, cancelled).status == "cancelled"
        assert jobs.claim_next_job(session, running, owner="w", host="h") is None  # a live lease is not taken
        session.execute(update(Job).where(Job.id == running).values(heartbeat_at=utcnow() - timedelta(minutes=5)))
        taken = jobs.claim_next_job(session, running, owner="w2", host="h")  # its worker died: taken over
        assert (taken.id, taken.lease_owner, taken.attempts) == (running, "w2", 2)
        assert jobs.claim_next_job(session, 2**31 - 1, owner="w", host="h") is None  # no such job: nothing


def test_concurrent_claims_never_give_one_job_to_two_owners(db):
    queue = f"prio-{secrets.token_hex(3)}"
    job_ids = [queued(db, queue, ("low", "normal", "high")[i % 3]) for i in range(6)]
    claimers = 8
    barrier = threading.Barrier(claimers)
    won: dict[str, int] = {}
    errors: list[BaseException] = []

    def claim(owner: str, message_for: int) -> None:
        try:
            barrier.wait()
            with db.begin() as session:
                job = jobs.claim_next_job(session, message_for, owner=owner, host="h")
                if job is not None:
                    won[owner] = job.id
        except BaseException as error:  # noqa: BLE001 - reported below with the thread's owner
            errors.append(error)

    threads = [threading.Thread(target=claim, args=(f"w{i}", job_ids[i % 6])) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(won.values()) == sorted(job_ids)  # six winners, each with a different job; two found nothing
    with db.begin() as session:
        rows = [jobs.get_job(session, job_id) for job_id in job_ids]
        assert all(row.status == "running" and row.attempts == 1 for row in rows)
        assert {row.lease_owner: row.id for row in rows} == won


def test_a_claim_reads_the_queue_index_with_no_sort_and_a_page_of_positions_is_one_query(db):
    """With thousands queued, a claim reads its candidates through an index, in order, with no sort of the
    queued jobs; the positions of a page come from one query (the figures: bench/claim_bench.py)."""
    from tests.test_jobs import query_plans

    queue = f"prio-{secrets.token_hex(3)}"
    params = parse_params("train", TRAIN).model_dump(mode="json")
    with db.begin() as session:
        session.execute(
            Job.__table__.insert(),
            [
                {
                    "kind": "train",
                    "status": "queued",
                    "params": params,
                    "data_dir": "/d",
                    "queue": queue,
                    "attempts": 0,
                    "max_attempts": 3,
                    "cancel_requested": False,
                    "progress": 0.0,
                    "created_at": utcnow(),
                    "priority": 2 if i < 5 else 1 if i < 10 else 0,
                }
                for i in range(3000)
            ],
        )
        page, _ = jobs.list_jobs(session, status="queued", per_page=50)
        youngest = page[0]
    with db.begin() as session:
        positions = jobs.queue_positions(session, page)
        assert positions[youngest.id] == jobs.queue_position(session, youngest) == 3000
        assert sorted(positions.values()) == list(range(2951, 3001))  # the youngest 50, all low: the last places
        assert len(query_plans(session, lambda: jobs.queue_positions(session, page))) == 1
        plans = query_plans(session, lambda: jobs.claim_next_job(session, youngest.id, owner="w", host="h"))
    assert len(plans) >= 4, plans  # the queue's name, then 3 candidate reads (one per priority)
    for plan in plans:  # each read through an index (the queue's, or the ids' when most rows match), no sort
        lowered = plan.lower()
        assert "index" in lowered or "primary key" in lowered, plan
        assert "sort" not in lowered and "temp b-tree" not in lowered and "seq scan" not in lowered, plan


# --- real workers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained resnet18 checkpoint at 32 px: the predict jobs below need a model, not a good one."""
    from core.engine.model.checkpoint import save_checkpoint
    from core.engine.model.resnet import build_model

    path = tmp_path_factory.mktemp("prio-model") / "best.pt"
    save_checkpoint(
        {
            "format": 1,
            "arch": "resnet18",
            "num_classes": 2,
            "model": build_model("resnet18").state_dict(),
            "mean": [0.5] * 3,
            "std": [0.25] * 3,
            "image_size": 32,
            "epoch": 1,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    from core.engine.data.synth import write_synthetic_dataset

    folder = tmp_path_factory.mktemp("prio-data") / "lab"
    write_synthetic_dataset(folder, train=8, valid=4, test=4, image_size=32, seed=0)
    return folder


def test_real_worker_starts_queued_jobs_by_priority(service_backend, checkpoint, tiny_data, tmp_path):
    """Jobs queued while no worker serves their queue, two re-prioritised while queued, start in
    (priority desc, id asc) order once a worker (concurrency 1) starts on that queue; then jobs
    submitted while the worker is busy start by priority when it is free."""
    queue = f"prio-{secrets.token_hex(3)}"
    params = {"data_dir": str(tiny_data), "csv": "test.csv", "checkpoints": [str(checkpoint)], "device": "cpu", "batch_size": 4}
    wanted = ["low", "normal", "normal", "low", "high"]
    ids = [submit("predict", params, queue=queue, options=JobOptions(priority=p)) for p in wanted]
    a_low, b_normal, c_normal, d_low, e_high = ids
    runner = CliRunner()
    for job_id, priority in ((d_low, "high"), (c_normal, "low")):  # D overtakes E (older), C falls behind A (younger)
        edited = runner.invoke(leukemia_cli, ["edit", str(job_id), "--priority", priority])
        assert (edited.exit_code, edited.output) == (0, f"job {job_id} edited: priority {priority}\n")
    expected = [d_low, e_high, b_normal, a_low, c_normal]
    assert positions(get_sessionmaker(), expected) == [1, 2, 3, 4, 5]

    result = runner.invoke(leukemia_cli, ["jobs", "--status", "queued"])
    rows = {line.split()[0]: line for line in result.output.splitlines()[1:] if line.split() and line.split()[0].isdigit()}
    assert result.exit_code == 0 and "PRIORITY" in result.output.splitlines()[0], result.output
    assert "high" in rows[str(d_low)] and f"#1 in {queue}" in rows[str(d_low)]
    assert "low" in rows[str(c_normal)] and f"#5 in {queue}" in rows[str(c_normal)]

    env = {**os.environ, **service_backend["env"], "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    worker = WorkerProcess(env, [queue], "prio", tmp_path)

    def all_finished(job_ids: list[int]) -> list[Job] | None:
        with get_sessionmaker().begin() as session:
            rows = [jobs.get_job(session, job_id) for job_id in job_ids]
        return rows if all(row.finished for row in rows) else None

    try:
        rows = wait_for(lambda: all_finished(ids), 120, "the five jobs to finish", worker)
        assert [(row.status, row.error) for row in rows] == [("succeeded", None)] * 5
        started = [row.id for row in sorted(rows, key=lambda row: row.started_at)]
        assert started == expected, worker.log()[-3000:]
        log = worker.log()
        assert f"job {d_low} (predict) claimed" in log and "priority high (message for job" in log

        # While the worker is busy (and holds the next message, prefetch 1), a high job submitted last
        # still starts first once the worker is free: the message it takes is low's, the job it starts high's.
        busy = submit(
            "train",
            {"data_dir": str(tiny_data), "epochs": 200, "image_size": 32, "batch_size": 4, "device": "cpu", "seed": 0},
            queue=queue,
        )
        wait_for(lambda: epochs_of(busy), 90, f"job {busy} to be running", worker)
        later = [submit("predict", params, queue=queue, options=JobOptions(priority=p)) for p in ("low", "normal", "high")]
        assert CliRunner().invoke(leukemia_cli, ["cancel", str(busy)]).exit_code == 0
        rows = wait_for(lambda: all_finished([busy, *later]), 120, "the busy worker's next jobs", worker)
        assert [row.status for row in rows] == ["cancelled", "succeeded", "succeeded", "succeeded"]
        assert [row.id for row in sorted(rows[1:], key=lambda row: row.started_at)] == later[::-1], worker.log()[-3000:]
    finally:
        stop_workers(worker)
        if service_backend["name"] == "redis+postgres":  # drop the surplus messages nobody consumed
            import redis

            redis.Redis.from_url(service_backend["env"]["BROKER_URL"]).delete(queue)


# --- what the API, the job list and the job page show ------------------------------------------


def test_api_and_pages_show_priority_and_the_queue_position_it_gives(client, tmp_path):
    from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
    from tests.web_helpers import TRAIN as WEB_TRAIN
    from tests.web_helpers import login

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    with get_sessionmaker().begin() as session:
        first, second, third = (
            jobs.create_job(
                session,
                jobs.JobRequest(
                    kind="train", params={**WEB_TRAIN, "data_dir": str(tmp_path)}, queue="gpu", options=JobOptions(priority=p)
                ),
            ).id
            for p in ("low", "normal", "low")
        )

    def shown() -> dict[int, tuple[str, int | None]]:
        listed = client.get("/api/jobs?status=queued", headers=auth).json["jobs"]
        return {job["id"]: (job["priority"], job["queue_position"]) for job in listed}

    assert shown() == {first: ("low", 2), second: ("normal", 1), third: ("low", 3)}
    response = client.patch(f"/api/jobs/{third}", json={"priority": "high"}, headers=auth)
    assert response.status_code == 200, response.json
    assert shown() == {first: ("low", 3), second: ("normal", 2), third: ("high", 1)}
    assert client.get(f"/api/jobs/{third}", headers=auth).json["queue_position"] == 1
    response = client.patch(f"/api/jobs/{third}", json={"priority": "urgent"}, headers=auth)
    assert response.status_code == 400 and "priority" in response.json["error"], response.json

    login(client, *WEB_ADMIN)
    page = client.get("/").get_data(as_text=True)
    assert "<th>Priority</th>" in page
    assert page.count('class="priority priority-high waiting"') == 1  # the queued high job's badge
    assert page.count('class="priority priority-low waiting"') == 1
    detail = client.get(f"/jobs/{third}").get_data(as_text=True)
    assert "<dt>Priority</dt>" in detail and 'class="priority priority-high waiting"' in detail
    assert "gpu · #1" in detail
