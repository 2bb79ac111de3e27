"""The JSON API through Flask's test client: auth, every action, every validation error, and a
schemathesis run against /api/openapi.json (no 500, responses match the document)."""

from __future__ import annotations

import re

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import checks as st_checks
from schemathesis.core.failures import FailureGroup

from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import finished_train_job, login, queued_job, synthetic_folder

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}


@pytest.fixture()
def api(client):
    """A client that sends the bearer token."""

    class Api:
        def get(self, url, **kw):
            return client.get(url, headers=AUTH, **kw)

        def post(self, url, **kw):
            return client.post(url, headers=AUTH, **kw)

    return Api()


def test_token_is_required_except_for_health_and_document(client):
    assert client.get("/api/health").json == {"status": "ok", "database": "reachable"}
    assert client.get("/api/openapi.json").json["openapi"].startswith("3.")
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = client.get("/api/jobs", headers=headers)
        assert response.status_code == 401 and response.json["error"].startswith("authorization:")
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_submit_job_validation_errors_name_the_field(api, folder_path):
    cases = [
        ({"data": "x", "content_type": "text/plain"}, "body"),
        ({"json": []}, "body"),
        ({"json": {"kind": "dance", "params": {}}}, "kind"),
        ({"json": {"kind": "train", "params": []}}, "params"),
        ({"json": {"kind": "train", "params": {"data_dir": folder_path, "epochs": 0}}}, "epochs"),
        ({"json": {"kind": "train", "params": {"data_dir": folder_path, "typo": 1}}}, "typo"),
        ({"json": {"kind": "train", "params": {"data_dir": "/etc"}}}, "data_dir"),
        ({"json": {"kind": "train", "params": {}}}, "data_dir"),
        (
            {"json": {"kind": "predict", "params": {"data_dir": folder_path, "csv": "t.csv", "checkpoints": ["/x.pt"]}}},
            "checkpoints",
        ),
        ({"json": {"kind": "predict", "params": {"data_dir": folder_path, "csv": "../../etc/passwd"}, "parent_id": 1}}, "csv"),
        ({"json": {"kind": "predict", "params": {"data_dir": folder_path, "csv": "test.csv"}, "parent_id": "one"}}, "parent_id"),
        ({"json": {"kind": "predict", "params": {"data_dir": folder_path, "csv": "test.csv"}, "parent_id": 999}}, "parent_id"),
        ({"json": {"kind": "train", "params": {"data_dir": folder_path}, "queue": 5}}, "queue"),
        ({"json": {"kind": "train", "parent_id": 1, "params": {"data_dir": folder_path}}}, "parent_id"),
    ]
    for request, field in cases:
        response = api.post("/api/jobs", **request)
        assert response.status_code == 400, (request, response.json)
        assert response.json["field"] == field and "\n" not in response.json["error"], (request, response.json)


def test_submit_list_get_cancel_retry(api, folder_path):
    response = api.post("/api/jobs", json={"kind": "train", "params": {"data_dir": folder_path, "epochs": 2, "image_size": 32}})
    assert response.status_code == 201
    job = response.json
    assert (job["status"], job["queue"], job["queue_position"], job["queue_served"]) == ("queued", "gpu", 1, False)
    assert api.get(f"/api/jobs/{job['id']}").json["params"]["epochs"] == 2
    page = api.get("/api/jobs?status=queued&kind=train&per_page=5").json
    assert page["total"] == 1 and page["jobs"][0]["id"] == job["id"]
    for query, field in (
        ("status=x", "status"),
        ("kind=x", "kind"),
        ("page=0", "page"),
        ("per_page=1000", "per_page"),
        ("page=a", "page"),
        ("sweep_id=-1", "sweep_id"),
    ):
        response = api.get(f"/api/jobs?{query}")
        assert response.status_code == 400 and response.json["field"] == field, query
    assert api.post(f"/api/jobs/{job['id']}/cancel").json["status"] == "cancelled"
    response = api.post(f"/api/jobs/{job['id']}/cancel")
    assert response.status_code == 409 and "already cancelled" in response.json["error"]
    assert api.post(f"/api/jobs/{job['id']}/retry").json["status"] == "queued"
    response = api.post(f"/api/jobs/{job['id']}/retry")
    assert response.status_code == 409 and "only failed or cancelled jobs can be retried" in response.json["error"]
    for url in (
        "/api/jobs/999",
        "/api/jobs/99999999999999999999999",
        "/api/jobs/999/metrics",
        "/api/jobs/999/artifacts",
        "/api/jobs/999/artifacts/1",
        "/api/sweeps/999",
    ):
        response = api.get(url)
        assert response.status_code == 404 and "not found" in response.json["error"], url
    assert api.post("/api/jobs/999/cancel").status_code == 404


