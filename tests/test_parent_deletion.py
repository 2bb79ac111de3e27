"""Deleting a parent job while children name it: a delete racing a finetune submit is one line (never a
500 from the foreign key), whichever commits first, on SQLite and PostgreSQL; a failed child whose
parent was deleted is refused a retry instead of being queued to fail."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import text

from core.service import deletion, jobs
from core.service.access import cli_actor
from core.service.db import get_sessionmaker
from tests.conftest import WEB_API_TOKEN
from tests.web_helpers import finished_train_job

ADMIN = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
FINETUNE = {"epochs": 1, "batch_size": 4, "device": "cpu"}


def wait_until_waiting_on_a_lock(seconds: float = 20) -> None:
    """Until a request of the other thread waits on a row lock of this test's database (PostgreSQL); SQLite
    has no such view: its writer waits on the database lock (BEGIN IMMEDIATE), so a pause lets it get there."""
    with get_sessionmaker().begin() as session:
        if session.get_bind().dialect.name != "postgresql":
            time.sleep(1)
            return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with get_sessionmaker().begin() as session:
            waiting = session.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
            )
        if waiting:
            return
        time.sleep(0.05)
    raise TimeoutError("the other request never waited on a lock")


def refusal(response, status: int) -> dict:
    """A refusal answers its one line (and field) with its status (400 bad input, 409 the state), never a 500."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert "\n" not in response.json["error"]
    return response.json


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_a_delete_racing_a_finetune_submit_answers_one_line(app, folder_path):
    parent = finished_train_job(folder_path)
    with ThreadPoolExecutor(1) as other:
        # A finetune of the parent is being submitted (its row written, not yet committed) when the delete comes:
        # the delete waits, then sees the queued child and refuses.
        with get_sessionmaker().begin() as session:
            child = jobs.create_job(
                session, jobs.JobRequest(kind="finetune", params={**FINETUNE, "data_dir": folder_path}, parent_id=parent)
            ).id
            answer = other.submit(app.test_client().delete, f"/api/jobs/{parent}", headers=ADMIN)
            wait_until_waiting_on_a_lock()
        assert refusal(answer.result(timeout=60), 409)["error"] == (
            f"job {parent}: queued or running job {child} need its checkpoint; wait for them or cancel them first"
        )
        with get_sessionmaker().begin() as session:
            assert jobs.get_job(session, child).parent_id == parent

        # The other way round: the delete is under way when a finetune of that parent is submitted.
        with get_sessionmaker().begin() as session:
            jobs.request_cancel(session, child)
        with get_sessionmaker().begin() as session:
            deletion.delete_job(session, parent, actor=cli_actor())
            answer = other.submit(
                app.test_client().post,
                "/api/jobs",
                headers=ADMIN,
                json={"kind": "finetune", "params": {**FINETUNE, "data_dir": folder_path}, "parent_id": parent},
            )
            wait_until_waiting_on_a_lock()
        assert refusal(answer.result(timeout=60), 400) == {"error": f"parent: job {parent} not found", "field": "parent_id"}
    with get_sessionmaker().begin() as session:
        assert jobs.list_jobs(session)[1] == 1  # the cancelled child only: the refused submit left no row


def test_a_child_of_a_deleted_parent_is_refused_a_retry(client, folder_path):
    parent = finished_train_job(folder_path)
    with get_sessionmaker().begin() as session:
        child = jobs.create_job(
            session, jobs.JobRequest(kind="finetune", params={**FINETUNE, "data_dir": folder_path}, parent_id=parent)
        ).id
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, child, owner="test-worker", host="test-host")
        jobs.finish_job(session, child, "test-worker", "failed", "out of memory")
    assert client.delete(f"/api/jobs/{parent}", headers=ADMIN).status_code == 200  # a finished child keeps its results
    assert refusal(client.post(f"/api/jobs/{child}/retry", headers=ADMIN), 409)["error"] == (
        f"job {child}: its parent job was deleted, so there is no model to finetune; submit a new finetune job from another model"
    )
    assert client.get(f"/api/jobs/{child}", headers=ADMIN).json["status"] == "failed"
