"""Issue 20, item 3: LOG_FORMAT=json gives one JSON object per line, and each line carries what it was
logged for: the job id on a worker's lines while it runs a job, the request id on the web's lines
while it handles a request (the caller's X-Request-ID when plausible, returned in the answer)."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.records import Job
from tests import polling
from tests.conftest import REPO, WEB_API_TOKEN
from tests.web_helpers import TRAIN, synthetic_folder

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}


@pytest.fixture()
def json_logs(settings_override):
    """LOG_FORMAT=json, the service's handler writing into a buffer; yields a reader of its lines as dicts."""
    from core.service.logs import configure_logging

    settings_override(LOG_FORMAT="json")
    buffer = io.StringIO()
    handler = configure_logging(stream=buffer)
    yield lambda: [json.loads(line) for line in buffer.getvalue().splitlines()]
    logging.getLogger().removeHandler(handler)


def test_every_line_a_job_logs_in_the_worker_carries_its_id(app, tmp_path, json_logs):
    from worker.tasks import run_next_job

    folder = str(synthetic_folder(tmp_path / "data"))
    with get_sessionmaker().begin() as session:  # committed as dispatch.submit_job does; run here as a worker would
        job_id = jobs.create_job(
            session,
            jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder, "epochs": 1, "device": "cpu"}, queue="logged"),
        ).id
    logging.getLogger("leukemia.test").info("before the job")
    run_next_job(job_id)
    logging.getLogger("leukemia.test").info("after the job")

    with get_sessionmaker().begin() as session:
        assert session.get(Job, job_id).status == "succeeded"
    lines = json_logs()
    assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"]) for line in lines)
    start = next(i for i, line in enumerate(lines) if line["message"].startswith(f"job {job_id} (train) claimed"))
    end = next(i for i, line in enumerate(lines) if line["message"] == f"job {job_id} succeeded")
    during = lines[start : end + 1]
    assert any(line["logger"] == "leukemia.worker" and "epoch 1" in line["message"] for line in during)
    assert [line for line in during if line.get("job_id") != job_id] == []
    assert [line.get("job_id") for line in lines if line["logger"] == "leukemia.test"] == [None, None]  # only the job's


def test_a_requests_lines_carry_its_request_id(app, client, json_logs):
    @app.get("/api/boom")
    def boom():
        raise RuntimeError("bug")

    response = client.get("/api/boom", headers={**AUTH, "X-Request-ID": "req-42.a:b"})
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "req-42.a:b"
    mine = [line for line in json_logs() if line.get("request_id") == "req-42.a:b"]
    assert [line["logger"] for line in mine] == ["web", "leukemia.web.access"]  # the view's error, the access line
    assert "RuntimeError: bug" in mine[0]["exception"]
    assert re.fullmatch(r"GET /api/boom 500 \d+ ms", mine[1]["message"]), mine[1]

    generated = set()
    for implausible in ("a forged; line", "x" * 129, ""):  # replaced by an id of the service's own
        made = client.get("/api/jobs", headers={**AUTH, "X-Request-ID": implausible})
        generated.add(made.headers["X-Request-ID"])
        assert len(made.headers["X-Request-ID"]) == 32 and made.headers["X-Request-ID"].isalnum()
        assert [
            line["message"].split()[:3] for line in json_logs() if line.get("request_id") == made.headers["X-Request-ID"]
        ] == [["GET", "/api/jobs", "200"]]
    assert len(generated) == 3
    assert all("request_id" in line for line in json_logs() if line["logger"] == "leukemia.web.access")


def test_text_lines_carry_the_context_too(settings_override):
    from core.service.logs import configure_logging, log_context

    settings_override(LOG_FORMAT="text")
    buffer = io.StringIO()
    handler = configure_logging(stream=buffer)
    try:
        with log_context(job_id=7):
            logging.getLogger("leukemia.worker").warning("disk %s", "full")
        logging.getLogger("leukemia.worker").warning("idle")
    finally:
        logging.getLogger().removeHandler(handler)
    first, second = buffer.getvalue().splitlines()
    assert first.endswith(" WARNING leukemia.worker: [job_id=7] disk full") and second.endswith(" WARNING leukemia.worker: idle")