def test_state_conflicts_are_409_with_their_field_and_documented(api, client, folder_path, tmp_path):
    """A well-formed request the current state refuses (core.errors.StateConflict) is a 409, never a 400."""
    queued, finished = queued_job(folder_path), finished_train_job(folder_path)
    twin = synthetic_folder(tmp_path / "data", "twin")
    sweep = api.post(
        "/api/sweeps",
        json={"kind": "train", "base_params": {"data_dir": folder_path, "epochs": 2}, "grid": {"lr": [0.001, 0.01]}},
    ).json["id"]
    admin_id = client.get("/api/me", headers=AUTH).json["id"]
    conflicts = [
        (client.delete(f"/api/jobs/{queued}", headers=AUTH), f"job {queued} is queued: cancel it first", None),
        (client.delete(f"/api/sweeps/{sweep}", headers=AUTH), "still queued or running; cancel them first", None),
        (api.post(f"/api/jobs/{finished}/cancel"), f"job {finished} is already succeeded; nothing to cancel", None),
        (api.post(f"/api/jobs/{finished}/retry"), "only failed or cancelled jobs can be retried", None),
        (api.post(f"/api/jobs/{queued}/retry"), "only failed or cancelled jobs can be retried", None),
        (client.patch(f"/api/users/{admin_id}", json={"disabled": True}, headers=AUTH), "last enabled admin", "user"),
        (client.patch(f"/api/users/{admin_id}", json={"role": "member"}, headers=AUTH), "last enabled admin", "user"),
        (api.post("/api/users", json={"username": WEB_ADMIN[0]}), f"username: '{WEB_ADMIN[0]}' is taken", "username"),
        (
            api.post("/api/data-folders", json={"path": str(twin), "name": "synth"}),
            "name: a data folder named 'synth' is already registered",
            "name",
        ),
    ]
    for response, message, field in conflicts:
        assert response.status_code == 409 and message in response.json["error"], response.json
        assert response.json.get("field") == field, response.json
    document = client.get("/api/openapi.json").json
    for path, method in (
        ("/api/jobs/{job_id}", "delete"),
        ("/api/sweeps/{sweep_id}", "delete"),
        ("/api/jobs/{job_id}/cancel", "post"),
        ("/api/jobs/{job_id}/retry", "post"),
        ("/api/users/{user_id}", "patch"),
        ("/api/users", "post"),
        ("/api/data-folders", "post"),
        ("/api/cross-validations/{cv_id}/ensemble", "post"),
    ):
        assert "409" in document["paths"][path][method]["responses"], (path, method)


def test_an_unknown_body_field_is_refused_naming_it_and_documented(client, folder_path):
    """A typo in any JSON body is a 400 naming the field, not silently ignored; the document says so."""
    params = {"data_dir": folder_path}
    bodies = [
        ("post", "/api/jobs", {"kind": "train", "params": params}),
        ("post", "/api/sweeps", {"kind": "train", "base_params": params, "grid": {"lr": [0.001]}}),
        ("post", "/api/cross-validations", {"params": params}),
        ("post", "/api/cross-validations/1/ensemble", {"split": "final"}),
        ("post", "/api/data-folders", {"path": folder_path}),
        ("post", "/api/users", {"username": "zed"}),
        ("patch", "/api/users/1", {"role": "admin"}),
        ("post", "/api/tokens", {"name": "laptop"}),
        ("post", "/api/webhooks", {"url": "https://example.org/hook"}),
        ("patch", "/api/webhooks/1", {"enabled": True}),
        ("patch", f"/api/jobs/{queued_job(folder_path)}", {"priority": "high"}),
    ]
    for method, url, body in bodies:
        response = getattr(client, method)(url, json={**body, "surprise": 1}, headers=AUTH)
        assert response.status_code == 400, (url, response.json)
        assert response.json == {"error": "surprise: Extra inputs are not permitted", "field": "surprise"}, url
    assert client.get("/api/jobs", headers=AUTH).json["total"] == 1  # the queued job edited above, nothing new
    document = client.get("/api/openapi.json").json
    bodies = [
        op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        for item in document["paths"].values()
        for op in item.values()
        if "requestBody" in op
    ]
    assert len(bodies) == 12  # every POST and PATCH with a body
    for name in bodies:
        assert document["components"]["schemas"][name]["additionalProperties"] is False, name


