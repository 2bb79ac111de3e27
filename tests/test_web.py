"""Dashboard pages through Flask's test client: login, CSRF, headers, forms and their errors, downloads."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import insert, select

from core.service.db import get_sessionmaker
from core.service.records import Artifact, Job, utcnow
from tests.conftest import WEB_ADMIN
from tests.web_helpers import csrf_token, finished_train_job, login, queued_job, synthetic_folder


@pytest.fixture()
def user(client):
    """A logged-in client."""
    assert login(client, *WEB_ADMIN).status_code == 302
    return client


@pytest.fixture()
def folder(user, tmp_path):
    """A registered synthetic data folder: (id, path)."""
    path = synthetic_folder(tmp_path / "data")
    response = user.post(
        "/data-folders", data={"name": "synth", "path": str(path), "csrf_token": csrf_token(user, "/data-folders")}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    from core.service.records import DataFolder

    with get_sessionmaker().begin() as session:
        row = session.scalar(select(DataFolder))
        return row.id, row.path


def test_pages_need_login_and_wrong_password_is_one_line(client):
    for url in ("/", "/jobs/1", "/jobs/new/train", "/sweeps/new", "/compare", "/data-folders"):
        response = client.get(url)
        assert response.status_code == 302 and response.location.startswith("/login?next=")
    response = login(client, WEB_ADMIN[0], "wrong")
    assert response.status_code == 401 and "username or password: not recognised" in response.get_data(as_text=True)
    response = login(client, *WEB_ADMIN)
    assert response.status_code == 302 and response.location == "/"


def test_login_goes_back_only_to_local_pages(client):
    token = csrf_token(client)
    data = {"username": WEB_ADMIN[0], "password": WEB_ADMIN[1], "csrf_token": token}
    assert client.post("/login?next=/compare", data=data).location == "/compare"
    data["csrf_token"] = csrf_token(client)  # logging in starts a new session, with a new token
    assert client.post("/login?next=//evil.example/x", data=data).location == "/"


def test_csrf_is_required_on_forms(client):
    response = client.post("/login", data={"username": WEB_ADMIN[0], "password": WEB_ADMIN[1]})
    assert response.status_code == 400 and "csrf_token: The CSRF token is missing." in response.get_data(as_text=True)


def test_session_cookie_and_security_headers(client, app):
    response = login(client, *WEB_ADMIN)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    assert app.permanent_session_lifetime == timedelta(hours=8)
    page = client.get("/")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in page.headers["Content-Security-Policy"].split("script-src")[1].split(";")[0]
    assert page.headers["X-Frame-Options"] == "DENY" and page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "<script>" not in page.get_data(as_text=True)  # no inline script anywhere
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/")}).location == "/login"
    assert client.get("/").status_code == 302


def test_plotly_is_served_from_the_vendored_file_with_its_licence(client):
    import re
    from pathlib import Path

    static = Path(__file__).resolve().parents[1] / "web" / "static"
    response = client.get("/vendor/plotly-cartesian.min.js")
    assert response.status_code == 200 and response.mimetype == "text/javascript"
    bundle = (static / "plotly-cartesian.min.js").read_bytes()
    assert response.data == bundle and b"Licensed under the MIT license" in bundle[:300]
    assert "MIT License" in (static / "plotly.LICENSE.txt").read_text()
    # The partial bundle (issue 20: the full one, 4.8 MB, kept job pages waiting seconds), and every trace
    # type the dashboard's scripts draw is registered in it (scatter is plotly's default type).
    assert b"plotly.js (cartesian - minified) v4." in bundle[:100] and len(bundle) < 2_000_000
    assert not (static / "plotly.min.js").exists()
    bundled = set(re.findall(rb'moduleType:"trace",name:"(\w+)"', bundle))
    scripts = "".join(path.read_text() for path in static.glob("*.js") if "plotly" not in path.name)
    used = {name.encode() for name in re.findall(r'Plotly\.react\([^;]*?type: "(\w+)"', scripts, re.S)} | {b"scatter"}
    assert {b"bar", b"heatmap"} <= used and used <= bundled, used - bundled


def test_data_folder_registration_only_under_roots(user, tmp_path, folder):
    page = user.get("/data-folders").get_data(as_text=True)
    assert "synth" in page and "check passed" in page and "train.csv" in page
    token = csrf_token(user, "/data-folders")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (tmp_path / "data" / "sneaky").symlink_to(outside)
    cases = {
        str(outside): "is not under a data root",
        str(tmp_path / "data" / ".." / "elsewhere"): "is not under a data root",
        str(tmp_path / "data" / "sneaky"): "leads (through a symlink) to",
        "relative/path": "is not absolute",
        str(tmp_path / "data" / "missing"): "is not an existing folder",
        "": "path: give the absolute path",
    }
    for path, message in cases.items():
        response = user.post("/data-folders", data={"path": path, "csrf_token": token})
        html = response.get_data(as_text=True)
        assert response.status_code == 400 and message in html, path
        assert 'class="field grow has-error"' in html and 'class="field has-error"' not in html, path  # the error's field
    response = user.post("/data-folders", data={"path": str(tmp_path / "data"), "name": "synth", "csrf_token": token})
    assert response.status_code == 400 and "path: " + str(tmp_path / "data" / "sneaky") + " is a symlink to" in (
        response.get_data(as_text=True)
    )  # the data root holds a link out: registration reads nothing through it
    (tmp_path / "data" / "sneaky").unlink()
    response = user.post("/data-folders", data={"path": str(tmp_path / "data"), "name": "synth", "csrf_token": token})
    html = response.get_data(as_text=True)
    assert response.status_code == 409 and "name: a data folder named" in html
    assert 'class="field has-error"' in html and 'class="field grow has-error"' not in html


def test_train_form_is_generated_from_the_schema(user, folder):
    from core.engine.params import TrainParams

    page = user.get("/jobs/new/train").get_data(as_text=True)
    for name in TrainParams.model_fields:
        if name not in ("kind", "data_dir"):
            assert f'name="{name}"' in page, name
    assert 'name="data_folder"' in page and "synth" in page


def test_train_form_errors_are_shown_next_to_fields(user, folder):
    token = csrf_token(user, "/jobs/new/train")
    bad = {"csrf_token": token, "epochs": "0", "lr": "fast", "class_weights": "1,2,3", "image_size": "16"}
    page = user.post("/jobs/new/train", data=bad)
    text = page.get_data(as_text=True)
    assert page.status_code == 400
    assert 'role="alert">Please fix the fields marked below.' in text  # the forms' one banner
    assert 'id="error-data_folder"' in text
    assert 'id="error-epochs">Input should be greater than or equal to 1' in text
    assert 'id="error-lr">Input should be a valid number' in text
    assert 'id="error-class_weights">must be auto, none or two positive numbers' in text
    assert 'id="error-image_size">' in text
    page = user.post(
        "/jobs/new/train", data={"csrf_token": token, "data_folder": str(folder[0]), "epochs": "2", "warmup_epochs": "2"}
    )
    assert page.status_code == 400 and "warmup_epochs (2) must be fewer than epochs (2)" in page.get_data(as_text=True)


def test_train_form_queues_a_job(user, folder):
    token = csrf_token(user, "/jobs/new/train")
    data = {
        "csrf_token": token,
        "data_folder": str(folder[0]),
        "arch": "resnet18",
        "epochs": "2",
        "batch_size": "4",
        "optimizer": "sgd",
        "lr": "0.01",
        "schedule": "cosine",
        "class_weights": "auto",
        "image_size": "32",
        "augment": "on",
    }
    response = user.post("/jobs/new/train", data=data)
    assert response.status_code == 302
    job_id = int(response.location.rsplit("/", 1)[1])
    with get_sessionmaker().begin() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.data_dir, job.params["optimizer"], job.params["augment"], job.params["amp"]) == (
            "queued",
            folder[1],
            "sgd",
            True,
            False,
        )
    page = user.get(response.location).get_data(as_text=True)
    assert "Job #%d" % job_id in page and "queued" in page and "no live worker" in page


def test_predict_form_needs_a_parent_with_a_checkpoint(user, folder):
    token = csrf_token(user, "/jobs/new/predict")
    page = user.post("/jobs/new/predict", data={"csrf_token": token, "data_folder": str(folder[0]), "csv": "test.csv"})
    assert page.status_code == 400 and 'id="error-parent_id"' in page.get_data(as_text=True)
    queued = queued_job(folder[1])
    page = user.post(
        "/jobs/new/predict",
        data={"csrf_token": token, "data_folder": str(folder[0]), "csv": "test.csv", "parent_id": str(queued)},
    )
    assert page.status_code == 400 and f"job {queued} is queued and has no checkpoint yet" in page.get_data(as_text=True)
    trained = finished_train_job(folder[1])
    page = user.post(
        "/jobs/new/predict",
        data={"csrf_token": token, "data_folder": str(folder[0]), "csv": "../x.csv", "parent_id": str(trained)},
    )
    assert page.status_code == 400 and 'id="error-csv">give a file name' in page.get_data(as_text=True)
    form = user.get(f"/jobs/new/predict?parent={trained}").get_data(as_text=True)
    assert f'value="{trained}" selected' in form
    response = user.post(
        "/jobs/new/predict",
        data={
            "csrf_token": token,
            "data_folder": str(folder[0]),
            "csv": "test.csv",
            "parent_id": str(trained),
            "checkpoint_choice": "best",
        },
    )
    assert response.status_code == 302
    for kind in ("finetune", "evaluate"):
        response = user.post(
            f"/jobs/new/{kind}", data={"csrf_token": token, "data_folder": str(folder[0]), "parent_id": str(trained)}
        )
        assert response.status_code == 302, kind
    assert user.get("/jobs/new/bogus").status_code == 404


def test_sweep_form_queues_the_grid(user, folder):
    token = csrf_token(user, "/sweeps/new")
    base = {"csrf_token": token, "data_folder": str(folder[0]), "epochs": "2", "image_size": "32"}
    page = user.post("/sweeps/new", data=base)
    assert page.status_code == 400 and 'id="error-grid">give at least one field' in page.get_data(as_text=True)
    assert 'role="alert">Please fix the fields marked below.' in page.get_data(as_text=True)
    page = user.post("/sweeps/new", data={**base, "grid_lr": "0.001, -1"})
    assert page.status_code == 400 and "grid point lr=-1: lr: Input should be greater than 0" in page.get_data(as_text=True)
    response = user.post("/sweeps/new", data={**base, "grid_lr": "0.001, 0.01", "grid_class_weights": "auto; 1.2,1.0"})
    assert response.status_code == 302 and "sweep=" in response.location
    page = user.get(response.location).get_data(as_text=True)
    assert 'Jobs <span class="muted" data-live="total">(4)</span>' in page


def test_job_detail_shows_metrics_and_downloads_recorded_files_only(user, folder):
    job_id = finished_train_job(folder[1])
    page = user.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert "succeeded" in page and 'id="loss-chart"' in page and 'id="confusion-chart"' in page
    assert "75.0%" in page and "best.pt" in page and "metrics.csv" in page
    with get_sessionmaker().begin() as session:
        artifacts = {a.name: a.id for a in session.scalars(select(Artifact).where(Artifact.job_id == job_id))}
        escaping = session.execute(
            insert(Artifact)
            .values(
                job_id=job_id,
                kind="metrics",
                name="passwd",
                path="../../../etc/passwd",
                size_bytes=1,
                sha256="0" * 64,
                created_at=utcnow(),
            )
            .returning(Artifact.id)
        ).scalar_one()
    response = user.get(f"/jobs/{job_id}/artifacts/{artifacts['metrics.csv']}")
    assert response.status_code == 200 and response.data.startswith(b"epoch,train_loss")
    assert "attachment" in response.headers["Content-Disposition"]
    assert user.get(f"/jobs/{job_id}/artifacts/{escaping}").status_code == 404
    other = finished_train_job(folder[1])
    assert user.get(f"/jobs/{other}/artifacts/{artifacts['metrics.csv']}").status_code == 404
    assert user.get("/jobs/999999").status_code == 404


def test_cancel_and_retry_buttons(user, folder):
    job_id = queued_job(folder[1])
    token = csrf_token(user, f"/jobs/{job_id}")
    response = user.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token}, follow_redirects=True)
    assert f"Job {job_id}: cancelled." in response.get_data(as_text=True)
    response = user.post(f"/jobs/{job_id}/cancel", data={"csrf_token": token})
    assert response.status_code == 409 and f"job {job_id} is already cancelled; nothing to cancel" in response.get_data(
        as_text=True
    )
    response = user.post(f"/jobs/{job_id}/retry", data={"csrf_token": token}, follow_redirects=True)
    assert f"Job {job_id} queued again." in response.get_data(as_text=True)
    assert user.get(f"/jobs/{job_id}/cancel").status_code == 405
    assert user.post("/jobs/424242/retry", data={"csrf_token": token}).status_code == 404


def test_compare_page_and_its_errors(user, folder):
    first, second = finished_train_job(folder[1], accuracy=0.7), finished_train_job(folder[1], accuracy=0.8)
    page = user.get(f"/compare?ids={first}&ids={second}").get_data(as_text=True)
    assert f"#{first}" in page and f"#{second}" in page and "70.0%" in page and "80.0%" in page
    assert 'id="compare-loss"' in page
    for query, message in ((f"ids={first}", "ids: choose between 2 and"), ("ids=a,b", "ids: give job ids")):
        response = user.get(f"/compare?{query}")
        assert response.status_code == 400 and message in response.get_data(as_text=True)
    assert user.get(f"/compare?ids={first},999999").status_code == 404
    waiting = queued_job(folder[1])  # no epoch yet: its columns are blank, not a 500
    page = user.get(f"/compare?ids={first}&ids={waiting}")
    assert page.status_code == 200 and f"#{waiting}" in page.get_data(as_text=True)


def test_job_list_filters_and_rejects_bad_filters(user, folder):
    queued_job(folder[1])
    finished_train_job(folder[1])
    assert user.get("/?status=succeeded").get_data(as_text=True).count('data-job-id="') == 1
    assert user.get("/?kind=train").get_data(as_text=True).count('data-job-id="') == 2
    for query, message in (
        ("status=done", "status: must be one of"),
        ("kind=x", "kind: must be one of"),
        ("page=zero", "page: must be a whole number"),
        ("page=0", "page: must be between 1 and 1000000"),
    ):
        response = user.get(f"/?{query}")
        assert response.status_code == 400 and message in response.get_data(as_text=True)


def test_job_list_pages_through_10000_jobs(user, folder):
    """Each page holds its 50 rows; how long a page takes is a benchmark figure (bench/list_bench.py)."""
    now = utcnow()
    rows = [
        {
            "kind": "train",
            "status": ("queued", "running", "succeeded", "failed")[i % 4],
            "params": {"arch": "resnet18"},
            "data_dir": folder[1],
            "queue": "gpu",
            "attempts": 0,
            "max_attempts": 3,
            "cancel_requested": False,
            "created_at": now,
            "progress": 0.5,
            "best_valid_accuracy": 0.8,
        }
        for i in range(10_000)
    ]
    with get_sessionmaker().begin() as session:
        session.execute(insert(Job), rows)
    for url, newest in (("/", 10_000), ("/?page=100", 5_050), ("/?status=queued", 9_997), ("/?status=queued&page=50", 197)):
        page = user.get(url).get_data(as_text=True)
        ids = [int(i) for i in re.findall(r'data-job-id="(\d+)"', page)]
        assert len(ids) == 50 and ids[0] == newest and ids == sorted(ids, reverse=True), (url, ids[:3])


def test_leukemia_web_command_is_registered():
    from leukemia.cli import main

    result = CliRunner().invoke(main, ["web", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--host" in result.output


def test_the_app_reads_the_settings_it_was_made_with(app):
    """create_app(settings): its code reads that object, not the process's settings (issue 25 item 5)."""
    from core.service.settings import get_settings
    from web import create_app

    given = get_settings().model_copy(update={"metrics_token": "made-with-this"})
    bearer = {"Authorization": "Bearer made-with-this"}
    assert create_app(given, test_config={"TESTING": True}).test_client().get("/metrics", headers=bearer).status_code == 200
    assert app.test_client().get("/metrics", headers=bearer).status_code == 401  # the process's settings have no such token


