"""Retention and disk (issue 14, item 6): deleting a job or a sweep frees its files on disk (the bytes
reported are the bytes the files had), who may delete what, the `best` and `last-N` policies on real
tiny training runs in the worker's code path, a child's checkpoint kept, gc, and disk use in the API,
the dashboard and the CLI."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update
from werkzeug.security import generate_password_hash

from core.common.errors import UserInputError
from core.engine.progress import EpochRecord
from core.engine.run_folder.resolver import claim_run_folder
from core.service import jobs, retention
from core.service.db import get_sessionmaker
from core.service.disk import folder_bytes
from core.service.job_options import JobOptions
from core.service.records import Artifact, AuditEntry, CrossValidation, EpochMetric, Job, JobTag, Sweep, User, utcnow
from core.service.run_folders import job_run_folder
from core.service.settings import get_settings
from leukemia.cli import main as leukemia_cli
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import TRAIN, csrf_token, login

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
REQUIRED = {"train_loss": 0.5, "train_accuracy": 0.5, "lr": 0.001, "seconds": 1.0, "images_per_s": 10.0}
EPOCH_FIELDS = [name for name in EpochRecord.model_fields if name != "epoch" and name not in REQUIRED]
FILES = {"best.pt": 3000, "last.pt": 5000, "metrics.csv": 120, "plots/loss.png": 777}


def add_user(name: str, role: str = "member") -> int:
    with get_sessionmaker().begin() as session:
        user = User(username=name, password_hash=generate_password_hash(f"{name}-password"), role=role)
        session.add(user)
        session.flush()
        return user.id


def finished_job(
    data_dir: str,
    *,
    status: str = "succeeded",
    owner: int | None = None,
    kind: str = "train",
    parent_id: int | None = None,
    files: dict[str, int] | None = None,
    retention_policy: str | None = None,
    sweep_id: int | None = None,
) -> int:
    """A job taken through the job service (claimed, files written in its run folder and recorded, ended)."""
    with get_sessionmaker().begin() as session:
        options = JobOptions(retention=retention_policy, tags=["keep-me"])
        job = jobs.create_job(
            session,
            jobs.JobRequest(kind=kind, params={**TRAIN, "data_dir": data_dir}, parent_id=parent_id, options=options),
            submitted_by=owner,
        )
        job.sweep_id = sweep_id
        job_id, run_key, run_folder = job.id, job.run_key, job_run_folder(job)
    claim_run_folder(run_folder, run_key)
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, job_id, owner="w", host="h")
        jobs.record_epoch(session, job_id, EpochRecord(epoch=1, **dict.fromkeys(EPOCH_FIELDS), **REQUIRED))
        for name, size in (FILES if files is None else files).items():
            path = run_folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(size))
            jobs.add_artifact(session, job_id, "checkpoint" if name.endswith(".pt") else "metrics", path)
        jobs.finish_job(session, job_id, "w", status)
    return job_id


def row(job_id: int) -> Job | None:
    with get_sessionmaker().begin() as session:
        job = session.get(Job, job_id)
        if job is not None:
            session.expunge(job)
        return job


def cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(leukemia_cli, list(args))
    return result.exit_code, result.output


@pytest.fixture()
def admin(client):
    assert login(client, *WEB_ADMIN).status_code == 302
    return client


# --- delete -------------------------------------------------------------------------------------


def test_a_delete_frees_exactly_the_bytes_its_files_had(client, folder_path, tmp_path):
    job_id = finished_job(folder_path)
    run_folder = job_run_folder(row(job_id))
    outside = tmp_path / "precious.bin"
    outside.write_bytes(b"x" * 4096)
    os.symlink(outside, run_folder / "link-out.bin")  # a link out of the artifacts dir: removed as a link only
    os.symlink(tmp_path, run_folder / "link-dir")
    child = finished_job(folder_path, kind="finetune", parent_id=job_id, files={"best.pt": 10})
    on_disk = sum(p.lstat().st_size for p in run_folder.rglob("*") if p.is_file() and not p.is_symlink())
    assert on_disk == sum(FILES.values()) + 33  # and the .run_key stamp: the key and a newline

    response = client.delete(f"/api/jobs/{job_id}", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json == {"job_ids": [job_id], "sweep_id": None, "cv_id": None, "freed_bytes": on_disk}
    assert not run_folder.exists() and outside.read_bytes() == b"x" * 4096 and tmp_path.is_dir()
    assert row(job_id) is None and row(child).parent_id is None
    with get_sessionmaker().begin() as session:
        for table in (EpochMetric, Artifact, JobTag):
            assert session.scalars(select(table).where(table.job_id == job_id)).all() == []
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "job.delete")).one()
        assert (entry.target_id, entry.detail["freed_bytes"], entry.username) == (str(job_id), on_disk, WEB_ADMIN[0])
    assert client.delete(f"/api/jobs/{job_id}", headers=AUTH).status_code == 404


def test_a_file_that_cannot_be_removed_keeps_the_job_and_is_one_line(client, folder_path):
    """An immutable file (chattr +i: refused even to root) makes the delete a one-line 503; the job's
    rows stay, and once the file can go the same delete succeeds."""
    import subprocess

    job_id = finished_job(folder_path)
    stuck = job_run_folder(row(job_id)) / "best.pt"
    if subprocess.run(["chattr", "+i", str(stuck)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable flag (chattr +i)")
    try:
        response = client.delete(f"/api/jobs/{job_id}", headers=AUTH)
        assert response.status_code == 503, response.json
        assert response.json["error"].startswith(f"job {job_id}: cannot remove {stuck}: Operation not permitted")
        assert row(job_id) is not None and stuck.exists()
        code, output = cli("delete", str(job_id))
        assert code == 2 and "cannot remove" in output and len(output.strip().splitlines()) == 1
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert client.delete(f"/api/jobs/{job_id}", headers=AUTH).status_code == 200 and row(job_id) is None


def test_who_may_delete_and_what_is_refused(app, admin, folder_path):
    bob, carol = add_user("bob"), add_user("carol")
    bobs, carols = finished_job(folder_path, owner=bob), finished_job(folder_path, owner=carol)
    member = app.test_client()
    assert login(member, "bob", "bob-password").status_code == 302
    token = csrf_token(member, f"/jobs/{bobs}")

    refused = member.post(f"/jobs/{carols}/delete", data={"csrf_token": token})
    assert refused.status_code == 403 and "only its owner or an admin" in refused.get_data(as_text=True)
    assert row(carols) is not None
    done = member.post(f"/jobs/{bobs}/delete", data={"csrf_token": token}, follow_redirects=True)
    assert done.status_code == 200 and row(bobs) is None
    assert f"Deleted job {bobs}: 8.9 kB freed." in done.get_data(as_text=True)  # 3000+5000+120+777+33 bytes

    with get_sessionmaker().begin() as session:  # a running job, and a parent a queued job still needs
        running = jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder_path})).id
        jobs.claim_job(session, running, owner="w", host="h")
    queued_child = None
    with get_sessionmaker().begin() as session:
        queued_child = jobs.create_job(
            session, jobs.JobRequest(kind="finetune", params={**TRAIN, "data_dir": folder_path}, parent_id=carols)
        ).id
    answer = admin.delete(f"/api/jobs/{running}", headers=AUTH)
    assert answer.status_code == 409 and answer.json["error"] == f"job {running} is running: cancel it first"
    answer = admin.delete(f"/api/jobs/{carols}", headers=AUTH)
    assert answer.status_code == 409 and f"queued or running job {queued_child} need its checkpoint" in answer.json["error"]
    page = admin.post(f"/jobs/{carols}/delete", data={"csrf_token": csrf_token(admin, "/")}, follow_redirects=True)
    assert f"Job {carols} not deleted: job {carols}: queued or running job {queued_child}" in page.get_data(as_text=True)
    jobs_page = admin.get(f"/jobs/{carols}").get_data(as_text=True)
    assert 'id="delete"' in jobs_page and "data-confirm=" in jobs_page

    assert cli("cancel", str(queued_child))[0] == 0
    code, output = cli("delete", str(carols), "99999")
    assert code == 2 and f"deleted job {carols}: 8.9 kB (8930 bytes) freed" in output and "job 99999 not found" in output
    assert row(carols) is None  # the admin (the CLI) may delete anyone's job


def new_sweep() -> int:
    with get_sessionmaker().begin() as session:
        sweep = Sweep(name="lr", kind="train", base_params={}, grid={"lr": [0.1, 0.2]})
        session.add(sweep)
        session.flush()
        return sweep.id


def test_deleting_a_sweep_deletes_all_its_finished_jobs(admin, folder_path):
    client, sweep_id = admin, new_sweep()
    members = [
        finished_job(folder_path, sweep_id=sweep_id, files={"best.pt": 100}, status=status) for status in ("succeeded", "failed")
    ]
    with get_sessionmaker().begin() as session:
        jobs.retry_job(session, members[1], get_settings())  # queued again: the sweep is not finished
    refused = client.delete(f"/api/sweeps/{sweep_id}", headers=AUTH)
    assert refused.status_code == 409 and f"job {members[1]} still queued or running" in refused.json["error"], refused.json
    with get_sessionmaker().begin() as session:
        jobs.request_cancel(session, members[1])
    response = client.delete(f"/api/sweeps/{sweep_id}", headers=AUTH)
    assert response.status_code == 200, response.json
    assert response.json == {"job_ids": members, "sweep_id": sweep_id, "cv_id": None, "freed_bytes": 2 * (100 + 33)}
    assert all(row(job_id) is None for job_id in members)
    assert client.get(f"/api/sweeps/{sweep_id}", headers=AUTH).status_code == 404
    assert client.delete(f"/api/sweeps/{sweep_id}", headers=AUTH).status_code == 404

    by_form = new_sweep()
    member = finished_job(folder_path, sweep_id=by_form, files={"best.pt": 1000})
    page = client.get(f"/?sweep={by_form}").get_data(as_text=True)
    assert 'id="delete-sweep"' in page and f"Delete sweep {by_form}, all its jobs" in page
    done = client.post(f"/sweeps/{by_form}/delete", data={"csrf_token": csrf_token(client, "/")}, follow_redirects=True)
    assert f"Deleted sweep {by_form} (1 job): 1.0 kB freed." in done.get_data(as_text=True) and row(member) is None
    assert cli("delete", "--sweep", str(by_form)) == (2, f"error: sweep {by_form} not found\n")
    by_cli = new_sweep()
    finished_job(folder_path, sweep_id=by_cli, files={"best.pt": 1000})
    assert cli("delete", "--sweep", str(by_cli)) == (0, f"deleted sweep {by_cli} (1 job): 1.0 kB (1033 bytes) freed\n")
    assert cli("delete") == (2, "error: job_ids: give job ids, --sweep ID or --cv ID (one of them)\n")


# --- retention on real training runs -------------------------------------------------------------


def train_in_process(data_dir: str, epochs: int, policy: str | None) -> int:
    """Submit a tiny train job and run it here through the worker's code path (claim, run, outcome, retention)."""
    from worker.tasks import run_next_job

    with get_sessionmaker().begin() as session:  # committed as dispatch.submit_job does; no broker needed here
        job_id = jobs.create_job(
            session,
            jobs.JobRequest(
                kind="train",
                params={**TRAIN, "data_dir": data_dir, "epochs": epochs, "device": "cpu"},
                options=JobOptions(retention=policy),
            ),
        ).id
    run_next_job(job_id)
    job = row(job_id)
    assert job.status == "succeeded", job.error
    return job_id


