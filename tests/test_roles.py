"""Roles on every write: each role's allowed and refused actions in the API (bearer tokens) and in the
dashboard's forms (logins), with the audit row each allowed write leaves."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from core.service import users
from core.service.access import cli_actor
from core.service.db import get_sessionmaker
from core.service.records import AuditEntry
from tests.conftest import WEB_API_TOKEN
from tests.web_helpers import TRAIN, csrf_token, login, queued_job

LEGACY = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
PASSWORD = "correct-horse-9"


def add_user(name: str, role: str) -> dict[str, str]:
    """A user with PASSWORD and a token; returns the token's Authorization header."""
    with get_sessionmaker().begin() as session:
        user, _ = users.add_user(session, cli_actor(), name, role, PASSWORD)
        _, secret = users.create_token(session, cli_actor(), user, f"{name}'s laptop")
    return {"Authorization": f"Bearer {secret.value}"}


@pytest.fixture()
def team(app):
    """Two members and a viewer, each with a token."""
    return {name: add_user(name, role) for name, role in (("bob", "member"), ("carol", "member"), ("vic", "viewer"))}


def audit_actions() -> list[tuple[str, str, str | None]]:
    with get_sessionmaker().begin() as session:
        return [(e.username, e.action, e.target_id) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]


def refused(response) -> str:
    """The one-line reason of a 403."""
    assert response.status_code == 403, (response.status_code, response.get_data(as_text=True))
    if response.is_json:
        message = response.json["error"]
        assert "\n" not in message
        return message
    return response.get_data(as_text=True)


def test_api_viewer_reads_only(client, team, folder_path):
    viewer = team["vic"]
    assert client.get("/api/jobs", headers=viewer).status_code == 200
    assert client.get("/api/data-folders", headers=viewer).status_code == 200
    job_id = queued_job(folder_path)
    attempts = [
        ("/api/jobs", {"kind": "train", "params": {**TRAIN, "data_dir": folder_path}}),
        ("/api/sweeps", {"kind": "train", "base_params": {**TRAIN, "data_dir": folder_path}, "grid": {"lr": [0.1, 0.01]}}),
        ("/api/cross-validations", {"params": {**TRAIN, "data_dir": folder_path}}),
        ("/api/data-folders", {"path": folder_path, "name": "again"}),
        (f"/api/jobs/{job_id}/cancel", None),
        (f"/api/jobs/{job_id}/retry", None),
    ]
    for url, body in attempts:
        message = refused(client.post(url, json=body, headers=viewer))
        assert message.startswith("vic is a viewer"), (url, message)
    assert not [row for row in audit_actions() if row[0] == "vic"]


def test_api_members_change_their_own_jobs_only_admins_any(client, team, folder_path):
    bob, carol = team["bob"], team["carol"]
    body = {"kind": "train", "params": {**TRAIN, "data_dir": folder_path}}
    mine = client.post("/api/jobs", json=body, headers=bob)
    assert mine.status_code == 201 and mine.json["submitted_by_name"] == "bob"
    theirs = client.post("/api/jobs", json=body, headers=carol).json["id"]
    cli_job = queued_job(folder_path)  # submitted from the CLI: nobody's but the admins'
    for job_id in (theirs, cli_job):
        for action in ("cancel", "retry"):
            message = refused(client.post(f"/api/jobs/{job_id}/{action}", headers=bob))
            assert message == f"job {job_id} was submitted by someone else: only its owner or an admin may change it"
    assert client.post(f"/api/jobs/{mine.json['id']}/cancel", headers=bob).json["status"] == "cancelled"
    assert client.post(f"/api/jobs/{mine.json['id']}/retry", headers=bob).json["status"] == "queued"
    assert client.post(f"/api/jobs/{theirs}/cancel", headers=LEGACY).json["status"] == "cancelled"  # the admin's token
    sweep = client.post(
        "/api/sweeps",
        headers=bob,
        json={"kind": "train", "base_params": {**TRAIN, "data_dir": folder_path}, "grid": {"lr": [0.1, 0.01]}},
    )
    assert sweep.status_code == 201 and sweep.json["submitted_by"] == mine.json["submitted_by"]
    registered = client.post("/api/data-folders", json={"path": folder_path, "name": "bobs"}, headers=bob)
    assert registered.status_code == 201
    mine_id = str(mine.json["id"])
    assert [row for row in audit_actions() if row[0] in ("bob", "alice")] == [
        ("alice", "data_folder.register", "1"),  # the folder_path fixture, with the admin's API_TOKEN
        ("bob", "job.submit", mine_id),
        ("bob", "job.cancel", mine_id),
        ("bob", "job.retry", mine_id),
        ("alice", "job.cancel", str(theirs)),
        ("bob", "sweep.submit", str(sweep.json["id"])),
        ("bob", "data_folder.register", "1"),
    ]


def test_api_refused_write_leaves_no_audit_row_and_no_change(client, team, folder_path):
    job_id = client.post(
        "/api/jobs", json={"kind": "train", "params": {**TRAIN, "data_dir": folder_path}}, headers=team["carol"]
    ).json["id"]
    before = audit_actions()
    refused(client.post(f"/api/jobs/{job_id}/cancel", headers=team["bob"]))
    assert client.get(f"/api/jobs/{job_id}", headers=team["bob"]).json["status"] == "queued"
    assert audit_actions() == before


