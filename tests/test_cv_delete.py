"""Deleting a cross-validation (issue 20): its fold and ensemble jobs' files measured then removed, its
rows, an audit row with the bytes freed; the owner or an admin; refused in one line while one of its
jobs is queued or running. Through the API, the CLI (`leukemia delete --cv`) and its page, where a
refusal is flashed in the error style."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from core.engine.progress import EpochRecord
from core.engine.run_folder.resolver import claim_run_folder
from core.service import deletion, jobs
from core.service.access import cli_actor
from core.service.cv_jobs import create_ensemble_job
from core.service.db import get_sessionmaker
from core.service.records import AuditEntry, CrossValidation, Job
from core.service.run_folders import job_run_folder
from core.service.settings import get_settings
from leukemia.cli import main as leukemia_cli
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.test_retention import add_user, row
from tests.web_helpers import TRAIN, csrf_token, login

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
EPOCH = EpochRecord(
    epoch=1,
    train_loss=0.5,
    train_accuracy=0.5,
    valid_loss=0.6,
    valid_accuracy=0.75,
    valid_balanced_accuracy=0.7,
    valid_f1=0.72,
    confusion=[[1, 1], [0, 2]],
    lr=0.001,
    seconds=1.0,
    images_per_s=10.0,
)


def ended_job(
    kind: str,
    params: dict,
    files: dict[str, int],
    *,
    owner: int | None = None,
    parent_id: int | None = None,
    cv: tuple[int, int | None] | None = None,
    status: str = "succeeded",
) -> int:
    """A job through the job service: claimed, its files written in its run folder and recorded, ended;
    cv: (cv_id, fold) for a fold, (cv_id, None) for an ensemble."""
    with get_sessionmaker().begin() as session:
        job = jobs.create_job(session, jobs.JobRequest(kind=kind, params=params, parent_id=parent_id), submitted_by=owner)
        if cv is not None:
            job.cv_id, job.cv_fold = cv
        job_id, run_key, run_folder = job.id, job.run_key, job_run_folder(job)
    claim_run_folder(run_folder, run_key)
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, job_id, owner="w", host="h")
        if kind == "train":
            jobs.record_epoch(session, job_id, EPOCH)
        for name, size in files.items():
            (run_folder / name).write_bytes(os.urandom(size))
            jobs.add_artifact(session, job_id, "checkpoint" if name.endswith(".pt") else "metrics", run_folder / name)
        jobs.finish_job(session, job_id, "w", status)
    return job_id


def finished_cv(
    data_dir: str, *, owner: int | None = None, folds: int = 2, ensemble: bool = True, failed: tuple[int, ...] = ()
) -> tuple[int, list[int]]:
    """A cross-validation row with `folds` finished fold jobs (best.pt 1000 B, last.pt 200 B; those in `failed`
    failed, so that they can be retried) and, with ensemble, one finished evaluate ensemble of their models
    (evaluation.json 300 B); returns its id and its job ids."""
    with get_sessionmaker().begin() as session:
        cv = CrossValidation(name="cv under test", data_dir=data_dir, scheme=f"{folds} folds", base_params=TRAIN, folds=[])
        session.add(cv)
        session.flush()
        cv_id = cv.id
    ids = [
        ended_job(
            "train",
            {**TRAIN, "data_dir": data_dir},
            {"best.pt": 1000, "last.pt": 200},
            owner=owner,
            cv=(cv_id, fold),
            status="failed" if fold in failed else "succeeded",
        )
        for fold in range(folds)
    ]
    if ensemble:
        with get_sessionmaker().begin() as session:
            best = [str(jobs.job_checkpoint(session, job_id, "best")) for job_id in ids]
        ids.append(
            ended_job(
                "evaluate",
                {"data_dir": data_dir, "csv": "test.csv", "checkpoint": best[0], "checkpoints": best[1:]},
                {"evaluation.json": 300},
                owner=owner,
                cv=(cv_id, None),
            )
        )
    return cv_id, ids


def on_disk(job_ids: list[int]) -> int:
    """The bytes of the files in these jobs' run folders (links not followed), as a delete must report them."""
    total = 0
    for job_id in job_ids:
        folder = job_run_folder(row(job_id))
        total += sum(p.lstat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    return total


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(leukemia_cli, list(args))
    return result.exit_code, result.output


def requeue(job_id: int) -> None:
    """A failed job queued again (a retry): its cross-validation is running again."""
    with get_sessionmaker().begin() as session:
        jobs.retry_job(session, job_id, get_settings())


def cancel(job_id: int) -> None:
    with get_sessionmaker().begin() as session:
        jobs.request_cancel(session, job_id)


def test_the_api_deletes_a_finished_cross_validation_and_refuses_a_running_one(client, folder_path):
    cv_id, ids = finished_cv(folder_path, failed=(1,))
    folds, ensemble = ids[:2], ids[2]
    outside = ended_job(
        "evaluate", {"data_dir": folder_path, "csv": "test.csv"}, {"evaluation.json": 50}, parent_id=folds[0]
    )  # started from a fold's model, not part of the cross-validation
    requeue(folds[1])
    refused = client.delete(f"/api/cross-validations/{cv_id}", headers=AUTH)
    assert refused.status_code == 409, refused.json
    assert refused.json["error"] == (
        f"cross-validation {cv_id} is still running: job {folds[1]} (fold 1, queued); cancel them or wait for them first"
    )
    assert all(row(job_id) is not None for job_id in ids)

    cancel(folds[1])
    freed = on_disk(ids)
    assert freed == 2 * (1000 + 200 + 33) + 300 + 33  # and each run folder's .run_key stamp
    folders = [job_run_folder(row(job_id)) for job_id in ids]
    response = client.delete(f"/api/cross-validations/{cv_id}", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json == {"job_ids": ids, "sweep_id": None, "cv_id": cv_id, "freed_bytes": freed}
    assert not any(folder.exists() for folder in folders) and all(row(job_id) is None for job_id in ids)
    assert row(outside) is not None and row(outside).parent_id is None  # it keeps its own results
    with get_sessionmaker().begin() as session:
        assert session.get(CrossValidation, cv_id) is None
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "cross_validation.delete")).one()
        assert (entry.target_type, entry.target_id, entry.username) == ("cross_validation", str(cv_id), WEB_ADMIN[0])
        assert entry.detail == {"freed_bytes": freed, "jobs": ids, "name": "cv under test"}
    assert client.get(f"/api/cross-validations/{cv_id}", headers=AUTH).status_code == 404
    assert client.delete(f"/api/cross-validations/{cv_id}", headers=AUTH).status_code == 404
    assert client.delete("/api/cross-validations/99999999999", headers=AUTH).status_code == 404
    assert client.delete(f"/api/cross-validations/{ensemble}").status_code == 401  # a write needs the token
    assert "delete" in client.get("/api/openapi.json").json["paths"]["/api/cross-validations/{cv_id}"]


