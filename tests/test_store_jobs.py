"""Jobs on an object store (issue 24), through the worker's code path in this process, against a real
S3-compatible server: a training run's files stored and recorded (key, size, sha256) and its scratch copy
gone; evaluate and predict on another node's cache and scratch, from the parent's checkpoint fetched and
checked; a threshold written into a fresh copy stored under the checkpoint's key; downloads, results and
pages read through the store, and a file the store lost is a 409 naming the job and the file; delete and
retention remove the objects; a takeover with nothing stored says it starts over. The folder store's
behaviour is every other test's."""

from __future__ import annotations

import hashlib
import io
import zipfile

import torch
from sqlalchemy import select, update

from core.engine.run_folder.artifact_store import sha256_of
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.job_options import JobOptions
from core.service.records import Artifact, AuditEntry, EpochMetric, Job, utcnow
from core.service.run_folders import artifact_store, job_run_folder, job_run_key
from core.service.settings import get_settings
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import TRAIN, login

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
PREFIX = "leukemia"  # s3_server.settings(bucket): ARTIFACTS_URL is s3://bucket/leukemia


def row(job_id: int) -> Job:
    with get_sessionmaker().begin() as session:
        return jobs.get_job(session, job_id)


def recorded(job_id: int) -> dict[str, Artifact]:
    with get_sessionmaker().begin() as session:
        found = {artifact.name: artifact for artifact in jobs.artifacts(session, job_id)}
        session.expunge_all()
        return found


def run(kind: str, params: dict, *, parent_id: int | None = None, retention: str | None = None) -> int:
    """Submit a job and run it here through the worker's code path; its id once it succeeded."""
    from worker.tasks import run_next_job

    with get_sessionmaker().begin() as session:
        request = jobs.JobRequest(
            kind=kind, params={**params, "device": "cpu"}, parent_id=parent_id, options=JobOptions(retention=retention)
        )
        job_id = jobs.create_job(session, request).id
    run_next_job(job_id)
    job = row(job_id)
    assert job.status == "succeeded", job.error
    return job_id


def on_another_node(tmp_path, settings_override, name: str) -> None:
    """This process as another host: its own scratch and cache folders (the database and the store are shared)."""
    settings_override(SCRATCH_DIR=str(tmp_path / name / "scratch"), CACHE_DIR=str(tmp_path / name / "cache"))


def stored_objects(s3_server, bucket: str, job_id: int) -> dict[str, int]:
    """The job's run folder as the bucket holds it: key (as recorded) → size."""
    prefix = f"{PREFIX}/{job_run_key(row(job_id))}/"
    return {key.removeprefix(f"{PREFIX}/"): size for key, size in s3_server.keys(bucket, prefix).items()}