def test_a_whole_number_written_2_0_is_an_integer(api, folder_path):
    """JSON has one number type: 2.0 and 2e0 are the integer 2 (JSON Schema's integer), 2.5 is not."""
    response = api.post(
        "/api/jobs",
        json={
            "kind": "train",
            "params": {"data_dir": folder_path, "epochs": 2.0, "lr": 1},
            "parent_id": None,
            "options": {"tags": ["a"]},
        },
    )
    assert response.status_code == 201, response.json
    assert (response.json["params"]["epochs"], response.json["params"]["lr"]) == (2, 1.0)
    body = '{"kind": "train", "base_params": {"data_dir": "%s"}, "grid": {"epochs": [2e0, 3]}, ' % folder_path
    response = api.post(
        "/api/sweeps",
        data=body + '"early_stopping": {"metric": "valid_loss", "min_finished": 1e0}}',
        content_type="application/json",
    )
    assert response.status_code == 201 and response.json["early_stopping"]["min_finished"] == 1, response.json
    assert [job["params"]["epochs"] for job in api.get("/api/jobs?sweep_id=1").json["jobs"]] == [3, 2]
    response = api.post("/api/jobs", json={"kind": "train", "params": {"data_dir": folder_path, "epochs": 2.5}})
    assert response.status_code == 400 and response.json["field"] == "epochs"