def test_a_live_job_reading_a_folds_checkpoint_keeps_the_cross_validation(client, folder_path):
    cv_id, ids = finished_cv(folder_path, ensemble=False)
    with get_sessionmaker().begin() as session:
        child = jobs.create_job(
            session, jobs.JobRequest(kind="finetune", params={**TRAIN, "data_dir": folder_path}, parent_id=ids[0])
        ).id
    refused = client.delete(f"/api/cross-validations/{cv_id}", headers=AUTH)
    assert refused.status_code == 409 and f"queued or running job {child} need its checkpoint" in refused.json["error"]
    assert row(ids[0]) is not None


def test_the_cli_deletes_a_cross_validation(client, folder_path):
    cv_id, ids = finished_cv(folder_path, failed=(0,))
    requeue(ids[0])
    code, output = cli("delete", "--cv", str(cv_id))
    assert code == 2 and output == (
        f"error: cross-validation {cv_id} is still running: job {ids[0]} (fold 0, queued); cancel them or wait for them first\n"
    )
    cancel(ids[0])
    freed = on_disk(ids)
    assert cli("delete", "--cv", str(cv_id)) == (0, f"deleted cross-validation {cv_id} (3 jobs): 2.8 kB ({freed} bytes) freed\n")
    assert all(row(job_id) is None for job_id in ids)
    assert cli("delete", "--cv", str(cv_id)) == (2, f"error: cross-validation {cv_id} not found\n")
    assert cli("delete", "7", "--cv", "3") == (2, "error: job_ids: give job ids, --sweep ID or --cv ID (one of them)\n")
    with get_sessionmaker().begin() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "cross_validation.delete")).one()
        assert entry.username.startswith("cli:") and entry.detail["freed_bytes"] == freed


