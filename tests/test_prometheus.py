"""Issue 20, item 3: Prometheus metrics at /metrics, read from the rows at scrape time and never
anonymous, and a worker's own exporter (`leukemia worker --metrics-port`). Scrapes are parsed with
prometheus_client's own text parser."""

from __future__ import annotations

import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from core.engine.progress import EpochRecord
from core.service import jobs, users
from core.service.access import cli_actor
from core.service.db import get_sessionmaker
from core.service.job_options import JobOptions
from core.service.records import Job, WorkerRecord, utcnow
from core.service.settings import get_settings
from tests.conftest import WEB_API_TOKEN
from tests.web_helpers import TRAIN, free_port, synthetic_folder

METRICS_TOKEN = "test-metrics-token"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of a Prometheus text exposition, keyed by (sample name, labels)."""
    return {
        (s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def scrape(client, token: str = METRICS_TOKEN) -> dict[tuple[str, frozenset], float]:
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return samples(response.get_data(as_text=True))


def labels(**values: str) -> frozenset:
    return frozenset(values.items())


@pytest.fixture()
def metrics_app(app, settings_override):
    """The app with METRICS_TOKEN set, as an operator sets it: in the environment the settings read."""
    settings_override(METRICS_TOKEN=METRICS_TOKEN)
    return app


def add_user_token(name: str, role: str) -> str:
    with get_sessionmaker().begin() as session:
        user, _ = users.add_user(session, cli_actor(), name, role, "correct-horse-9")
        _, secret = users.create_token(session, cli_actor(), user, "scraper")
    return secret.value


# --- /metrics ------------------------------------------------------------------------------------


def test_metrics_are_refused_without_the_metrics_or_an_admin_token(metrics_app, client):
    member = add_user_token("bob", "member")
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer wrong"}, 401),
        ({"Authorization": "Basic eDp5"}, 401),
        ({"Authorization": f"Bearer {member}"}, 403),
    ]:
        response = client.get("/metrics", headers=headers)
        assert response.status_code == status, (headers, response.status_code)
        assert "leukemia_" not in response.get_data(as_text=True)
    assert client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 200
    assert client.get("/metrics", headers={"Authorization": f"Bearer {WEB_API_TOKEN}"}).status_code == 200  # the admin's
    admin = add_user_token("ada", "admin")
    assert client.get("/metrics", headers={"Authorization": f"Bearer {admin}"}).status_code == 200


def test_without_a_metrics_token_set_only_admins_may_scrape(app, client):
    assert get_settings().metrics_token == ""
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401  # an empty token is none
    assert client.get("/metrics", headers={"Authorization": f"Bearer {WEB_API_TOKEN}"}).status_code == 200


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_metrics_count_queued_jobs_by_queue_and_priority_and_time_finished_ones(metrics_app, client, tmp_path):
    folder = str(synthetic_folder(tmp_path / "data"))
    with get_sessionmaker().begin() as session:
        urgent = jobs.create_job(
            session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder}, options=JobOptions(priority="high"))
        ).id
        jobs.create_job(
            session,
            jobs.JobRequest(kind="evaluate", params={"data_dir": folder, "checkpoint": str(tmp_path / "x.pt")}, queue="cpu"),
        )
        done = jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder})).id
    with get_sessionmaker().begin() as session:
        # The queue's best job is the urgent one: take it by id, as a worker that was sent it would.
        assert jobs.claim_job(session, done, owner="w", host="h") is not None
        session.get(Job, done).started_at = utcnow() - timedelta(seconds=90)
        jobs.record_epoch(
            session,
            done,
            EpochRecord(
                epoch=1,
                train_loss=0.5,
                train_accuracy=0.5,
                valid_loss=0.6,
                valid_accuracy=0.5,
                valid_balanced_accuracy=0.5,
                valid_f1=0.5,
                confusion=[[1, 1], [1, 1]],
                lr=0.01,
                seconds=12.0,
                images_per_s=40.0,
            ),
        )
    with get_sessionmaker().begin() as session:
        assert jobs.finish_job(session, done, "w", "succeeded")

    found = scrape(client)
    assert found[("leukemia_database_up", labels())] == 1
    assert found[("leukemia_queue_depth", labels(queue="gpu", priority="high"))] == 1
    assert found[("leukemia_queue_depth", labels(queue="gpu", priority="normal"))] == 0
    assert found[("leukemia_queue_depth", labels(queue="cpu", priority="normal"))] == 1
    assert found[("leukemia_jobs", labels(status="queued", kind="train"))] == 1
    assert found[("leukemia_jobs", labels(status="succeeded", kind="train"))] == 1
    assert found[("leukemia_jobs", labels(status="failed", kind="predict"))] == 0
    duration = {"kind": "train", "status": "succeeded"}
    assert found[("leukemia_job_duration_seconds_count", labels(**duration))] == 1
    assert 89 <= found[("leukemia_job_duration_seconds_sum", labels(**duration))] <= 95
    assert found[("leukemia_job_duration_seconds_bucket", labels(**duration, le="60.0"))] == 0
    assert found[("leukemia_job_duration_seconds_bucket", labels(**duration, le="300.0"))] == 1
    assert found[("leukemia_job_duration_seconds_bucket", labels(**duration, le="+Inf"))] == 1
    assert found[("leukemia_epoch_duration_seconds_bucket", labels(kind="train", le="5.0"))] == 0
    assert found[("leukemia_epoch_duration_seconds_bucket", labels(kind="train", le="15.0"))] == 1
    assert found[("leukemia_epoch_duration_seconds_sum", labels(kind="train"))] == 12.0
    assert found[("leukemia_workers", labels(state="live"))] == 0
    assert found[("leukemia_webhook_deliveries", labels(status="failed"))] == 0
    assert urgent != done


def test_metrics_count_workers_and_the_running_jobs_throughput(metrics_app, client, tmp_path):
    folder = str(synthetic_folder(tmp_path / "data"))
    with get_sessionmaker().begin() as session:
        jobs.register_worker(session, hostname="w1@h", queues=["gpu"], gpu="0", pid=1)
        jobs.register_worker(session, hostname="w2@h", queues=["cpu", "special"], gpu=None, pid=2)
        jobs.register_worker(session, hostname="gone@h", queues=["gpu"], gpu=None, pid=3)
        running = jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder})).id
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, running, owner="w1", host="w1@h")
        jobs.heartbeat(session, running, "w1", images_per_s=123.5)
        gone = session.scalar(select(WorkerRecord).where(WorkerRecord.hostname == "gone@h"))
        gone.last_seen = gone.lost_at = utcnow() - timedelta(hours=1)

    found = scrape(client)
    assert found[("leukemia_workers", labels(state="live"))] == 2
    assert found[("leukemia_workers", labels(state="lost"))] == 1
    assert found[("leukemia_queue_workers", labels(queue="gpu"))] == 1
    assert found[("leukemia_queue_workers", labels(queue="special"))] == 1
    assert found[("leukemia_images_per_second", labels(queue="gpu"))] == 123.5
    assert found[("leukemia_jobs", labels(status="running", kind="train"))] == 1


# --- the worker's own exporter -----------------------------------------


def test_a_job_the_worker_runs_is_counted_by_its_exporter_and_timed_from_its_rows(metrics_app, client, tmp_path):
    from worker import metrics as worker_metrics
    from worker.tasks import run_next_job

    folder = str(synthetic_folder(tmp_path / "data"))
    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(
            session,
            jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder, "epochs": 1, "device": "cpu"}, queue="observed"),
        ).id
    before = worker_metrics.JOBS_RUN.labels("train", "succeeded")._value.get()
    port = free_port()
    server = worker_metrics.start_exporter(port, METRICS_TOKEN, host="127.0.0.1")
    try:
        run_next_job(job_id)
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=10)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            exported = samples(response.read().decode())
    finally:
        server.shutdown()
        server.server_close()

    with get_sessionmaker().begin() as session:
        assert session.get(Job, job_id).status == "succeeded"
    assert exported[("leukemia_worker_jobs_total", labels(kind="train", outcome="succeeded"))] == before + 1
    assert exported[("leukemia_worker_epochs_total", labels())] >= 1
    assert exported[("leukemia_worker_current_job_id", labels())] == 0
    assert exported[("leukemia_worker_job_images_per_second", labels())] == 0  # idle again
    assert ("process_resident_memory_bytes", labels()) in exported  # the process's own

    found = scrape(client)  # the web's view of the same run, from the rows
    assert found[("leukemia_job_duration_seconds_count", labels(kind="train", status="succeeded"))] == 1
    assert found[("leukemia_epoch_duration_seconds_count", labels(kind="train"))] == 1


def test_the_worker_exporter_needs_a_token_and_the_solo_pool():
    from click.testing import CliRunner

    from core.common.errors import UserInputError
    from leukemia.cli import main as leukemia_cli
    from worker.metrics import start_exporter

    with pytest.raises(UserInputError, match="METRICS_TOKEN"):
        start_exporter(free_port(), "")
    result = CliRunner().invoke(leukemia_cli, ["worker", "--metrics-port", "9101", "--concurrency", "2"])
    assert result.exit_code == 2 and result.stderr.startswith("error: --metrics-port: needs --concurrency 1"), result.output


# --- counters deletes never lower, running jobs' ages (issue 26) -------------------------------------------


def test_jobs_ended_is_a_counter_that_deleting_jobs_does_not_lower(metrics_app, client, tmp_path):
    """The failed-jobs figure for increase(): counted when a job ends, in the database, so deleting the job
    (or restarting the web, which reads the same rows) never lowers it; every kind and status starts at 0."""
    from core.service.deletion import delete_job

    folder = str(synthetic_folder(tmp_path / "data"))
    with get_sessionmaker().begin() as session:
        failed = jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder})).id
        cancelled = jobs.create_job(
            session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder}, queue="other")
        ).id
        running = jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder}, queue="third")).id
    with get_sessionmaker().begin() as session:
        assert jobs.claim_job(session, failed, owner="w", host="h") is not None
        assert jobs.finish_job(session, failed, "w", "failed", "boom")
        jobs.request_cancel(session, cancelled)
        assert jobs.claim_job(session, running, owner="w2", host="h") is not None
        session.get(Job, running).started_at = utcnow() - timedelta(seconds=100)

    found = scrape(client)
    assert found[("leukemia_jobs_ended_total", labels(kind="train", status="failed"))] == 1
    assert found[("leukemia_jobs_ended_total", labels(kind="train", status="cancelled"))] == 1
    assert found[("leukemia_jobs_ended_total", labels(kind="predict", status="succeeded"))] == 0
    assert found[("leukemia_workers_lost_total", labels())] == 0
    age = found[("leukemia_running_job_age_seconds", labels(job_id=str(running), kind="train", queue="third"))]
    assert 99 <= age <= 130
    assert not any(name == "leukemia_running_job_age_seconds" and dict(key).get("job_id") == str(failed) for name, key in found)

    with get_sessionmaker().begin() as session:
        delete_job(session, failed, actor=cli_actor())
    found = scrape(client)
    assert found[("leukemia_jobs", labels(status="failed", kind="train"))] == 0  # the rows' gauge drops
    assert found[("leukemia_jobs_ended_total", labels(kind="train", status="failed"))] == 1  # the counter does not


def test_gpu_metrics_are_absent_without_a_gpu_and_the_exporter_works():
    """This machine has no NVML library and no GPU: read_gpus() is [] (no error), the exporter serves its
    other families and no leukemia_gpu_ family at all (no zeros that would look like an idle GPU)."""
    from prometheus_client import generate_latest

    from worker import metrics as worker_metrics

    assert worker_metrics.read_gpus() == [] and worker_metrics.read_gpus([0]) == []
    assert worker_metrics.job_gpu("auto") is None and worker_metrics.job_gpu("cuda:1") is None
    exported = samples(generate_latest(worker_metrics.REGISTRY).decode())
    assert ("leukemia_worker_current_job_id", labels()) in exported
    assert ("leukemia_worker_job_images_per_second", labels()) in exported
    assert not [name for name, _ in exported if name.startswith("leukemia_gpu_") or name == "leukemia_worker_job_gpu"]


# An H100's NVML reading as nvidia-smi would show it, and a second device that reports no power draw
# (NVML answers NotSupported for some values on some devices).
H100 = dict(
    index=0,
    name="NVIDIA H100 80GB HBM3",
    uuid="GPU-5d3e1c1a-7f2b-4c1e-9d7e-2a3b4c5d6e7f",
    utilization=0.97,
    memory_used_bytes=31_457_280_000,
    memory_total_bytes=85_520_809_984,
    temperature_celsius=61.0,
    power_watts=512.3,
)


def test_gpu_readings_become_one_sample_per_device_and_value():
    from prometheus_client import CollectorRegistry, generate_latest

    from worker.metrics import GpuCollector, GpuReading

    readings = [
        GpuReading(**H100),
        GpuReading(**{**H100, "index": 3, "uuid": "GPU-other", "power_watts": None, "utilization": 0.0}),
    ]
    registry = CollectorRegistry()
    registry.register(GpuCollector(lambda: readings))
    exported = samples(generate_latest(registry).decode())
    assert exported[("leukemia_gpu_utilization_ratio", labels(gpu="0"))] == 0.97
    assert exported[("leukemia_gpu_utilization_ratio", labels(gpu="3"))] == 0.0
    assert exported[("leukemia_gpu_memory_used_bytes", labels(gpu="0"))] == 31_457_280_000
    assert exported[("leukemia_gpu_memory_total_bytes", labels(gpu="3"))] == 85_520_809_984
    assert exported[("leukemia_gpu_temperature_celsius", labels(gpu="0"))] == 61.0
    assert exported[("leukemia_gpu_power_watts", labels(gpu="0"))] == 512.3
    assert ("leukemia_gpu_power_watts", labels(gpu="3")) not in exported  # not reported: no sample, not a 0
    assert exported[("leukemia_gpu_info", labels(gpu="0", name=H100["name"], uuid=H100["uuid"]))] == 1
    assert {key for key in exported if key[0].startswith("leukemia_gpu_")} == {
        *(
            (name, labels(gpu=gpu))
            for name in (
                "leukemia_gpu_utilization_ratio",
                "leukemia_gpu_memory_used_bytes",
                "leukemia_gpu_memory_total_bytes",
                "leukemia_gpu_temperature_celsius",
            )
            for gpu in ("0", "3")
        ),
        ("leukemia_gpu_power_watts", labels(gpu="0")),
        ("leukemia_gpu_info", labels(gpu="0", name=H100["name"], uuid=H100["uuid"])),
        ("leukemia_gpu_info", labels(gpu="3", name=H100["name"], uuid="GPU-other")),
    }


def test_the_worker_exporter_listens_on_loopback_unless_told_otherwise(settings_override):
    from worker.metrics import start_exporter

    assert get_settings().worker_metrics_address == "127.0.0.1"
    server = start_exporter(free_port(), METRICS_TOKEN)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()
    settings_override(WORKER_METRICS_ADDRESS="0.0.0.0")
    assert get_settings().worker_metrics_address == "0.0.0.0"