def names(job_id: int) -> tuple[set[str], set[str]]:
    """The run folder's .pt files and the job's recorded checkpoint artifacts."""
    run_folder = job_run_folder(row(job_id))
    with get_sessionmaker().begin() as session:
        recorded = {a.name for a in jobs.artifacts(session, job_id) if a.kind == "checkpoint"}
    return {p.name for p in run_folder.glob("*.pt")}, recorded


def test_retention_best_and_last_n_on_tiny_training_runs(app, folder_path):
    best = train_in_process(folder_path, 1, "best")
    assert names(best) == ({"best.pt"}, {"best.pt"})  # last.pt gone after success, and its artifact row
    job = row(best)
    assert job.disk_bytes == folder_bytes(job_run_folder(job)) > 0
    with pytest.raises(UserInputError, match=r"parent: job \d+ kept best.pt only \(retention best\)"):
        with get_sessionmaker().begin() as session:
            jobs.create_job(
                session,
                jobs.JobRequest(
                    kind="finetune", params={**TRAIN, "data_dir": folder_path, "checkpoint_choice": "last"}, parent_id=best
                ),
            )

    kept = train_in_process(folder_path, 2, "last-1")  # epoch_001.pt written, then pruned after epoch 2
    expected = {"best.pt", "last.pt", "epoch_002.pt"}
    assert names(kept) == (expected, expected)
    from core.engine.model.checkpoint import load_checkpoint

    slim = load_checkpoint(job_run_folder(row(kept)) / "epoch_002.pt")
    assert slim["epoch"] == 2 and "optimizer" not in slim and "model" in slim  # weights only, no resume state

    # Its policy edited to best while a queued child will finetune from its last.pt: last.pt stays for it.
    with get_sessionmaker().begin() as session:
        session.execute(update(Job).where(Job.id == kept).values(retention="best"))
        child = jobs.create_job(
            session,
            jobs.JobRequest(
                kind="finetune", params={**TRAIN, "data_dir": folder_path, "checkpoint_choice": "last"}, parent_id=kept
            ),
        ).id
    with get_sessionmaker().begin() as session:
        outcome = retention.after_job(session, kept, get_settings().retention)
    assert outcome.kept_for_children == ["last.pt"] and outcome.removed == ["epoch_002.pt"]
    assert names(kept) == ({"best.pt", "last.pt"}, {"best.pt", "last.pt"})
    assert cli("cancel", str(child))[0] == 0
    with get_sessionmaker().begin() as session:
        outcome = retention.after_job(session, kept, get_settings().retention)
    assert outcome.removed == ["last.pt"] and outcome.freed_bytes > 0
    assert row(kept).disk_bytes == folder_bytes(job_run_folder(row(kept)))