def test_a_trailing_line_break_is_no_tag_retention_nor_user_name(client, folder_path):
    """The checks match the whole value (a regex's $ alone would let a final line break through)."""
    job = queued_job(folder_path)
    for method, url, body, field in (
        ("patch", f"/api/jobs/{job}", {"add_tags": ["ok\n"]}, "add_tags"),
        (
            "post",
            "/api/jobs",
            {"kind": "train", "params": {"data_dir": folder_path}, "options": {"retention": "best\n"}},
            "options",
        ),
        ("post", "/api/users", {"username": "bob\n"}, "username"),
    ):
        response = getattr(client, method)(url, json=body, headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == field, (body, response.json)


def test_metrics_artifacts_and_download(api, folder_path):
    job_id = finished_train_job(folder_path)
    metrics = api.get(f"/api/jobs/{job_id}/metrics").json["epochs"]
    assert [m["epoch"] for m in metrics] == [1, 2] and metrics[-1]["confusion"] == [[1, 1], [0, 2]]
    artifacts = api.get(f"/api/jobs/{job_id}/artifacts").json["artifacts"]
    assert sorted(a["name"] for a in artifacts) == ["best.pt", "metrics.csv"]
    csv = next(a for a in artifacts if a["name"] == "metrics.csv")
    response = api.get(f"/api/jobs/{job_id}/artifacts/{csv['id']}")
    assert response.status_code == 200 and response.data.startswith(b"epoch,")
    assert response.mimetype == "text/csv"
    checkpoint = next(a for a in artifacts if a["name"] == "best.pt")  # never a guess from the name (a SNES page table)
    assert api.get(f"/api/jobs/{job_id}/artifacts/{checkpoint['id']}").mimetype == "application/octet-stream"
    other = queued_job(folder_path)
    assert api.get(f"/api/jobs/{other}/artifacts/{csv['id']}").status_code == 404
    response = api.post(
        "/api/jobs", json={"kind": "predict", "parent_id": job_id, "params": {"data_dir": folder_path, "csv": "test.csv"}}
    )
    assert response.status_code == 201 and response.json["queue"] == "cpu" and response.json["parent_id"] == job_id


def test_sweeps(api, folder_path):
    body = {
        "kind": "train",
        "base_params": {"data_dir": folder_path, "epochs": 2},
        "grid": {"lr": [0.001, 0.01], "arch": ["resnet18"]},
    }
    response = api.post("/api/sweeps", json=body)
    assert response.status_code == 201 and len(response.json["job_ids"]) == 2
    sweep_id = response.json["id"]
    assert api.get(f"/api/sweeps/{sweep_id}").json["grid"] == body["grid"]
    assert api.get("/api/sweeps").json["total"] == 1
    assert api.get(f"/api/jobs?sweep_id={sweep_id}").json["total"] == 2
    for grid, field in (({}, "grid"), ({"lr": []}, "grid"), ({"lr": [-1]}, "grid"), ({"data_dir": ["/etc"]}, "grid")):
        response = api.post("/api/sweeps", json={**body, "grid": grid})
        assert response.status_code == 400 and response.json["field"] == field, grid
    response = api.post("/api/sweeps", json={**body, "base_params": {"data_dir": "/nowhere"}})
    assert response.status_code == 400 and response.json["field"] == "data_dir"


def test_an_unreachable_broker_is_a_503_and_the_job_is_failed_with_a_line_that_names_no_host(
    api, folder_path, settings_override, caplog
):
    """The job's error is shown to every user: it says what happened and what to do, not where the broker is
    (issue 23: it held the broker's host and port); the log, which the operator reads, has the details."""
    import logging

    settings_override(BROKER_URL="redis://127.0.0.1:1/0")  # nothing listens on port 1
    with caplog.at_level(logging.WARNING, logger="leukemia.dispatch"):
        response = api.post("/api/jobs", json={"kind": "train", "params": {"data_dir": folder_path}})
    assert response.status_code == 503 and "field" not in response.json, response.json
    settings_override(BROKER_URL=None)  # back to the embedded broker of the app fixture
    job = api.get("/api/jobs").json["jobs"][0]
    assert job["status"] == "failed" and job["error"] == response.json["error"] == (
        f"could not send job {job['id']} to the broker, which is unavailable; the job is marked failed: retry it when "
        "the broker is back (the service's log has the details)"
    )
    [logged] = [r.getMessage() for r in caplog.records if r.name == "leukemia.dispatch"]
    assert logged.startswith(f"could not send job {job['id']} to the broker: ") and "127.0.0.1" in logged, logged


def test_data_folders(api, folder_path, tmp_path):
    assert [f["path"] for f in api.get("/api/data-folders").json["data_folders"]] == [folder_path]
    for body, field, message in (
        ({"path": "/etc"}, "path", "is not under a data root"),
        ({}, "path", "path: Field required"),
        ({"path": str(tmp_path / "data" / "nope")}, "path", "is not an existing folder"),
        ({"path": folder_path, "name": 7}, "name", "name: Input should be a valid string"),
        ({"path": folder_path, "name": " "}, "name", "name: String should have at least 1"),
    ):
        response = api.post("/api/data-folders", json=body)
        assert response.status_code == 400 and message in response.json["error"], (body, response.json)
        assert response.json["field"] == field, (body, response.json)


def test_wrong_method_and_size_limit(api, client, app):
    response = client.delete("/api/jobs", headers=AUTH)
    assert response.status_code == 405 and "GET" in response.headers["Allow"] and "error" in response.json
    response = api.post("/api/jobs", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1), content_type="application/json")
    assert response.status_code == 413 and "error" in response.json
    assert client.get("/api/nothing-here", headers=AUTH).json["error"]


def test_a_bug_is_logged_and_answered_as_a_one_line_500(app, client, caplog):
    @app.get("/api/boom")
    def boom():
        raise RuntimeError("bug")

    response = client.get("/api/boom", headers=AUTH)
    assert response.status_code == 500 and response.json == {"error": "internal error: the server hit a bug; it has been logged"}
    assert "RuntimeError: bug" in caplog.text


def test_the_document_is_valid_openapi_3_1_with_an_id_and_a_tag_per_operation(client):
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.validators import OpenAPIV31SpecValidator

    document = client.get("/api/openapi.json").json
    validate(document, cls=OpenAPIV31SpecValidator)
    operations = [op for item in document["paths"].values() for op in item.values()]
    assert len(operations) == 44  # 15 + the three of cross-validations + the four of results + editJob, editSweep
    # + the nine of users + deleteJob, deleteSweep, deleteCrossValidation, getDiskUse + the seven of webhooks
    ids = [op["operationId"] for op in operations]
    assert len(set(ids)) == len(ids) and all(op["tags"] for op in operations)
    tags = {tag["name"] for tag in document["tags"]}
    assert (
        {t for op in operations for t in op["tags"]}
        == tags
        == {"service", "jobs", "results", "sweeps", "cross-validations", "data folders", "users", "disk", "webhooks"}
    )


