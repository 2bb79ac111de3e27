"""Strict input: the JSON API takes JSON types as they are (forms and the CLI still parse text), names
and file names refuse NUL and control characters, and a sweep grid's csv values get the single job's check."""

from __future__ import annotations

import pytest

from core.common.errors import UserInputError
from core.engine.params import parse_params
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import csrf_token, login

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}


def submit(client, params: dict, kind: str = "train", **envelope):
    return client.post("/api/jobs", json={"kind": kind, "params": params, **envelope}, headers=AUTH)


@pytest.mark.parametrize(
    "field, value",
    [
        ("epochs", True),
        ("image_size", "64"),
        ("compile", "yes"),
        ("lr", "0.1"),
        ("batch_size", 8.5),
        ("augment", 1),
        ("epochs", "2"),
    ],
)
def test_the_api_takes_json_types_as_they_are(client, folder_path, field, value):
    response = submit(client, {"data_dir": folder_path, "epochs": 1, "image_size": 32, field: value})
    assert response.status_code == 400 and response.json["field"] == field, response.json


def test_json_numbers_of_the_right_kind_are_taken(client, folder_path):
    response = submit(client, {"data_dir": folder_path, "epochs": 1, "image_size": 32, "lr": 1, "compile": False})
    assert response.status_code == 201, response.json
    assert response.json["params"]["lr"] == 1.0


def test_a_sweep_grid_is_strict_too(client, folder_path):
    body = {
        "kind": "train",
        "base_params": {"data_dir": folder_path, "epochs": 1, "image_size": 32},
        "grid": {"image_size": [32, "48"]},
    }
    response = client.post("/api/sweeps", json=body, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "grid", response.json
    assert "image_size" in response.json["error"] and "48" in response.json["error"]


def test_forms_and_the_cli_still_parse_text(client, folder_path):
    assert parse_params("train", {"data_dir": "d", "epochs": "3", "compile": "true"}).epochs == 3
    assert login(client, *WEB_ADMIN).status_code == 302
    from sqlalchemy import select

    from core.service.db import get_sessionmaker
    from core.service.records import DataFolder

    with get_sessionmaker().begin() as session:
        folder_id = session.scalar(select(DataFolder.id))
    form = {
        "data_folder": str(folder_id),
        "epochs": "1",
        "image_size": "32",
        "batch_size": "4",
        "csrf_token": csrf_token(client, "/jobs/new/train"),
    }
    response = client.post("/jobs/new/train", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)[-800:]


@pytest.mark.parametrize("bad", ["test\x00.csv", "te\nst.csv", "test.csv\r", "\x1b[31mtest.csv", "te\tst.csv", "test\x85.csv"])
def test_control_characters_are_refused_in_file_names(client, folder_path, bad):
    response = submit(client, {"data_dir": folder_path, "csv": bad}, kind="evaluate", parent_id=1)
    assert response.status_code == 400 and response.json["field"] == "csv", response.json
    assert "control character" in response.json["error"]
    with pytest.raises(UserInputError) as caught:  # the CLI's path: the same schema
        parse_params("evaluate", {"data_dir": "d", "csv": bad})
    assert caught.value.field == "csv"


def test_control_characters_are_refused_in_names(client, folder_path, tmp_path):
    base = {"kind": "train", "base_params": {"data_dir": folder_path, "epochs": 1, "image_size": 32}, "grid": {"lr": [0.1, 0.01]}}
    response = client.post("/api/sweeps", json={**base, "name": "lr\x00sweep"}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "name", response.json
    response = submit(client, {"data_dir": folder_path, "epochs": 1, "image_size": 32}, queue="gp\x00u")
    assert response.status_code == 400 and response.json["field"] == "queue", response.json
    response = client.post("/api/data-folders", json={"path": folder_path, "name": "syn\x07th"}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "name", response.json
    odd = tmp_path / "data" / "line\nbreak"
    odd.mkdir()
    response = client.post("/api/data-folders", json={"path": str(odd)}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "path", response.json
    assert login(client, *WEB_ADMIN).status_code == 302
    form = {"name": "bad\x00name", "path": folder_path, "csrf_token": csrf_token(client, "/data-folders")}
    response = client.post("/data-folders", data=form)
    assert response.status_code == 400 and "control character" in response.get_data(as_text=True)


def test_a_sweep_grid_gets_the_csv_check_of_a_single_job(client, folder_path):
    body = {
        "kind": "evaluate",
        "base_params": {"data_dir": folder_path},
        "parent_id": 1,
        "grid": {"csv": ["test.csv", "../../../etc/passwd"]},
    }
    response = client.post("/api/sweeps", json=body, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "grid", response.json
    assert "csv" in response.json["error"] and "etc/passwd" in response.json["error"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"folds": "3"}, "folds"),
        ({"release_folds": "yes"}, "release_folds"),
        ({"params": {"epochs": True}}, "epochs"),
        ({"name": "cv\x00"}, "name"),
        ({"folds": 3.5}, "folds"),
    ],
)
def test_cross_validation_requests_are_strict_too(client, folder_path, change, field):
    body = {"params": {"data_dir": folder_path, "epochs": 1, "image_size": 32}, "folds": 2}
    if "params" in change:
        body["params"].update(change.pop("params"))
    response = client.post("/api/cross-validations", json={**body, **change}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == field, response.json


def test_an_ensemble_request_is_strict(client):
    response = client.post("/api/cross-validations/1/ensemble", json={"split": "final", "tta": "yes"}, headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "tta", response.json


def test_what_the_document_forbids_the_api_refuses(client, folder_path):
    """An empty tag filter and an empty retention do not match the document's patterns (schemathesis sent both and
    they were taken): each is a 400 naming its field. The pages and the CLI, which say "" for none, still may."""
    import re

    from tests.web_helpers import queued_job

    document = client.get("/api/openapi.json").json
    [tag] = [p for p in document["paths"]["/api/jobs"]["get"]["parameters"] if p["name"] == "tag"]
    retention = document["components"]["schemas"]["JobOptionsEdit"]["properties"]["retention"]
    assert re.search(tag["schema"]["anyOf"][0]["pattern"], "") is None and re.search(retention["pattern"], "") is None
    job = queued_job(folder_path)
    sweep = client.post(
        "/api/sweeps", headers=AUTH, json={"kind": "train", "base_params": {"data_dir": folder_path}, "grid": {"lr": [0.1, 0.01]}}
    ).json["id"]
    taken = []
    for method, url, body, field in (
        ("get", "/api/jobs?tag=", None, "tag"),
        ("get", "/api/sweeps?tag=", None, "tag"),
        ("get", "/api/jobs?page=", None, "page"),
        ("get", "/api/jobs?status=", None, "status"),
        ("patch", f"/api/jobs/{job}", {"retention": ""}, "retention"),
        ("patch", f"/api/sweeps/{sweep}", {"retention": ""}, "retention"),
        ("post", "/api/jobs", {"kind": "train", "params": {"data_dir": folder_path}, "options": {"retention": ""}}, "options"),
    ):  # the message says options.retention
        answer = getattr(client, method)(url, json=body, headers=AUTH)
        if (answer.status_code, answer.json.get("field")) != (400, field):
            taken.append((method, url, body, answer.status_code))
    assert taken == []
    assert client.get("/api/jobs?tag=Tag.1", headers=AUTH).status_code == 200
    assert client.patch(f"/api/jobs/{job}", json={"retention": None}, headers=AUTH).status_code == 200