def log_in(app, name: str):
    browser = app.test_client()
    assert login(browser, name, PASSWORD).status_code == 302
    return browser


def test_forms_viewer_sees_no_submit_links_and_is_refused(app, team, folder_path):
    viewer = log_in(app, "vic")
    page = viewer.get("/").get_data(as_text=True)
    assert "vic · viewer" in page and "/jobs/new/train" not in page and "/sweeps/new" not in page
    for url in ("/jobs/new/train", "/jobs/new/predict", "/sweeps/new", "/cross-validations/new"):
        assert "vic is a viewer: only members and admins may submit" in refused(viewer.get(url))
    token = csrf_token(viewer, "/")
    assert 'name="path"' not in viewer.get("/data-folders").get_data(as_text=True)
    refused(viewer.post("/data-folders", data={"path": folder_path, "name": "x", "csrf_token": token}))
    job_id = queued_job(folder_path)
    detail = viewer.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert 'id="cancel"' not in detail and "Finetune…" not in detail
    refused(viewer.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}))
    refused(viewer.post("/cross-validations/1/ensemble", data={"csrf_token": token}))
    assert not [row for row in audit_actions() if row[0] == "vic"]


def test_forms_member_changes_own_jobs_not_others(app, client, team, folder_path):
    carols = client.post(
        "/api/jobs", json={"kind": "train", "params": {**TRAIN, "data_dir": folder_path}}, headers=team["carol"]
    ).json["id"]
    member = log_in(app, "bob")
    token = csrf_token(member, "/")
    assert "/jobs/new/train" in member.get("/").get_data(as_text=True)
    submitted = member.post(
        "/jobs/new/train", data={"data_folder": "1", "epochs": "1", "image_size": "32", "csrf_token": token, "priority": "normal"}
    )
    assert submitted.status_code == 302, submitted.get_data(as_text=True)
    mine = int(submitted.location.rsplit("/", 1)[1])
    own_page = member.get(f"/jobs/{mine}").get_data(as_text=True)
    assert 'id="cancel"' in own_page and '<dd id="submitted-by">bob</dd>' in own_page
    other_page = member.get(f"/jobs/{carols}").get_data(as_text=True)
    assert 'id="cancel"' not in other_page and '<dd id="submitted-by">carol</dd>' in other_page
    assert "was submitted by someone else" in refused(member.post(f"/jobs/{carols}/cancel", data={"csrf_token": token}))
    assert member.post(f"/jobs/{mine}/cancel", data={"csrf_token": token}).status_code == 302
    registered = member.post("/data-folders", data={"path": folder_path, "name": "bobs", "csrf_token": token})
    assert registered.status_code == 302
    assert [row for row in audit_actions() if row[0] == "bob"] == [
        ("bob", "job.submit", str(mine)),
        ("bob", "job.cancel", str(mine)),
        ("bob", "data_folder.register", "1"),
    ]
    listed = member.get("/").get_data(as_text=True)
    assert '<td class="small" data-field="submitted_by">carol</td>' in listed


def test_the_settings_api_token_follows_its_users_state(client, team, folder_path):
    """The settings' API_TOKEN is alice's (ADMIN_USERNAME) as she is now: her jobs, her role, refused while disabled."""
    from sqlalchemy import select as select_rows

    from core.service.records import User

    with get_sessionmaker().begin() as session:
        alice = session.scalar(select_rows(User).where(User.username == "alice")).id
    root = add_user("root", "admin")  # another admin, so alice may be demoted and disabled
    assert client.get("/api/me", headers=LEGACY).json == {"id": alice, "username": "alice", "role": "admin"}
    submitted = client.post(
        "/api/jobs", json={"kind": "train", "params": {**TRAIN, "data_dir": folder_path}}, headers=LEGACY
    ).json
    assert (submitted["submitted_by"], submitted["submitted_by_name"]) == (alice, "alice")

    assert client.patch(f"/api/users/{alice}", json={"role": "member"}, headers=root).status_code == 200
    assert client.get("/api/me", headers=LEGACY).json == {"id": alice, "username": "alice", "role": "member"}
    assert refused(client.post("/api/users", json={"username": "mallory", "role": "admin"}, headers=LEGACY)) == (
        "alice is a member: only admins may add users"
    )
    assert refused(client.post(f"/api/jobs/{team_job(client, team['bob'], folder_path)}/cancel", headers=LEGACY)).endswith(
        "only its owner or an admin may change it"
    )

    assert client.patch(f"/api/users/{alice}", json={"disabled": True}, headers=root).status_code == 200
    assert client.get("/api/me", headers=LEGACY).status_code == 401
    assert (
        client.post("/api/jobs", json={"kind": "train", "params": {**TRAIN, "data_dir": folder_path}}, headers=LEGACY).status_code
        == 401
    )
    assert not [row for row in audit_actions() if row[0] == "alice" and row[1] == "user.add"]  # mallory never made


def team_job(client, headers: dict[str, str], folder_path: str) -> int:
    return client.post("/api/jobs", json={"kind": "train", "params": {**TRAIN, "data_dir": folder_path}}, headers=headers).json[
        "id"
    ]