def test_a_job_answer_is_its_row_without_the_lease_plus_its_queue_facts():
    """web.api.schemas.Job names the row's fields once more only to type them; this holds the two equal. Its options
    are JobOptions' fields, each one (extra_options holds those without a column of their own)."""
    from core.service.job_options import JobOptions
    from core.service.records import Job
    from web.api import schemas

    columns = {column.name for column in Job.__table__.columns}
    internal = {
        "lease_owner",
        "heartbeat_at",
        "run_key",
        "legacy_run_dir",
        "origin",
    }  # the worker's lease and run folder, the CLI's note
    derived = {"finished", "queue_position", "queue_served", "submitted_by_name"}
    assert set(schemas.Job.model_fields) == columns - internal - {"extra_options"} | derived | set(JobOptions.model_fields)


def accepts_schema_valid_requests(ctx, response, case):
    """schemathesis' positive_data_acceptance, less the one rule the document cannot state: a job's data_dir must be
    a registered data folder, and a folder registered must lie under a configured data root (a 400 naming it)."""
    if response.status_code == 400 and response.json().get("field") == DEPLOYMENT_RULES.get(case.operation.label):
        return None
    return st_checks.positive_data_acceptance(ctx, response, case)


DEPLOYMENT_RULES = {
    "POST /api/jobs": "data_dir",
    "POST /api/sweeps": "data_dir",
    "POST /api/cross-validations": "data_dir",
    "POST /api/data-folders": "path",
}
CONFORMANCE_CHECKS = [
    st_checks.not_a_server_error,
    st_checks.status_code_conformance,
    st_checks.content_type_conformance,
    st_checks.response_schema_conformance,
    accepts_schema_valid_requests,
]


def seed_rows(client, folder_path) -> dict[str, list[dict[str, int]]]:
    """Rows for the generated requests to act on, as path parameters by the names an operation takes: jobs queued
    and finished (with a file of every kind a job records), a sweep, a member, a token, a webhook, a delivery."""
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.settings import get_settings

    queued, finished = queued_job(folder_path), finished_train_job(folder_path)
    run_folder = get_settings().resolved_artifacts_dir / f"job-{finished}"
    files = {
        "curves.png": ("plot", b"\x89PNG\r\n\x1a\n"),
        "metrics.json": ("metrics", b"[]"),
        "explanations.zip": ("explanation", b"PK\x05\x06" + bytes(18)),
    }
    with get_sessionmaker().begin() as session:
        for name, (kind, data) in files.items():
            (run_folder / name).write_bytes(data)
            jobs.add_artifact(session, finished, kind, run_folder / name)
    artifacts = [a["id"] for a in client.get(f"/api/jobs/{finished}/artifacts", headers=AUTH).json["artifacts"]]
    sweep = client.post(
        "/api/sweeps",
        headers=AUTH,
        json={"kind": "train", "base_params": {"data_dir": folder_path}, "grid": {"lr": [0.001, 0.01]}},
    ).json
    member = client.post("/api/users", headers=AUTH, json={"username": "bob", "role": "member"}).json["user"]["id"]
    token = client.post("/api/tokens", headers=AUTH, json={"name": "laptop"}).json["token"]["id"]
    webhook = client.post("/api/webhooks", headers=AUTH, json={"url": "https://receiver.example/hook"}).json["id"]
    delivery = client.post(f"/api/webhooks/{webhook}/test", headers=AUTH).json["id"]
    # The admin (id 1) is left out: disabling or demoting them is a 409 shown elsewhere, and disabling them
    # after making bob an admin would leave the rest of the run without a token.
    return {
        "job_id": [{"job_id": job} for job in (queued, finished, *sweep["job_ids"])],
        "job_id,artifact_id": [{"job_id": finished, "artifact_id": artifact} for artifact in artifacts],
        "job_id,index": [{"job_id": finished, "index": 1}],
        "sweep_id": [{"sweep_id": sweep["id"]}],
        "user_id": [{"user_id": member}],
        "token_id": [{"token_id": token}],
        "webhook_id": [{"webhook_id": webhook}],
        "delivery_id": [{"delivery_id": delivery}],
    }