def test_a_run_is_stored_and_recorded_then_read_from_another_node(
    app, client, folder_path, s3_store_env, s3_server, tmp_path, settings_override
):
    bucket = s3_store_env
    on_another_node(tmp_path, settings_override, "node-a")
    trained = run("train", {**TRAIN, "data_dir": folder_path, "epochs": 2})
    files = recorded(trained)
    objects = stored_objects(s3_server, bucket, trained)
    assert {"best.pt", "last.pt", "metrics.csv", "metrics.json", "loss.png", "events.out.tfevents.leukemia"} <= set(files)
    assert objects == {artifact.path: artifact.size_bytes for artifact in files.values()}  # rows name what the bucket holds
    with get_sessionmaker().begin() as session:
        assert [m.epoch for m in jobs.epoch_metrics(session, trained)] == [1, 2]
    assert not job_run_folder(row(trained)).exists()  # the scratch copy is gone once stored
    assert not get_settings().resolved_artifacts_dir.exists()  # nothing went to the folder store
    assert row(trained).disk_bytes == sum(objects.values())

    # Another node: the parent's best.pt fetched into its cache by sha256, checked, reused by the next job.
    on_another_node(tmp_path, settings_override, "node-b")
    best = files["best.pt"]
    evaluated = run("evaluate", {"data_dir": folder_path, "csv": "valid.csv", "explain": "2"}, parent_id=trained)
    cached = tmp_path / "node-b" / "cache" / "checkpoints" / f"{best.sha256}.pt"
    assert sha256_of(cached) == best.sha256
    inode = cached.stat().st_ino
    predicted = run("predict", {"data_dir": folder_path, "csv": "test.csv"}, parent_id=trained)
    assert cached.stat().st_ino == inode  # reused, not fetched again

    results = client.get(f"/api/jobs/{evaluated}/results", headers=AUTH)
    assert results.status_code == 200 and results.json["evaluation"]["accuracy"] is not None
    assert results.json["explained"]
    assert client.get(f"/api/jobs/{evaluated}/explanations/1", headers=AUTH).data.startswith(b"\x89PNG")
    images = client.get(f"/api/jobs/{evaluated}/images", headers=AUTH).json["images"]
    assert len(images) == 4 and client.get(f"/api/jobs/{predicted}/results", headers=AUTH).json["prediction"]

    # Downloads stream from the store: byte for byte the recorded file.
    outputs = recorded(predicted)
    answer = client.get(f"/api/jobs/{predicted}/artifacts/{outputs['predictions.csv'].id}", headers=AUTH)
    assert answer.status_code == 200 and answer.headers["Content-Length"] == str(outputs["predictions.csv"].size_bytes)
    assert hashlib.sha256(answer.data).hexdigest() == outputs["predictions.csv"].sha256
    assert answer.data.startswith(b"ID,label")
    checkpoint = client.get(f"/api/jobs/{trained}/artifacts/{best.id}", headers=AUTH)
    assert hashlib.sha256(checkpoint.data).hexdigest() == best.sha256
    zipped = client.get(f"/api/jobs/{evaluated}/artifacts/{recorded(evaluated)['explanations.zip'].id}", headers=AUTH)
    assert zipfile.ZipFile(io.BytesIO(zipped.data)).namelist()

    # A file the store lost: one line naming the job and the file, on the API, the download and the job page.
    gone = recorded(evaluated)["evaluation.json"]
    s3_server.client().delete_object(Bucket=bucket, Key=f"{PREFIX}/{gone.path}")
    line = f"job {evaluated}: its evaluation.json is recorded but missing from the artifact store ({gone.path})"
    answer = client.get(f"/api/jobs/{evaluated}/results", headers=AUTH)
    assert (answer.status_code, answer.json["error"]) == (409, line)
    answer = client.get(f"/api/jobs/{evaluated}/artifacts/{gone.id}", headers=AUTH)
    assert (answer.status_code, answer.json["error"]) == (409, line)
    assert login(client, *WEB_ADMIN).status_code == 302
    page = client.get(f"/jobs/{evaluated}")
    assert page.status_code == 200 and f'id="results-error" role="alert">{line}</p>' in page.get_data(as_text=True)

    # Delete frees the objects: the bytes reported are the bytes the bucket held; its children keep theirs.
    trained_folder, predicted_objects = job_run_key(row(trained)), stored_objects(s3_server, bucket, predicted)
    answer = client.delete(f"/api/jobs/{trained}", headers=AUTH)
    assert answer.status_code == 200 and answer.json["freed_bytes"] == sum(objects.values())
    assert s3_server.keys(bucket, f"{PREFIX}/{trained_folder}/") == {}
    assert stored_objects(s3_server, bucket, predicted) == predicted_objects
    disk = client.get("/api/disk", headers=AUTH).json
    assert disk["store"] == f"s3://{bucket}/{PREFIX}" and disk["free_bytes"] is None and disk["total_bytes"] is None


def test_a_threshold_chosen_on_another_node_goes_into_the_stored_checkpoint(
    app, folder_path, s3_store_env, tmp_path, settings_override
):
    on_another_node(tmp_path, settings_override, "node-a")
    trained = run("train", {**TRAIN, "data_dir": folder_path, "epochs": 1})
    before = recorded(trained)["best.pt"]
    on_another_node(tmp_path, settings_override, "node-b")
    evaluated = run("evaluate", {"data_dir": folder_path, "csv": "valid.csv", "threshold_from": "valid"}, parent_id=trained)
    after = recorded(trained)["best.pt"]
    assert after.sha256 != before.sha256 and after.path == before.path
    store = artifact_store()
    with store.open(after.path) as stream:
        content = stream.read()
    assert hashlib.sha256(content).hexdigest() == after.sha256 and len(content) == after.size_bytes
    threshold = torch.load(io.BytesIO(content), weights_only=True)["operating_threshold"]
    assert threshold["chosen_on"] and 0 <= threshold["value"] <= 1
    cached = tmp_path / "node-b" / "cache" / "checkpoints" / f"{before.sha256}.pt"
    assert sha256_of(cached) == before.sha256  # the cache entry named by its hash is never changed in place
    with get_sessionmaker().begin() as session:
        audit = session.scalars(select(AuditEntry).where(AuditEntry.action == "job.threshold")).one()
        assert audit.detail["checkpoint"] == store.location(before.path) and audit.detail["chosen_by_job"] == evaluated


