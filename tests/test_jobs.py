"""The job service against real PostgreSQL and SQLite: leases, heartbeats, cancel, retry, reaping, queues."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from core.common.errors import BrokerUnavailable, StateConflict, UserInputError
from core.engine.params import parse_params
from core.engine.progress import EpochRecord
from core.service import jobs
from core.service.access import cli_actor
from core.service.db import get_sessionmaker
from core.service.records import EpochMetric, Job, WorkerRecord, utcnow
from core.service.settings import get_settings

TRAIN = {"data_dir": "/data/lab", "epochs": 3, "image_size": 32}


@pytest.fixture()
def db(service_backend):
    """A sessionmaker on the backend's database."""
    return get_sessionmaker()


def new_job(db, kind="train", params=None, max_attempts: int | None = None, **fields) -> int:
    with db.begin() as session:
        job = jobs.create_job(session, jobs.JobRequest(kind=kind, params=params or TRAIN, **fields))
        job.max_attempts = max_attempts or job.max_attempts  # the MAX_ATTEMPTS setting unless the test needs another
        return job.id


def make_stale(db, job_id: int) -> None:
    with db.begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(minutes=5)))


def test_create_job_validates_and_routes(db):
    with db.begin() as session:
        job = jobs.create_job(session, jobs.JobRequest(kind="train", params=TRAIN))
        assert (job.status, job.queue, job.attempts, job.max_attempts) == ("queued", "gpu", 0, 3)
        assert job.params["lr"] == 0.001 and job.data_dir == "/data/lab"
        with pytest.raises(UserInputError, match="arch"):
            jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "arch": "resnet34"}))
        with pytest.raises(UserInputError, match="parent: job 999999 not found"):
            jobs.create_job(
                session, jobs.JobRequest(kind="predict", params={"data_dir": "/d", "csv": "test.csv"}, parent_id=999999)
            )
        with pytest.raises(UserInputError, match="parent: a predict job needs"):
            jobs.create_job(session, jobs.JobRequest(kind="predict", params={"data_dir": "/d", "csv": "test.csv"}))
        with pytest.raises(UserInputError, match=f"parent: job {job.id} is queued and has no checkpoint"):
            jobs.create_job(session, jobs.JobRequest(kind="evaluate", params={"data_dir": "/d"}, parent_id=job.id))
        evaluate = jobs.create_job(
            session, jobs.JobRequest(kind="evaluate", params={"data_dir": "/d", "checkpoint": "/runs/a/best.pt"})
        )
        assert evaluate.queue == "cpu"
    with pytest.raises(UserInputError, match="job 987654 not found"):
        with db.begin() as session:
            jobs.get_job(session, 987654)