def test_api_conforms_to_its_document(app, client, folder_path, settings_override):
    """schemathesis against /api/openapi.json, every operation, on rows that exist and on generated ids: no 5xx, no
    answer outside the document (status, content type, body), no schema-valid request refused but by the data-folder
    rule. A few examples per row keep it to about a minute."""

    # Which addresses webhooks may reach is a deployment rule too (core.service.webhooks.transport): here, any.
    settings_override(WEBHOOK_ALLOWED_NETWORKS="0.0.0.0/0,::/0")
    rows = seed_rows(client, folder_path)
    schema = schemathesis.openapi.from_wsgi("/api/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 43  # 14 + the three of cross-validations + the four of results + editJob, editSweep
    # + the nine of users + deleteJob, deleteSweep, deleteCrossValidation, getDiskUse + the seven of webhooks
    failures = []
    for operation in sorted(operations, key=lambda op: op.method.upper() == "DELETE"):  # deletes last: rows stay
        for row in [*rows.get(",".join(re.findall(r"{(\w+)}", operation.path)), []), None]:  # None: generated ids

            @given(case=operation.as_strategy(path_parameters=row))
            @settings(
                max_examples=4 if row else 8,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=True,
                phases=[Phase.generate],
            )
            def conforms(case):
                case.call_and_validate(headers=AUTH, checks=CONFORMANCE_CHECKS)

            try:
                conforms()
            except (AssertionError, FailureGroup) as failure:  # each operation's first failure, all reported together
                failures.append(f"{operation.label} {row or ''}: {failure}")
    assert not failures, f"{len(failures)} operations failed:\n" + "\n\n".join(failures)


UNKNOWN = 2_000_000_000  # a storable id that names nothing


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/jobs/{id}"),
        ("patch", "/api/jobs/{id}"),
        ("post", "/api/jobs/{id}/cancel"),
        ("post", "/api/jobs/{id}/retry"),
        ("delete", "/api/jobs/{id}"),
        ("get", "/api/jobs/{id}/metrics"),
        ("get", "/api/jobs/{id}/results"),
        ("get", "/api/jobs/{id}/images/1/thumbnail"),
        ("get", "/api/jobs/{id}/artifacts/{id}"),
        ("get", "/api/sweeps/{id}"),
        ("delete", "/api/sweeps/{id}"),
        ("get", "/api/cross-validations/{id}"),
        ("delete", "/api/cross-validations/{id}"),
        ("patch", "/api/users/{id}"),
        ("delete", "/api/tokens/{id}"),
        ("patch", "/api/webhooks/{id}"),
        ("delete", "/api/webhooks/{id}"),
        ("post", "/api/webhooks/deliveries/{id}/redeliver"),
        ("get", "/jobs/{id}"),
        ("get", "/cross-validations/{id}"),
        ("get", "/cross-validations/{id}/oof.csv"),
        ("get", "/admin/webhooks/{id}"),
    ],
)
def test_an_id_that_names_nothing_is_one_404_from_the_service(client, method, path):
    """Every route asks the service, whose NotFound (core.common.errors) is the one 404: no view checks first."""
    login(client, *WEB_ADMIN)
    body = (
        {
            "/api/jobs/{id}": {"priority": "high"},
            "/api/users/{id}": {"role": "viewer"},
            "/api/webhooks/{id}": {"enabled": False},
        }.get(path)
        if method == "patch"
        else None
    )
    response = getattr(client, method)(path.format(id=UNKNOWN), json=body, headers=AUTH)
    assert response.status_code == 404, (path, response.status_code, response.get_data(as_text=True)[:300])
    text = response.json["error"] if path.startswith("/api/") else response.get_data(as_text=True)
    assert str(UNKNOWN) in text and ("not found" in text or "no " in text)


def test_no_view_answers_404_on_its_own():
    """Unknown ids are the services' to report (NotFound), so no web module calls abort(404)."""
    from pathlib import Path

    web = Path(__file__).resolve().parents[1] / "web"
    assert [str(p) for p in web.rglob("*.py") if "abort(404" in p.read_text()] == []