def test_the_page_deletes_with_a_confirm_and_shows_a_refusal_as_an_error(app, client, folder_path):
    bob = add_user("bob")
    add_user("carol")
    cv_id, ids = finished_cv(folder_path, owner=bob, failed=(1,))
    others = app.test_client()
    assert login(others, "carol", "carol-password").status_code == 302
    page = others.get(f"/cross-validations/{cv_id}").get_data(as_text=True)
    assert 'id="delete-cv"' not in page  # not hers
    refused = others.post(f"/cross-validations/{cv_id}/delete", data={"csrf_token": csrf_token(others, "/")})
    assert refused.status_code == 403 and "only its owner or an admin" in refused.get_data(as_text=True)

    owner = app.test_client()
    assert login(owner, "bob", "bob-password").status_code == 302
    page = owner.get(f"/cross-validations/{cv_id}").get_data(as_text=True)
    assert 'id="delete-cv"' in page
    assert f'data-confirm="Delete cross-validation {cv_id}, its 2 fold jobs and 1 ensemble job(s) and their files?' in page
    token = csrf_token(owner, f"/cross-validations/{cv_id}")

    requeue(ids[1])
    shown = owner.post(f"/cross-validations/{cv_id}/delete", data={"csrf_token": token}, follow_redirects=True)
    text = shown.get_data(as_text=True)
    assert shown.request.path == f"/cross-validations/{cv_id}"
    assert (
        f'<p class="flash flash-error" role="alert">Cross-validation {cv_id} not deleted: cross-validation {cv_id} '
        f"is still running: job {ids[1]} (fold 1, queued); cancel them or wait for them first</p>"
    ) in text

    # A fold job's own Delete is refused the same way, and says what to delete instead.
    fold_page = owner.post(f"/jobs/{ids[0]}/delete", data={"csrf_token": token}, follow_redirects=True).get_data(as_text=True)
    assert (
        f'<p class="flash flash-error" role="alert">Job {ids[0]} not deleted: job {ids[0]} is fold 0 of cross-validation {cv_id}'
    ) in fold_page
    assert f"delete cross-validation {cv_id} to free its folds" in fold_page

    cancel(ids[1])
    freed = on_disk(ids)
    done = owner.post(f"/cross-validations/{cv_id}/delete", data={"csrf_token": token}, follow_redirects=True)
    assert done.request.path == "/cross-validations"
    assert f'<p class="flash" role="status">Deleted cross-validation {cv_id} (3 jobs): 2.8 kB freed.</p>' in done.get_data(
        as_text=True
    )
    assert freed == 2799 and all(row(job_id) is None for job_id in ids)
    assert owner.get(f"/cross-validations/{cv_id}").status_code == 404