def test_creating_the_app_writes_nothing_the_explicit_steps_do(app, tmp_path, monkeypatch, settings_override):
    """create_app reads settings and stored secrets only; `leukemia migrate`'s step makes the schema and the
    admin, `leukemia web`'s also the secrets; then the WSGI entry builds the app with the stored token."""
    import importlib
    import sys

    from core.common.errors import UserInputError
    from core.service.records import User
    from core.service.settings import get_settings
    from web import create_app
    from web.auth import make_secrets, prepare_database

    home = tmp_path / "fresh-home"
    # SECRET_KEY and API_TOKEN unset (the app fixture's): here the embedded default's stored ones
    settings_override(
        LEUKEMIA_HOME=str(home), ADMIN_USERNAME="ops", ADMIN_PASSWORD="secret-pass", SECRET_KEY=None, API_TOKEN=None
    )
    with pytest.raises(UserInputError, match=r"^SECRET_KEY: not set, and .*secret_key holds none"):
        create_app()
    assert not home.exists()  # no database, no secret, not even the folder

    prepare_database()
    make_secrets()
    made = sorted(path.name for path in home.iterdir() if not path.name.startswith("leukemia.db-"))  # not WAL files
    assert made == ["api_token", "leukemia.db", "secret_key"]
    with get_sessionmaker().begin() as session:
        assert session.scalar(select(User.username)) == "ops"
    monkeypatch.delitem(sys.modules, "web.wsgi", raising=False)  # build it here, whoever imported it before
    module = importlib.import_module("web.wsgi")
    monkeypatch.delitem(sys.modules, "web.wsgi")
    assert sorted(path.name for path in home.iterdir() if not path.name.startswith("leukemia.db-")) == made
    # No API_TOKEN in the environment: the one make_secrets kept in LEUKEMIA_HOME is the one that works.
    token = (home / "api_token").read_text().strip()
    assert len(token) >= 32 and get_settings().api_token_or_stored == token
    client = module.app.test_client()
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert client.get("/api/jobs", headers={"Authorization": f"Bearer {token}x"}).status_code == 401