def test_best_keeps_last_pt_of_a_failed_job_for_its_retry(app, folder_path):
    failed = finished_job(folder_path, status="failed", retention_policy="best")
    with get_sessionmaker().begin() as session:
        outcome = retention.after_job(session, failed, get_settings().retention)
    assert outcome.removed == [] and (job_run_folder(row(failed)) / "last.pt").is_file()
    assert row(failed).disk_bytes == sum(FILES.values()) + 33


def test_a_retention_edit_on_a_finished_job_applies_now_and_says_so(admin, folder_path):
    """Issue 20: `best` set on a finished job removed nothing and said nothing. Now the worker's step runs at
    once (API, dashboard form, CLI): last.pt goes, its artifact row too, the disk bytes are measured again,
    the audit row says what went; a running job's edit says it applies when the job ends."""
    by_api, by_form, by_cli = (finished_job(folder_path) for _ in range(3))
    before = folder_bytes(job_run_folder(row(by_api)))
    response = admin.patch(f"/api/jobs/{by_api}", json={"retention": "best"}, headers=AUTH)
    assert response.status_code == 200, response.json
    run_folder = job_run_folder(row(by_api))
    assert not (run_folder / "last.pt").exists() and (run_folder / "best.pt").is_file() and (run_folder / "metrics.csv").is_file()
    assert response.json["disk_bytes"] == row(by_api).disk_bytes == folder_bytes(run_folder) == before - FILES["last.pt"]
    with get_sessionmaker().begin() as session:
        names = set(session.scalars(select(Artifact.name).where(Artifact.job_id == by_api)))
        detail = session.scalars(
            select(AuditEntry.detail).where(AuditEntry.action == "job.edit", AuditEntry.target_id == str(by_api))
        ).one()
    assert "last.pt" not in names and "best.pt" in names
    assert detail["changed"]["retention"] == "best" and detail["changed"]["retention_applied"] == {
        "removed": ["last.pt"],
        "kept_for_children": [],
        "freed_bytes": FILES["last.pt"],
        "disk_bytes": before - FILES["last.pt"],
    }

    token = csrf_token(admin, f"/jobs/{by_form}")
    form = {"csrf_token": token, "priority": "normal", "tags": "keep-me", "retention": "best", "description": ""}
    page = admin.post(f"/jobs/{by_form}/edit", data=form, follow_redirects=True).get_data(as_text=True)
    assert f"Job {by_form} edited: retention best (applied now: removed last.pt, 5.0 kB freed)." in page
    assert not (job_run_folder(row(by_form)) / "last.pt").exists()

    code, output = cli("edit", str(by_cli), "--retention", "best")
    assert (code, output) == (0, f"job {by_cli} edited: retention best (applied now: removed last.pt, 5.0 kB freed)\n")
    assert cli("edit", str(by_cli), "--retention", "all") == (
        0,
        f"job {by_cli} edited: retention all (applied now: nothing to remove)\n",
    )

    with get_sessionmaker().begin() as session:
        running = jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder_path})).id
        jobs.claim_job(session, running, owner="w", host="h")
    assert cli("edit", str(running), "--retention", "best") == (
        0,
        f"job {running} edited: retention best (applies when the job ends)\n",
    )


