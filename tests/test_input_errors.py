"""No 500 from input: each request below once answered 500 and must be a 400 or 404 naming the
field; a bounded hypothesis fuzz over every dashboard route's forms and query strings keeps it so."""

from __future__ import annotations

import os
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.service.settings import get_settings
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import csrf_token, finished_train_job, login, queued_job
from web import forms

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}


@pytest.fixture()
def user(client):
    assert login(client, *WEB_ADMIN).status_code == 302
    return client


def page_error(response) -> str:
    """The message of an HTML error page or a form's error, as one line of text."""
    return " ".join(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True)).split())


def test_compare_a_job_without_epochs_is_not_a_500(user, folder_path):
    from core.service.db import get_sessionmaker
    from core.service.jobs import claim_job, finish_job

    queued = queued_job(folder_path)
    failed = queued_job(folder_path)
    with get_sessionmaker().begin() as session:
        claim_job(session, failed, owner="w", host="h")
        finish_job(session, failed, "w", "failed", error="data_dir: gone")
    finished = finished_train_job(folder_path)
    for ids in ([queued, failed], [failed, finished], [finished, queued]):
        response = user.get("/compare", query_string={"ids": ids})
        assert response.status_code == 200, page_error(response)
        assert f"#{ids[0]}" in response.get_data(as_text=True)


