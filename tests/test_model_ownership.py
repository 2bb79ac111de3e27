"""A model belongs to whoever trained it: an evaluate or predict job choosing a threshold on the valid
split writes it into the parent's checkpoint only when its submitter owns the parent or is an admin (and
the write is audited); anyone else's job uses the threshold it chose and keeps it in its own results.
Jobs go through the API and run here through the worker's code path (claim, run, outcome)."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import select

from core.engine.evaluation.threshold import THRESHOLD_KEY
from core.engine.model.checkpoint import load_checkpoint
from core.service.db import get_sessionmaker
from core.service.records import AuditEntry
from core.service.thresholds import AUDIT_ACTION
from tests.conftest import WEB_API_TOKEN
from tests.test_roles import team  # noqa: F401  (bob and carol, members, and vic, a viewer; each with a token)
from tests.web_helpers import TRAIN

ADMIN = {"Authorization": f"Bearer {WEB_API_TOKEN}"}  # the settings' token: alice, the admin
CHOOSE = {"threshold_from": "valid", "target_sensitivity": 1.0, "device": "cpu"}


def run_submitted(client, headers: dict[str, str], kind: str, params: dict, parent_id: int | None = None) -> int:
    """Submit through the API as `headers`' user, then run the job here as a worker would; it must succeed."""
    from worker.tasks import run_next_job

    response = client.post("/api/jobs", json={"kind": kind, "params": params, "parent_id": parent_id}, headers=headers)
    assert response.status_code == 201, response.json
    job_id = response.json["id"]
    run_next_job(job_id)
    job = client.get(f"/api/jobs/{job_id}", headers=headers).json
    assert (job["status"], job["error"]) == ("succeeded", None), job
    return job_id


def best_checkpoint(client, job_id: int) -> tuple[bytes, dict]:
    """The bytes of a job's best.pt as downloaded, and its artifact row."""
    best = next(a for a in client.get(f"/api/jobs/{job_id}/artifacts", headers=ADMIN).json["artifacts"] if a["name"] == "best.pt")
    return client.get(f"/api/jobs/{job_id}/artifacts/{best['id']}", headers=ADMIN).data, best


def chosen_threshold(client, kind: str, job_id: int) -> dict:
    results = client.get(f"/api/jobs/{job_id}/results", headers=ADMIN).json
    return results["evaluation" if kind == "evaluate" else "prediction"]["threshold"]


def threshold_audit() -> list[tuple[str, str | None, dict]]:
    with get_sessionmaker().begin() as session:
        rows = session.scalars(select(AuditEntry).where(AuditEntry.action == AUDIT_ACTION).order_by(AuditEntry.id))
        return [(row.username, row.target_id, row.detail) for row in rows]


@pytest.mark.parametrize("kind", ["evaluate", "predict"])
def test_only_the_owner_or_an_admin_records_a_threshold_in_a_model(client, team, folder_path, kind):  # noqa: F811
    bob, carol = team["bob"], team["carol"]
    model = run_submitted(client, bob, "train", {**TRAIN, "epochs": 1, "data_dir": folder_path, "device": "cpu"})
    params = {**CHOOSE, "data_dir": folder_path, "csv": "valid.csv" if kind == "evaluate" else "test.csv"}
    before, _ = best_checkpoint(client, model)
    assert THRESHOLD_KEY not in load_checkpoint_bytes(before)

    # carol, another member: her job uses the threshold it chose; bob's best.pt is untouched, nothing audited.
    hers = run_submitted(client, carol, kind, params, parent_id=model)
    threshold = chosen_threshold(client, kind, hers)
    assert threshold["source"] == "valid" and threshold["method"] == "sensitivity" and threshold["recorded_in"] is None
    assert threshold["description"].endswith("kept with this run, not recorded in best.pt")
    assert best_checkpoint(client, model)[0] == before
    assert threshold_audit() == []

    # bob, the owner: recorded in his best.pt (the artifact row follows the new bytes), audited as his.
    his = run_submitted(client, bob, kind, params, parent_id=model)
    recorded = chosen_threshold(client, kind, his)
    after, row = best_checkpoint(client, model)
    assert recorded["recorded_in"] and after != before
    assert load_checkpoint_bytes(after)[THRESHOLD_KEY]["value"] == recorded["value"] == threshold["value"]
    assert (len(after), hashlib.sha256(after).hexdigest()) == (row["size_bytes"], row["sha256"])
    assert [(name, target) for name, target, _ in threshold_audit()] == [("bob", str(model))]
    assert threshold_audit()[0][2] == {
        "checkpoint": recorded["recorded_in"],
        "value": recorded["value"],
        "method": "sensitivity",
        "target_sensitivity": 1.0,
        "chosen_by_job": his,
    }

    # alice, an admin, may record into anyone's model; that is audited as hers.
    run_submitted(client, ADMIN, kind, params, parent_id=model)
    assert [(name, target) for name, target, _ in threshold_audit()] == [("bob", str(model)), ("alice", str(model))]


def test_a_run_failing_after_it_recorded_a_threshold_leaves_the_write_audited(client, team, folder_path, monkeypatch):  # noqa: F811
    """The write and its audit row are one transaction at the moment the threshold is chosen, not a
    note at the end of the run: an evaluation that fails afterwards (here: writing its outputs) has
    still changed the owner's model, and the audit log says so."""
    from core.engine.evaluation import predict
    from worker.tasks import run_next_job

    bob = team["bob"]
    model = run_submitted(client, bob, "train", {**TRAIN, "epochs": 1, "data_dir": folder_path, "device": "cpu"})
    before, _ = best_checkpoint(client, model)

    def disk_gone(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(predict, "write_evaluation_outputs", disk_gone)
    response = client.post(
        "/api/jobs",
        headers=bob,
        json={"kind": "evaluate", "parent_id": model, "params": {**CHOOSE, "data_dir": folder_path, "csv": "valid.csv"}},
    )
    job_id = response.json["id"]
    run_next_job(job_id)
    assert client.get(f"/api/jobs/{job_id}", headers=bob).json["status"] == "failed"
    after, row = best_checkpoint(client, model)
    assert after != before and THRESHOLD_KEY in load_checkpoint_bytes(after)
    assert (len(after), hashlib.sha256(after).hexdigest()) == (row["size_bytes"], row["sha256"])
    assert [(name, target, detail["chosen_by_job"]) for name, target, detail in threshold_audit()] == [
        ("bob", str(model), job_id)
    ]


def load_checkpoint_bytes(content: bytes) -> dict:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "best.pt"
        path.write_bytes(content)
        return load_checkpoint(path)