def test_train_form_image_size_defaults_to_the_folders(user, folder):
    """The synthetic folder's images are all 32 px: the form says so, and a blank image size becomes 32, not 450."""
    form = user.get("/jobs/new/train").get_data(as_text=True)
    assert "· 32 px images</option>" in form and 'name="image_size" value=""' in form
    token = csrf_token(user, "/jobs/new/train")
    response = user.post("/jobs/new/train", data={"csrf_token": token, "data_folder": str(folder[0]), "epochs": "1"})
    assert response.status_code == 302, response.get_data(as_text=True)
    with get_sessionmaker().begin() as session:
        job = session.get(Job, int(response.location.rsplit("/", 1)[1]))
        assert job.params["image_size"] == 32


def test_evaluate_page_has_the_per_subject_card_and_says_what_a_coarse_heat_map_can_show(user, folder):
    """The per-subject table is drawn from the results API into its card (tests/test_dashboard_browser.py);
    beside the heat maps, a note when the model's image size leaves layer4 coarser than 4×4 cells."""
    from core.service import jobs

    notes = {}
    for size in (32, 64, 96, 128):
        train_id = finished_train_job(folder[1])
        with get_sessionmaker().begin() as session:
            train = session.get(Job, train_id)
            train.params = {**train.params, "image_size": size}  # the size its checkpoint was trained at
            evaluate_id = jobs.create_job(
                session, jobs.JobRequest(kind="evaluate", params={"data_dir": folder[1], "csv": "valid.csv"}, parent_id=train_id)
            ).id
        notes[size] = user.get(f"/jobs/{evaluate_id}").get_data(as_text=True)
    for size, page in notes.items():
        assert 'id="subjects-card" hidden' in page and 'id="gallery-card" hidden' in page
    assert "At 32 px layer4 is a single cell" in notes[32]
    assert "At 64 px layer4 is 2×2 cells: the map can only say which quarter of the image pushes towards ALL" in notes[64]
    assert "At 96 px layer4 is 3×3 cells" in notes[96] and 'id="heatmap-note"' not in notes[128]
    train_page = user.get(f"/jobs/{finished_train_job(folder[1])}").get_data(as_text=True)
    assert 'id="subjects-card"' not in train_page and 'id="heatmap-note"' not in train_page


def test_favicon_is_linked_from_every_page_and_served_where_browsers_look(client):
    login_page = client.get("/login").get_data(as_text=True)
    assert '<link rel="icon" type="image/svg+xml" href="/static/favicon.svg">' in login_page
    for url in ("/favicon.ico", "/static/favicon.svg"):  # no login needed: the login page has the icon too
        response = client.get(url)
        assert response.status_code == 200 and response.mimetype == "image/svg+xml", url
        assert response.data.startswith(b"<svg") and len(response.data) < 1000