def test_a_path_component_over_255_characters_or_a_symlink_loop_is_a_400(user, client, tmp_path):
    root = tmp_path / "data"
    loop = root / "loop"
    os.symlink(loop, loop)
    for bad in (root / ("a" * 300), root / "x" / ("b" * 256) / "c", loop, loop / "deeper"):
        response = client.post("/api/data-folders", json={"path": str(bad)}, headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == "path", (bad, response.json)
        form = user.post("/data-folders", data={"name": "", "path": str(bad), "csrf_token": csrf_token(user, "/data-folders")})
        assert form.status_code == 400 and "path:" in page_error(form), str(bad)[-40:]


@pytest.mark.parametrize("route", ["/api/jobs", "/api/sweeps"])
def test_kind_that_is_not_a_string_is_a_400(client, route):
    for kind in (["train"], {"train": 1}, 7, None):
        response = client.post(route, json={"kind": kind, "params": {}, "grid": {"lr": [0.1]}}, headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == "kind", (kind, response.json)


@pytest.mark.parametrize("route", ["/api/jobs", "/api/sweeps", "/api/data-folders"])
def test_json_nested_100000_deep_is_a_400(client, route):
    for body in ("[" * 100_000 + "]" * 100_000, '{"a":' * 100_000 + "1" + "}" * 100_000):
        response = client.post(route, data=body, content_type="application/json", headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == "body", response.json


def test_a_lone_surrogate_is_a_400_naming_the_field(client, folder_path):
    raw = '{"kind": "train", "params": {"data_dir": "\\ud800"}}'
    response = client.post("/api/jobs", data=raw, content_type="application/json", headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "data_dir", response.json
    for body, field in (
        ('{"path": "%s", "name": "x\\ud800"}' % folder_path, "name"),
        ('{"path": "%s\\udfff"}' % folder_path, "path"),
    ):
        response = client.post("/api/data-folders", data=body, content_type="application/json", headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == field, response.json
    raw = '{"kind": "train", "base_params": {"data_dir": "%s"}, "grid": {"lr": [0.1, 0.2]}, "name": "s\\ud800"}' % folder_path
    response = client.post("/api/sweeps", data=raw, content_type="application/json", headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "name", response.json


def test_a_page_number_past_any_row_is_a_400_not_an_overflow(user, client):
    for page in ("9223372036854775807", "99999999999999999999999"):
        response = user.get(f"/?page={page}")
        assert response.status_code == 400 and "page:" in page_error(response), page_error(response)[:300]
    for page in ("9223372036854775807", "1000001"):
        response = client.get(f"/api/jobs?page={page}", headers=AUTH)
        assert response.status_code == 400 and response.json["field"] == "page"


@pytest.mark.parametrize("target", ["/%0d%0aSet-Cookie:x=1", "/%0aX:1", "/%5cevil.example/x", "/%09/evil.example"])
def test_a_login_next_with_a_line_break_or_backslash_goes_home(client, target):
    data = {"username": WEB_ADMIN[0], "password": WEB_ADMIN[1], "csrf_token": csrf_token(client)}
    response = client.post(f"/login?next={target}", data=data)
    assert response.status_code == 302 and response.location == "/"
    assert "x=1" not in " ".join(response.headers.getlist("Set-Cookie"))


# --- fuzz: every route of the app, its path, query and form (or JSON) parameters --------------------

TEXT = st.text(st.characters(codec="utf-8"), max_size=40)  # any character a browser can send: NUL, controls, RTL...
EDGES = st.sampled_from(
    [
        "",
        " ",
        "0",
        "-1",
        "1",
        "9223372036854775807",
        "1e309",
        "nan",
        "-inf",
        "a" * 300,
        "../..",
        "//x",
        "\\x",
        "\x00",
        "\r\n",
        "true",
        "null",
        "{}",
        "%00",
        "test.csv",
        "train",
        "adam",
        "0.5,0.5",
        "1e-300;1e300",
    ]
)
NUMBER_TEXT = st.one_of(
    st.sampled_from(["1", "2", "3", "0", "-1", str(2**63 - 1), str(2**63), "9" * 30, "1.5", "1e3"]), st.integers().map(str)
)
VALUE = st.one_of(EDGES, TEXT, NUMBER_TEXT, st.floats().map(str))
PATH_INT = st.one_of(st.sampled_from([0, 1, 2, 3]), st.integers(0, 2**80))
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | TEXT | EDGES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT | EDGES, inner, max_size=3),
    max_leaves=12,
)
TRAIN_NAMES = [field.name for field in forms.form_fields("train")]
JOB_FORM = sorted(
    {f.name for kind in ("train", "finetune", "evaluate", "predict") for f in forms.form_fields(kind)}
    | {"data_folder", "parent_id", "queue"}
)
NUMERIC = {
    f.name for kind in ("train", "finetune", "evaluate", "predict") for f in forms.form_fields(kind) if f.input == "number"
} | {
    "page",
    "per_page",
    "sweep",
    "sweep_id",
    "parent",
    "parent_id",
    "data_folder",
    "ids",
    "folds",
    "median_min_finished",
    "median_grace",
}
# Query and form fields per endpoint; the test fails when a route is added without an entry here.
FIELDS: dict[str, tuple[list[str], list[str]]] = {
    "static": ([], []),
    "views.plotly_js": ([], []),
    "views.favicon": ([], []),
    "auth.login": (["next"], ["username", "password"]),
    "auth.logout": ([], []),
    "views.job_list": (["status", "kind", "sweep", "tag", "page"], []),
    "views.job_list_live": (["status", "kind", "sweep", "tag", "page"], []),
    "views.job_detail": ([], []),
    "views.job_live": ([], []),
    "views.cancel": ([], []),
    "views.retry": ([], []),
    "views.download": ([], []),
    "submit.new_job": (["parent"], JOB_FORM),
    "submit.new_sweep": (
        [],
        TRAIN_NAMES
        + [f"grid_{name}" for name in forms.SWEEP_FIELDS]
        + ["name", "data_folder", "queue"]
        + ["median_metric", "median_min_finished", "median_grace"],
    ),
    "views.compare": (["ids"], []),
    "views.data_folders": ([], ["name", "path"]),
    "api.health": ([], []),
    "metrics.metrics": ([], []),
    "api.openapi": ([], []),
    "api.get_job": ([], []),
    "api.cancel_job": ([], []),
    "api.retry_job": ([], []),
    "api.job_metrics": ([], []),
    "api.job_artifacts": ([], []),
    "api.download_artifact": ([], []),
    "api.get_sweep": ([], []),
    "api.list_data_folders": ([], []),
    "api.list_jobs": (["status", "kind", "sweep_id", "tag", "page", "per_page"], []),
    "api.list_sweeps": (["tag", "page", "per_page"], []),
    "api.submit_job": ([], ["kind", "params", "parent_id", "queue"]),
    "api.submit_sweep": ([], ["kind", "base_params", "grid", "name", "parent_id", "queue", "early_stopping"]),
    "api.register_data_folder": ([], ["path", "name"]),
    "cv.new_cross_validation": ([], TRAIN_NAMES + ["folds", "release_folds", "name", "data_folder", "queue"]),
    "cv.cross_validations": ([], []),
    "cv.cross_validation": ([], []),
    "cv.cross_validation_live": ([], []),
    "cv.out_of_fold": ([], []),
    "cv.ensemble": ([], ["kind", "split", "tta", "queue"]),
    "api.submit_cross_validation": ([], ["params", "folds", "release_folds", "name", "queue"]),
    "api.get_cross_validation": ([], []),
    "api.submit_ensemble": ([], ["kind", "split", "tta", "queue"]),
    "api.job_results": ([], []),
    "api.job_images": ([], []),
    "api.job_image_thumbnail": ([], []),
    "api.job_explanation": ([], []),
    "views.delete_job": ([], []),
    "views.delete_sweep": ([], []),
    "api.delete_job": ([], []),
    "api.delete_sweep": ([], []),
    "api.disk_use": ([], []),
    "cv.delete_cross_validation": ([], []),
    "api.delete_cross_validation": ([], []),
    "users.user_list": ([], ["username", "role", "password"]),
    "users.set_role": ([], ["role"]),
    "users.disable": ([], []),
    "users.enable": ([], []),
    "users.reset_password": ([], []),
    "users.tokens": ([], ["name"]),
    "users.revoke_token": ([], []),
    "users.audit_log": (["page"], []),
    "api.me": ([], []),
    "api.list_users": ([], []),
    "api.add_user": ([], ["username", "role", "password"]),
    "api.update_user": ([], ["role", "disabled"]),
    "api.reset_password": ([], []),
    "api.list_tokens": ([], []),
    "api.create_token": ([], ["name"]),
    "api.revoke_token": ([], []),
    "api.audit_log": (["page", "per_page"], []),
    "api.edit_job": ([], ["priority", "description", "tags", "add_tags", "remove_tags", "retention"]),
    "api.edit_sweep": ([], ["priority", "description", "tags", "add_tags", "remove_tags", "retention"]),
    "views.edit_job": ([], ["priority", "description", "tags", "retention"]),
    "views.edit_sweep": ([], ["priority", "description", "tags", "retention"]),
    "webhooks.webhook_list": ([], ["url", "events", "secret"]),
    "webhooks.set_enabled": ([], ["enabled", "back"]),
    "webhooks.delete": ([], []),
    "webhooks.send_test": ([], []),
    "webhooks.history": (["page"], []),
    "webhooks.redeliver": ([], []),
    "api.list_webhooks": ([], []),
    "api.create_webhook": ([], ["url", "events", "secret"]),
    "api.update_webhook": ([], ["url", "events", "enabled"]),
    "api.delete_webhook": ([], []),
    "api.list_deliveries": (["page", "per_page"], []),
    "api.ping_webhook": ([], []),
    "api.redeliver": ([], []),
}


def arguments(names: list[str], special: dict[str, st.SearchStrategy]):
    """Some of the named fields (and a stray one), each with zero to two values: numbers for numeric fields."""

    def values(name: str) -> st.SearchStrategy:
        return st.lists(special.get(name, NUMBER_TEXT if name in NUMERIC else VALUE), max_size=2)

    return st.fixed_dictionaries({}, optional={name: values(name) for name in names + ["stray"]})


def json_body(names: list[str]):
    params = st.dictionaries(st.sampled_from(TRAIN_NAMES + ["data_dir", "csv", "checkpoint"]), JSON, max_size=5)
    return st.dictionaries(st.sampled_from(names), JSON | params, max_size=len(names))


PLACEHOLDER = re.compile(r"<(?:(\w+):)?(\w+)>")


def url_of(rule, draw) -> str:
    """The rule's URL with each placeholder drawn: integers for <int:...>, any text otherwise."""

    def value(match: re.Match) -> str:
        converter = match.group(1)
        drawn = draw(PATH_INT) if converter == "int" else draw(VALUE)
        return quote(str(drawn), safe="/" if converter == "path" else "")

    return PLACEHOLDER.sub(value, rule.rule)


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_no_route_answers_500_to_any_parameters(app, user, folder_path):
    """Every route, with drawn path, query and form (or JSON) values: never a 500. Bounded: 40 examples per
    route and method with parameters (6 without), derandomized so a failure reproduces."""
    finished_train_job(folder_path)
    queued_job(folder_path)
    routes = list(app.url_map.iter_rules())
    missing = sorted({r.endpoint for r in routes} - FIELDS.keys())
    assert not missing, f"add these routes and their query and form fields to FIELDS: {missing}"
    anonymous = app.test_client()
    token = csrf_token(user, "/")
    root = get_settings().data_root_paths[0]
    os.symlink(root / "loop", root / "loop")
    special = {
        "path": st.sampled_from([folder_path, str(root / "loop"), str(root / ("a" * 300)), "/etc", "relative"]) | TEXT,
        "next": st.sampled_from(["/compare", "//evil.example", "/\\evil.example", "/\r\nSet-Cookie:x=1"]) | TEXT,
    }
    for rule in routes:
        query_names, body_names = FIELDS[rule.endpoint]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):

            @given(data=st.data())
            @settings(
                max_examples=40 if query_names or body_names else 6,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=True,
            )
            def no_500(data):
                url = url_of(rule, data.draw)
                query = data.draw(arguments(query_names, special)) if query_names else {}
                sender = anonymous if rule.endpoint.startswith("auth.") else user
                kwargs = {"query_string": query}
                if method == "POST" and rule.endpoint.startswith("api."):
                    kwargs.update(json=data.draw(json_body(body_names)) if body_names else None, headers=AUTH)
                elif method == "POST":
                    form_token = csrf_token(anonymous) if sender is anonymous else token
                    kwargs["data"] = {**data.draw(arguments(body_names, special)), "csrf_token": form_token}
                elif rule.endpoint.startswith("api."):
                    kwargs["headers"] = AUTH
                response = sender.open(url, method=method, **kwargs)
                assert response.status_code < 500, (method, url, kwargs, response.get_data(as_text=True)[:300])

            no_500()