def test_retention_removes_the_objects_and_their_rows(app, folder_path, s3_store_env, s3_server, tmp_path, settings_override):
    on_another_node(tmp_path, settings_override, "node-a")
    best_only = run("train", {**TRAIN, "data_dir": folder_path, "epochs": 1}, retention="best")
    names = {key.rsplit("/", 1)[-1] for key in stored_objects(s3_server, s3_store_env, best_only)}
    assert "best.pt" in names and "last.pt" not in names
    assert "last.pt" not in recorded(best_only) and "best.pt" in recorded(best_only)
    kept = run("train", {**TRAIN, "data_dir": folder_path, "epochs": 3}, retention="last-1")
    names = {key.rsplit("/", 1)[-1] for key in stored_objects(s3_server, s3_store_env, kept)}
    assert {name for name in names if name.startswith("epoch_")} == {"epoch_003.pt"}
    assert {name for name in recorded(kept) if name.startswith("epoch_")} == {"epoch_003.pt"}


def test_a_takeover_with_nothing_stored_says_it_starts_over(app, folder_path, s3_store_env, tmp_path, settings_override):
    """A job whose worker died before it stored an epoch: the next attempt says so in its log and on its row."""
    from worker.tasks import run_next_job

    on_another_node(tmp_path, settings_override, "node-b")
    with get_sessionmaker().begin() as session:
        request = jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder_path, "epochs": 1, "device": "cpu"})
        job_id = jobs.create_job(session, request).id
        jobs.claim_job(session, job_id, owner="dead-worker:1", host="node-a")  # attempt 1, on a node now gone
    stale = utcnow().replace(year=2000)
    with get_sessionmaker().begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=stale))
    run_next_job(job_id)
    job = row(job_id)
    note = (
        f"attempt 2 on {job.worker_host} found no last.pt checkpoint in the artifact store to resume from, so it "
        "started over at epoch 1"
    )
    assert (job.status, job.attempts, job.attempt_note) == ("succeeded", 2, note)
    assert note in job.log_tail
    with get_sessionmaker().begin() as session:
        assert session.scalars(select(EpochMetric.epoch).where(EpochMetric.job_id == job_id)).all() == [1]


def test_a_takeover_checks_the_stored_last_pt_against_its_row(app, folder_path, s3_store_env, tmp_path, settings_override):
    """The last.pt a takeover fetches is the recorded one, or one epoch past the recorded epochs (stored by an
    attempt that stopped before it recorded that epoch); anything else is refused in one line."""
    import pytest

    from core.common.errors import UserInputError
    from core.service.run_mirror import RunMirror

    on_another_node(tmp_path, settings_override, "node-a")
    trained = run("train", {**TRAIN, "data_dir": folder_path, "epochs": 1})
    key, store, prefix = recorded(trained)["last.pt"].path, artifact_store(), job_run_key(row(trained))
    local = tmp_path / "edited" / "last.pt"
    store.get(key, local)
    checkpoint = torch.load(local, weights_only=True)

    def stored_as_epoch(epoch: int) -> None:
        torch.save({**checkpoint, "epoch": epoch}, local)
        store.put(key, local)

    def take_over() -> list[str]:
        scratch = tmp_path / "node-b" / f"scratch-{uuid_hex()}" / prefix
        return RunMirror(store, scratch, prefix, trained).fetch_run()

    assert "last.pt" in take_over()  # as recorded
    stored_as_epoch(2)
    assert "last.pt" in take_over()  # stored, not recorded yet: resumed from
    stored_as_epoch(7)
    with pytest.raises(
        UserInputError,
        match=rf"^job {trained}: {key} in the artifact store does not match its recorded "
        r"sha256 \(it holds epoch 7, the job recorded 1\)",
    ):
        take_over()


def uuid_hex() -> str:
    import uuid

    return uuid.uuid4().hex