def test_the_heartbeat_thread_logs_with_its_jobs_id(app, json_logs, settings_override):
    """The job's heartbeat runs in its own thread, which does not inherit a contextvar: it copies the
    job's context when it is made, so its lines (a failed beat here) carry the job id as well."""
    import time

    from core.service.logs import log_context
    from core.service.settings import get_settings
    from worker.job_progress import Heartbeat, JobObserver, LogTail

    settings_override(HEARTBEAT_SECONDS="0.05")
    observer = JobObserver(4242, default_retention="all")
    observer.progress = {"not_a_progress_field": 1}  # the job service refuses it: every beat fails and is logged
    with log_context(job_id=4242):
        heartbeat = Heartbeat(4242, "owner", observer, LogTail(), get_settings().heartbeat_seconds)
    heartbeat.start()  # outside the context: the thread still has the job's
    deadline = time.monotonic() + 20
    while not any(line["message"] == "job 4242 heartbeat failed" for line in json_logs()) and time.monotonic() < deadline:
        time.sleep(0.05)
    heartbeat.done.set()
    heartbeat.join()
    failed = [line for line in json_logs() if line["message"] == "job 4242 heartbeat failed"]
    assert failed and all(line["job_id"] == 4242 and "unknown fields" in line["exception"] for line in failed)


# --- real processes, from start to stop (issue 26, item 3) --------------------------------------------


def json_lines(path) -> list[dict]:
    """Every line of a process's whole stdout+stderr as a JSON object; fails naming the first line that is not one."""
    lines = path.read_text().splitlines()
    parsed = []
    for number, line in enumerate(lines, 1):
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"{path.name} line {number} is not one JSON object: {line!r}")
        assert isinstance(parsed[-1], dict) and {"time", "level", "logger", "message"} <= set(parsed[-1]), line
    if shutil.which("jq"):  # what an operator runs over the log
        done = subprocess.run(["jq", "-c", "."], stdin=path.open("rb"), capture_output=True, check=False)
        assert done.returncode == 0 and len(done.stdout.splitlines()) == len(lines), done.stderr
    return parsed


@pytest.mark.parametrize("service_backend", ["embedded"], indirect=True)
def test_real_worker_and_web_processes_write_only_json_lines_from_start_to_stop(service_backend, tmp_path):
    """LOG_FORMAT=json: `leukemia worker`, `leukemia web` and gunicorn as compose runs it, each from its
    start to its SIGTERM, through real jobs. A job left running by a lost worker and a queued job wait before
    the worker starts: its reaper's and its re-send's lines come before Celery's setup, in JSON too, with their
    time and level. Every worker line names the worker; every line about a job, the job and the Celery task."""
    import signal
    from datetime import timedelta

    import yaml

    from core.service.records import utcnow
    from tests.web_helpers import free_port

    data = synthetic_folder(tmp_path / "data")
    queue, hostname = "json-logs", "json-worker@test"
    params = {**TRAIN, "data_dir": str(data), "epochs": 1, "device": "cpu"}
    with get_sessionmaker().begin() as session:
        lost = jobs.create_job(session, jobs.JobRequest(kind="train", params=params, queue=queue)).id
        waiting = jobs.create_job(session, jobs.JobRequest(kind="train", params=params, queue=queue)).id
    with get_sessionmaker().begin() as session:  # taken by a worker that died: stale, its worker gone
        jobs.claim_job(session, lost, owner="gone@test:x", host="gone@test")
        session.get(Job, lost).heartbeat_at = utcnow() - timedelta(minutes=5)
    env = {
        **os.environ,
        **service_backend["env"],
        "LOG_FORMAT": "json",
        "API_TOKEN": WEB_API_TOKEN,
        "SECRET_KEY": "k" * 32,
        "ADMIN_PASSWORD": "correct-horse-9",
        "DATA_ROOTS": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "HOME": str(tmp_path),
    }  # HOME: gunicorn's control socket
    web_port, gunicorn_port = free_port(), free_port()
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["web"]["command"]
    gunicorn = [
        str(Path(sys.executable).parent / "gunicorn"),
        *[part.replace("0.0.0.0:8000", f"127.0.0.1:{gunicorn_port}") for part in compose[1:]],
    ]
    gunicorn[gunicorn.index("--workers") + 1] = "1"
    commands = {
        "worker": [sys.executable, "-m", "leukemia.cli", "worker", "--queues", queue, "--hostname", hostname],
        "web": [sys.executable, "-m", "leukemia.cli", "web", "--port", str(web_port)],
        "gunicorn": gunicorn,
    }
    processes = {}
    try:
        for name, command in commands.items():
            with (tmp_path / f"{name}.log").open("wb") as log_file:
                processes[name] = subprocess.Popen(
                    command, env=env, cwd=REPO, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
                )

        def finished() -> bool:
            for process in processes.values():
                assert process.poll() is None, "\n".join((tmp_path / f"{n}.log").read_text()[-2000:] for n in processes)
            with get_sessionmaker().begin() as session:
                return all(session.get(Job, job_id).status == "succeeded" for job_id in (lost, waiting))

        polling.wait_for(
            finished, 240, "both jobs to succeed", interval=0.5, describe=lambda: (tmp_path / "worker.log").read_text()[-3000:]
        )
        for port in (web_port, gunicorn_port):
            answer = polling.wait_for(
                lambda port=port: http_status(f"http://127.0.0.1:{port}/api/jobs/{lost}"), 60, f"the web app on port {port}"
            )
            assert answer == 200
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    worker = json_lines(tmp_path / "worker.log")
    assert all(line.get("worker") == hostname for line in worker)
    messages = [line["message"] for line in worker]
    # The shared test database may hold other tests' stale jobs, which the reaper requeues too: the lines
    # that name ours are counted, and every requeue line is a warning of the worker's logger.
    requeued = [line for line in worker if line["message"].startswith("requeued jobs whose worker was lost: [")]
    assert {(line["level"], line["logger"]) for line in requeued} == {("WARNING", "leukemia.worker")}, messages
    naming_lost = [line for line in requeued if lost in json.loads(line["message"].split(": ", 1)[1])]
    assert len(naming_lost) == 1, messages
    assert any(m.startswith("sent waiting jobs again at start") and str(waiting) in m for m in messages), messages
    assert any(m.endswith(" ready.") for m in messages) and any("warm shutdown" in m.lower() for m in messages), messages
    for job_id in (lost, waiting):
        about = [line for line in worker if line.get("job_id") == job_id]
        assert any(line["message"] == f"job {job_id} succeeded" for line in about), about
        assert all(line.get("task_id") for line in about), [line for line in about if not line.get("task_id")]
    # Celery's own task lines carry the task id, and the job id of their message.
    received = [line for line in worker if line["logger"].startswith("celery") and "received" in line["message"]]
    assert len(received) == 2 and all(line["task_id"] in line["message"] for line in received), received
    assert {line["message_job_id"] for line in received} == {lost, waiting}, received

    web = json_lines(tmp_path / "web.log")
    assert any(line["logger"] == "leukemia.web.access" and f"/api/jobs/{lost} 200" in line["message"] for line in web)
    served = json_lines(tmp_path / "gunicorn.log")
    assert any(line["logger"] == "gunicorn.error" and line["message"].startswith("Starting gunicorn") for line in served)
    assert any(line["logger"] == "gunicorn.error" and "Shutting down" in line["message"] for line in served), served