def test_the_global_policy_is_a_setting_and_a_bad_one_names_it(settings_override):
    settings_override(RETENTION="last-5")
    default = get_settings().retention
    assert default == "last-5" and retention.policy_of(Job(retention=None), default) == "last-5"
    assert retention.policy_of(Job(retention="best"), default) == "best"
    settings_override(RETENTION="newest")
    with pytest.raises(UserInputError, match="RETENTION: .*'newest' is not a retention policy"):
        get_settings()


# --- gc and disk use ---------------------------------------------------------------------------------


def test_gc_dry_run_then_for_real(client, folder_path):
    old_failed, old_cancelled = finished_job(folder_path, status="failed"), finished_job(folder_path, status="cancelled")
    recent_failed, old_succeeded = finished_job(folder_path, status="failed"), finished_job(folder_path)
    fold = finished_job(folder_path, status="failed")
    with get_sessionmaker().begin() as session:
        session.execute(
            update(Job)
            .where(Job.id.in_([old_failed, old_cancelled, old_succeeded, fold]))
            .values(finished_at=utcnow() - timedelta(days=31))
        )
        cv = CrossValidation(name="cv", data_dir=folder_path, scheme="2 folds", base_params={}, folds=[])
        session.add(cv)
        session.flush()
        session.execute(update(Job).where(Job.id == fold).values(cv_id=cv.id, cv_fold=0))
    refusal = client.delete(f"/api/jobs/{fold}", headers=AUTH)
    assert refusal.status_code == 409
    assert refusal.json["error"].startswith(
        f"job {fold} is fold 0 of cross-validation {cv.id}: a fold is kept with its cross-validation"
    )
    each = sum(FILES.values()) + 33

    code, output = cli("gc", "--older-than", "30d", "--dry-run")
    assert code == 0, output
    assert f"job {old_failed} train failed" in output and f"job {old_cancelled} train cancelled" in output
    assert f"would free 8.9 kB ({each} bytes)" in output and str(recent_failed) not in output.replace("job", " ").split()
    assert f"job {fold} train failed" in output and f"skipped: job {fold} is fold 0 of cross-validation" in output
    assert f"dry run: 2 job(s) would go, would free 17.9 kB ({2 * each} bytes) in total; 1 skipped" in output
    assert row(old_failed) is not None and row(old_cancelled) is not None

    code, output = cli("gc", "--older-than", "4w", "--status", "failed,cancelled")
    assert code == 0 and f"2 job(s) deleted, freed 17.9 kB ({2 * each} bytes) in total; 1 skipped" in output
    assert row(old_failed) is None and row(old_cancelled) is None
    assert row(recent_failed) is not None and row(old_succeeded) is not None
    with get_sessionmaker().begin() as session:
        audited = session.execute(
            select(AuditEntry.target_id, AuditEntry.username, AuditEntry.detail)
            .where(AuditEntry.action == "job.delete")
            .order_by(AuditEntry.id)
        ).all()
    assert [(target, name.startswith("cli:"), detail["freed_bytes"]) for target, name, detail in audited] == [
        (str(old_failed), True, each),
        (str(old_cancelled), True, each),
    ]
    assert cli("gc", "--older-than", "30x")[1].strip() == (
        "error: older_than: '30x' is not an age; use a number and h, d or w (12h, 30d, 2w)"
    )
    assert cli("gc", "--older-than", "1h", "--status", "running") == (
        2,
        "error: status: running is not a finished status; choose among succeeded, failed, cancelled\n",
    )


def test_disk_use_in_the_api_the_job_list_and_the_cli(admin, folder_path):
    job_id = finished_job(folder_path)
    with get_sessionmaker().begin() as session:
        retention.after_job(session, job_id, get_settings().retention)
    each = sum(FILES.values()) + 33
    answer = admin.get("/api/disk", headers=AUTH).json
    assert answer["jobs_bytes"] == each and answer["measured_jobs"] == 1 and answer["retention"] == "all"
    assert 0 < answer["free_bytes"] <= answer["total_bytes"]
    page = admin.get("/").get_data(as_text=True)
    assert "<th>Disk</th>" in page and 'data-field="disk">8.9 kB<' in page and "Disk: 8.9 kB in run folders" in page
    assert "retention all (global)" in admin.get(f"/jobs/{job_id}").get_data(as_text=True)
    code, output = cli("disk")
    assert (
        code == 0
        and f"run folders: 8.9 kB ({each} bytes) over 1 job(s)" in output
        and f"job {job_id} train succeeded: 8.9 kB" in output
    )