def test_claim_runs_a_twice_delivered_job_once(db):
    job_id = new_job(db)
    barrier = threading.Barrier(4)
    winners = []

    def claim(owner: str) -> None:
        barrier.wait()
        with db.begin() as session:
            if jobs.claim_job(session, job_id, owner=owner, host="h") is not None:
                winners.append(owner)

    threads = [threading.Thread(target=claim, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1
    with db.begin() as session:
        job = jobs.get_job(session, job_id)
        assert (job.status, job.attempts, job.lease_owner) == ("running", 1, winners[0])
        assert jobs.claim_job(session, job_id, owner="late", host="h") is None  # fresh lease: not stealable
        assert jobs.heartbeat(session, job_id, "late", progress=0.5) is False
        assert jobs.heartbeat(session, job_id, winners[0], progress=0.5, epoch=1) is True
        assert jobs.finish_job(session, job_id, winners[0], "succeeded")
        assert jobs.claim_job(session, job_id, owner="again", host="h") is None  # finished: never rerun
        assert jobs.get_job(session, job_id).progress == 1.0


def test_stale_lease_is_taken_over_until_attempts_run_out(db):
    job_id = new_job(db, max_attempts=2)
    with db.begin() as session:
        assert jobs.claim_job(session, job_id, owner="a", host="h")
    make_stale(db, job_id)
    with db.begin() as session:
        job = jobs.claim_job(session, job_id, owner="b", host="h")
        assert job is not None and job.attempts == 2 and job.lease_owner == "b"
        assert jobs.heartbeat(session, job_id, "a") is False  # the old owner learns it lost the lease
        assert jobs.finish_job(session, job_id, "a", "succeeded") is False
    make_stale(db, job_id)
    with db.begin() as session:
        assert jobs.claim_job(session, job_id, owner="c", host="h") is None  # attempts exhausted


def test_requeue_lost_jobs(db):
    retried, exhausted, alive = new_job(db), new_job(db, max_attempts=1), new_job(db)
    with db.begin() as session:
        for job_id in (retried, exhausted, alive):
            jobs.claim_job(session, job_id, owner="dead", host="h")
    make_stale(db, retried)
    make_stale(db, exhausted)
    with db.begin() as session:
        requeued = [job.id for job in jobs.requeue_lost_jobs(session)]
        assert retried in requeued and exhausted not in requeued and alive not in requeued
        # nothing stale twice (the database is shared with other tests of the session: a job another
        # test left running may go stale now, so only this test's jobs are looked at)
        assert not {retried, exhausted, alive} & {job.id for job in jobs.requeue_lost_jobs(session)}
        assert jobs.get_job(session, retried).status == "queued"
        assert (jobs.get_job(session, exhausted).status, jobs.get_job(session, exhausted).error) == ("failed", "worker lost")
        assert jobs.get_job(session, alive).status == "running"
        assert jobs.claim_job(session, retried, owner="new", host="h").attempts == 2


def test_cancel_and_retry(db):
    queued, running, untouched = new_job(db), new_job(db), new_job(db)
    with db.begin() as session:
        jobs.claim_job(session, running, owner="w", host="h")
        assert jobs.request_cancel(session, queued).status == "cancelled"
        assert jobs.claim_job(session, queued, owner="w", host="h") is None  # its message arrives later: skipped
        job = jobs.request_cancel(session, running)
        assert (job.status, job.cancel_requested) == ("running", True)
        assert jobs.heartbeat(session, running, "w", progress=0.3) is False  # the worker stops
        assert jobs.finish_job(session, running, "w", "cancelled")
        with pytest.raises(StateConflict, match=f"job {running} is already cancelled; nothing to cancel"):
            jobs.request_cancel(session, running)
        with pytest.raises(StateConflict, match="only failed or cancelled"):
            jobs.retry_job(session, untouched, get_settings())
        again = jobs.retry_job(session, running, get_settings())
        assert (again.status, again.attempts, again.cancel_requested, again.error) == ("queued", 0, False, None)
        assert jobs.claim_job(session, running, owner="w2", host="h").attempts == 1


def test_an_unsent_job_fails_only_while_it_is_still_queued(db):
    queued, running = new_job(db), new_job(db)
    with db.begin() as session:
        jobs.claim_job(session, running, owner="w", host="h")
        assert jobs.fail_unsent_job(session, queued, "could not send job: broker down")
        assert not jobs.fail_unsent_job(session, running, "could not send job: broker down")  # a worker has it
        failed, taken = jobs.get_job(session, queued), jobs.get_job(session, running)
        assert (failed.status, failed.error) == ("failed", "could not send job: broker down")
        assert failed.finished_at is not None and (taken.status, taken.error) == ("running", None)


def test_a_jobs_checkpoint_is_resolved_in_its_own_run_folder(db):
    from core.service.run_folders import job_run_folder

    job_id = new_job(db)
    with db.begin() as session:
        run_folder = job_run_folder(jobs.get_job(session, job_id))
        with pytest.raises(UserInputError, match=f"parent: job {job_id} has no last.pt checkpoint on disk") as caught:
            jobs.job_checkpoint(session, job_id, "last")
        assert caught.value.field == "parent_id"
        run_folder.mkdir(parents=True)
        (run_folder / "last.pt").write_bytes(b"x")
        assert jobs.job_checkpoint(session, job_id, "last") == run_folder / "last.pt"
        with pytest.raises(UserInputError, match=f"parent: job {job_id} has no best.pt"):
            jobs.job_checkpoint(session, job_id, "best")  # the choice, never silently the other file
        with pytest.raises(UserInputError, match="parent: job 99999999 not found"):
            jobs.job_checkpoint(session, 99999999, "best")


def test_epoch_upsert_is_idempotent_and_tracks_best(db):
    job_id = new_job(db)
    record = EpochRecord(
        epoch=1,
        train_loss=0.7,
        train_accuracy=0.5,
        valid_loss=0.8,
        valid_accuracy=0.6,
        valid_balanced_accuracy=0.6,
        valid_f1=0.6,
        confusion=[[3, 1], [1, 3]],
        lr=0.001,
        seconds=1.0,
        images_per_s=10.0,
    )
    with db.begin() as session:
        jobs.record_epoch(session, job_id, record)
        jobs.record_epoch(session, job_id, record.model_copy(update={"train_loss": 0.5}))  # the same epoch re-reported
        jobs.record_epoch(session, job_id, record.model_copy(update={"epoch": 2, "valid_accuracy": 0.55}))
    with db.begin() as session:
        rows = jobs.epoch_metrics(session, job_id)
        assert [(r.epoch, r.train_loss) for r in rows] == [(1, 0.5), (2, 0.7)]
        assert rows[0].confusion == [[3, 1], [1, 3]]
        assert jobs.get_job(session, job_id).best_valid_accuracy == 0.6
        assert session.scalar(select(EpochMetric.id).where(EpochMetric.job_id == job_id, EpochMetric.epoch == 3)) is None


def test_an_epoch_row_has_exactly_the_fields_of_an_epoch_record():
    """EpochRecord is the one shape of an epoch: the table stores it whole, the API answers it as it is."""
    columns = [column.name for column in EpochMetric.__table__.columns]
    assert columns == ["id", "job_id", *EpochRecord.model_fields]


def test_artifacts_are_recorded_with_size_and_hash(db, service_backend):

    job_id = new_job(db)
    run_folder = get_settings().resolved_artifacts_dir / "jobs" / str(job_id)
    run_folder.mkdir(parents=True)
    (run_folder / "metrics.csv").write_text("epoch,loss\n1,0.5\n")
    with db.begin() as session:
        jobs.add_artifact(session, job_id, "metrics", run_folder / "metrics.csv")
        jobs.add_artifact(session, job_id, "metrics", run_folder / "metrics.csv")
        artifact, path = jobs.artifact_path(session, job_id, "metrics.csv")
        assert (artifact.path, artifact.size_bytes, len(artifact.sha256)) == (f"jobs/{job_id}/metrics.csv", 17, 64)
        assert path.read_text().startswith("epoch")
        with pytest.raises(UserInputError, match="has no artifact 'x.pt'"):
            jobs.artifact_path(session, job_id, "x.pt")
        # a job with a checkpoint artifact may be a parent even before it finished
        (run_folder / "last.pt").write_bytes(b"weights")
        jobs.add_artifact(session, job_id, "checkpoint", run_folder / "last.pt")
        child = jobs.create_job(session, jobs.JobRequest(kind="evaluate", params={"data_dir": "/d"}, parent_id=job_id))
        assert child.parent_id == job_id


def test_queue_position_and_live_queues(db):
    with db.begin() as session:
        first = jobs.create_job(session, jobs.JobRequest(kind="train", params=TRAIN, queue="q-pos"))
        second = jobs.create_job(session, jobs.JobRequest(kind="train", params=TRAIN, queue="q-pos"))
        other = jobs.create_job(
            session, jobs.JobRequest(kind="evaluate", params={"data_dir": "/d", "checkpoint": "c.pt"}, queue="q-other")
        )
        assert [jobs.queue_position(session, j) for j in (first, second, other)] == [1, 2, 1]
        jobs.register_worker(session, hostname="w-live", queues=["q-pos", "cpu"], gpu="0", pid=1)
        jobs.register_worker(session, hostname="w-dead", queues=["q-other"], gpu=None, pid=2)
        session.execute(
            update(WorkerRecord).where(WorkerRecord.hostname == "w-dead").values(last_seen=utcnow() - timedelta(hours=1))
        )
    with db.begin() as session:
        live = jobs.live_queues(session)
        assert {"q-pos", "cpu"} <= live and "q-other" not in live
        jobs.claim_job(session, first.id, owner="w", host="h")
        assert jobs.queue_position(session, jobs.get_job(session, second.id)) == 1
        jobs.unregister_worker(session, "w-live")
        jobs.unregister_worker(session, "w-dead")


def test_release_on_shutdown_requeues_unless_a_cancel_came_meanwhile(db):
    plain, cancelled = new_job(db), new_job(db)
    with db.begin() as session:
        for job_id in (plain, cancelled):
            jobs.claim_job(session, job_id, owner="w", host="h")
        jobs.request_cancel(session, cancelled)  # before any heartbeat saw it, the worker stops
        assert jobs.release_job(session, plain, "w") == "queued"
        assert jobs.release_job(session, cancelled, "w") == "cancelled"
        assert jobs.release_job(session, plain, "w") is None  # no longer ours
    with db.begin() as session:
        released, ended = jobs.get_job(session, plain), jobs.get_job(session, cancelled)
        assert (released.status, released.attempts, released.lease_owner) == ("queued", 0, None)
        assert (ended.status, ended.finished_at is not None) == ("cancelled", True)


def test_a_sweep_sent_to_an_unreachable_broker_fails_every_job_with_the_reason(db):
    from tests.settings_override import overridden_settings
    from worker import dispatch

    with overridden_settings(BROKER_URL="redis://127.0.0.1:1/0"):  # nothing listens on port 1
        with pytest.raises(BrokerUnavailable, match="could not send job") as raised:
            request = jobs.SweepRequest(kind="train", base_params=TRAIN, grid={"lr": ["0.001", "0.002", "0.003"]})
            dispatch.submit(request, actor=cli_actor(), origin=jobs.Origin.CLI, settings=get_settings())
        assert not isinstance(raised.value, UserInputError)  # not the user's fault: the API answers 503
    with db.begin() as session:
        sweep_id = max(session.scalars(select(Job.sweep_id).where(Job.sweep_id.is_not(None))))
        swept, total = jobs.list_jobs(session, sweep_id=sweep_id)
        # Not one left "queued" with no message: each send was tried and each failure recorded.
        assert total == 3 and all(j.status == "failed" and "could not send" in j.error for j in swept)
        assert all(j.finished_at is not None for j in swept)


def test_submit_stores_absolute_paths(db, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from leukemia.cli import main

    monkeypatch.chdir(tmp_path)  # the worker will run in another folder than this shell
    result = CliRunner().invoke(main, ["submit", "train", "--data", "lab", "--queue", "nobody-serves-this"])
    assert result.exit_code == 0, result.output
    job_id = int(result.output.split()[1])
    with db.begin() as session:
        job = jobs.get_job(session, job_id)
        assert job.params["data_dir"] == str(tmp_path / "lab")
        jobs.request_cancel(session, job_id)


def test_sweep_size_is_bounded(db):
    grid = {"lr": [str(0.001 * (i + 1)) for i in range(101)], "seed": [str(i) for i in range(10)]}
    with pytest.raises(UserInputError, match=r"grid: 1010 jobs; at most 1000 per sweep \(MAX_SWEEP_JOBS\)"):
        with db.begin() as session:
            jobs.create_sweep(session, jobs.SweepRequest(kind="train", base_params=TRAIN, grid=grid))


def test_sweep_makes_one_job_per_point_and_validates_all_first(db):
    grid = jobs.parse_grid(["arch=resnet18,resnet50", "lr=0.001,0.0003"])
    with db.begin() as session:
        sweep, swept = jobs.create_sweep(session, jobs.SweepRequest(kind="train", base_params=TRAIN, grid=grid))
        assert len(swept) == 4 and {(j.params["arch"], j.params["lr"]) for j in swept} == {
            ("resnet18", 0.001),
            ("resnet18", 0.0003),
            ("resnet50", 0.001),
            ("resnet50", 0.0003),
        }
        listed, total = jobs.list_jobs(session, sweep_id=sweep.id)
        assert total == 4 and [j.id for j in listed] == sorted((j.id for j in swept), reverse=True)
    before = None
    with db.begin() as session:
        before = jobs.list_jobs(session)[1]
    with pytest.raises(UserInputError, match="grid point arch=resnet34, lr=0.001: arch"):
        with db.begin() as session:
            jobs.create_sweep(
                session,
                jobs.SweepRequest(kind="train", base_params=TRAIN, grid=jobs.parse_grid(["arch=resnet18,resnet34", "lr=0.001"])),
            )
    with db.begin() as session:
        assert jobs.list_jobs(session)[1] == before  # nothing inserted
    with pytest.raises(UserInputError, match="grid: 'lr' must look like"):
        jobs.parse_grid(["lr"])


def query_plans(session, call) -> list[str]:
    """The database's plan for each SELECT on jobs that call() sends (EXPLAIN of the very statements)."""
    from sqlalchemy import event

    engine = session.get_bind()
    sent: list[tuple[str, object]] = []

    def record(_conn, _cursor, statement, parameters, _context, _many) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "FROM jobs" in statement:
            sent.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        call()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    sqlite = engine.dialect.name == "sqlite"
    if not sqlite:  # fresh statistics; and with only 10,000 rows a scan may rightly win: ask whether the index serves
        session.execute(text("ANALYZE jobs"))
        session.execute(text("SET LOCAL enable_seqscan = off"))
    explain = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN "
    return [
        "\n".join(str(row[-1]) for row in session.connection().exec_driver_sql(explain + statement, parameters))
        for statement, parameters in sent
    ]


def test_list_jobs_pages_ten_thousand_jobs_through_the_indexes(db):
    """Correct pages, and each query read through an index with no sort: the property that keeps the
    list fast. Its time is a benchmark figure (bench/list_bench.py), not an assertion load could fail."""
    params = parse_params("train", TRAIN).model_dump(mode="json")
    with db.begin() as session:
        session.execute(
            Job.__table__.insert(),
            [
                {
                    "kind": "train",
                    "status": ("queued", "failed", "succeeded")[i % 3],
                    "params": params,
                    "data_dir": "/d",
                    "queue": "bulk",
                    "attempts": 0,
                    "max_attempts": 3,
                    "cancel_requested": False,
                    "progress": 0.0,
                    "created_at": utcnow(),
                }
                for i in range(10_000)
            ],
        )
    with db.begin() as session:
        page, total = jobs.list_jobs(session, status="failed", page=3, per_page=50)
        newest, _ = jobs.list_jobs(session, kind="train")
    assert total >= 3333 and len(page) == 50 and all(j.status == "failed" for j in page)
    assert newest[0].id > newest[-1].id
    with db.begin() as session:
        plans = query_plans(session, lambda: jobs.list_jobs(session, status="failed", page=3, per_page=50))
    assert len(plans) == 2, plans  # the count and the page
    for plan in plans:  # read through an index, in id order: no scan of the table, no sort of what matched
        assert "index" in plan.lower() and "sort" not in plan.lower() and "temp b-tree" not in plan.lower(), plan
    with pytest.raises(UserInputError, match="status: 'done' is not one of"):
        with db.begin() as session:
            jobs.list_jobs(session, status="done")