def http_status(url: str) -> int | None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, headers=AUTH)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


@pytest.fixture()
def text_logs(settings_override):
    """LOG_FORMAT=text, the service's handler writing into a buffer; yields a reader of its text."""
    from core.service.logs import configure_logging

    settings_override(LOG_FORMAT="text")
    buffer = io.StringIO()
    handler = configure_logging(stream=buffer)
    yield buffer.getvalue
    logging.getLogger().removeHandler(handler)


FORGED = "\n2026-12-06 00:00:00,000 INFO leukemia.web: FORGED admin logged in"


def test_a_text_line_cannot_be_forged_by_what_it_logs(app, client, text_logs):
    """Control characters in a logged value (the path of a request here, a message's arguments, a context
    field) are written escaped: one call writes one line, and no line starts as a record the caller made up."""
    from core.service.logs import log_context

    answer = client.get("/api/jobs/1%0A2026-12-06 00:00:00,000 INFO leukemia.web: FORGED admin logged in", headers=AUTH)
    assert answer.status_code == 404
    with log_context(job_id="7\r\n[job_id=8]"):
        logging.getLogger("leukemia.test").warning("name %s", f"a{FORGED}\rb\x85c\u2028d\u2029e\x1b[31mf\x00g\th")
    lines = text_logs().splitlines()
    assert not [line for line in lines if line.startswith(FORGED.lstrip())], lines
    [access] = [line for line in lines if "leukemia.web.access" in line and "FORGED" in line]
    assert "/api/jobs/1\\n2026-12-06 00:00:00,000 INFO leukemia.web: FORGED admin logged in 404" in access
    [warned] = [line for line in lines if "leukemia.test" in line]
    assert warned.endswith(
        " WARNING leukemia.test: [job_id=7\\r\\n[job_id=8]] name a\\n2026-12-06 00:00:00,000 INFO "
        "leukemia.web: FORGED admin logged in\\rb\\x85c\\u2028d\\u2029e\\x1b[31mf\\x00g\\th"
    )
    assert sum("FORGED" in line for line in lines) == 2 and text_logs().count("\n") == len(lines)


def test_a_traceback_in_a_text_line_follows_it_indented(text_logs):
    """A traceback keeps its lines (a person reads it), each indented, so none of them starts like a record,
    whatever the exception's message holds."""
    try:
        raise ValueError(f"bad{FORGED}")
    except ValueError:
        logging.getLogger("leukemia.test").exception("failed %s", "x\ny")
    first, *rest = text_logs().splitlines()
    assert first.endswith(" ERROR leukemia.test: failed x\\ny")
    assert rest and all(line.startswith("  ") for line in rest), rest
    assert rest[-2:] == ["  ValueError: bad", "  2026-12-06 00:00:00,000 INFO leukemia.web: FORGED admin logged in"]