def test_an_admin_may_delete_a_members_cross_validation_a_viewer_nothing(app, client, folder_path):
    bob = add_user("bob")
    add_user("vera", role="viewer")
    cv_id, ids = finished_cv(folder_path, owner=bob, ensemble=False)
    watcher = app.test_client()
    assert login(watcher, "vera", "vera-password").status_code == 302
    assert 'id="delete-cv"' not in watcher.get(f"/cross-validations/{cv_id}").get_data(as_text=True)
    assert watcher.post(f"/cross-validations/{cv_id}/delete", data={"csrf_token": csrf_token(watcher, "/")}).status_code == 403
    assert login(client, *WEB_ADMIN).status_code == 302
    assert 'id="delete-cv"' in client.get(f"/cross-validations/{cv_id}").get_data(as_text=True)
    done = client.post(f"/cross-validations/{cv_id}/delete", data={"csrf_token": csrf_token(client, "/")})
    assert done.status_code == 302 and all(row(job_id) is None for job_id in ids)
    with get_sessionmaker().begin() as session:
        assert session.scalars(select(Job).where(Job.cv_id == cv_id)).all() == []


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_a_delete_racing_an_ensemble_submit_answers_one_line(app, folder_path):
    """Whichever commits first, the other gets its one line, never a foreign-key 500."""
    from tests.test_parent_deletion import refusal, wait_until_waiting_on_a_lock

    cv_id, ids = finished_cv(folder_path, ensemble=False)
    ensemble = {"kind": "evaluate", "split": "valid.csv"}
    with ThreadPoolExecutor(1) as other:
        # An ensemble is being submitted (its row written, not committed) when the delete comes: the delete
        # waits for it, then sees it queued and refuses.
        with get_sessionmaker().begin() as session:
            queued = create_ensemble_job(session, jobs.EnsembleRequest(cv_id=cv_id, kind="evaluate", split="valid.csv")).id
            answer = other.submit(app.test_client().delete, f"/api/cross-validations/{cv_id}", headers=AUTH)
            wait_until_waiting_on_a_lock()
        assert refusal(answer.result(timeout=60), 409)["error"] == (
            f"cross-validation {cv_id} is still running: job {queued} (ensemble, queued); cancel them or wait for them first"
        )
        cancel(queued)

        # The other way round: the delete is under way when an ensemble is submitted.
        with get_sessionmaker().begin() as session:
            deletion.delete_cross_validation(session, cv_id, actor=cli_actor())
            answer = other.submit(app.test_client().post, f"/api/cross-validations/{cv_id}/ensemble", headers=AUTH, json=ensemble)
            wait_until_waiting_on_a_lock()
        late = answer.result(timeout=60)  # 404 when its existence check already waited (SQLite: one writer)
        assert late.status_code in (400, 404) and late.json["error"] == f"cross-validation {cv_id} not found", late.json
    with get_sessionmaker().begin() as session:
        assert session.scalars(select(Job).where(Job.cv_id == cv_id)).all() == []
        assert all(session.get(Job, job_id) is None for job_id in [*ids, queued])


def test_a_delete_blocked_by_another_users_ensemble_says_which_job_and_what_to_do(app, client, folder_path):
    """Carol's ensemble of bob's folds keeps bob from deleting his cross-validation: a 409 naming her job, whose
    it is and what frees it (issue 23: a 403 that said only "submitted by someone else"). Once she deletes it, he may."""
    from core.service import users

    bob, carol = add_user("bob"), add_user("carol")
    cv_id, ids = finished_cv(folder_path, owner=bob, ensemble=False)
    with get_sessionmaker().begin() as session:
        best = [str(jobs.job_checkpoint(session, job_id, "best")) for job_id in ids]
        tokens = {
            name: users.create_token(session, cli_actor(), users.find_user(session, name), "t")[1].value
            for name in ("bob", "carol")
        }
    hers = ended_job(
        "evaluate",
        {"data_dir": folder_path, "csv": "test.csv", "checkpoint": best[0], "checkpoints": best[1:]},
        {"evaluation.json": 300},
        owner=carol,
        cv=(cv_id, None),
    )
    as_bob = {"Authorization": f"Bearer {tokens['bob']}"}
    refused = client.delete(f"/api/cross-validations/{cv_id}", headers=as_bob)
    assert (refused.status_code, refused.json) == (
        409,
        {
            "error": (
                f"cross-validation {cv_id}: job {hers} (ensemble) was submitted by carol; carol or an admin can delete "
                f"job {hers}, then cross-validation {cv_id} can be deleted"
            )
        },
    ), refused.json
    assert all(row(job_id) is not None for job_id in [*ids, hers])
    assert client.delete(f"/api/jobs/{hers}", headers={"Authorization": f"Bearer {tokens['carol']}"}).status_code == 200
    assert client.delete(f"/api/cross-validations/{cv_id}", headers=as_bob).status_code == 200
    assert all(row(job_id) is None for job_id in ids)
