"""Issue 10, item 2: the database vanishing while the service runs (SQLite files deleted, a
PostgreSQL database dropped) fails health and refuses every write with one line; nothing is
"accepted" into a file that no longer exists, and no empty database is made in its place."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import synthetic_folder

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
ADMIN = "host=127.0.0.1 user=postgres dbname=postgres"


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path, settings_override):
    """The dashboard on a fresh database of each kind; `vanish()` deletes or drops it."""
    from web import create_app
    from web.auth import prepare_database

    home = tmp_path / "home"
    name = None
    if request.param == "postgresql":
        name = f"leukemia_test_{secrets.token_hex(4)}"
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
    settings_override(
        LEUKEMIA_HOME=str(home),
        DATA_ROOTS=str(tmp_path / "data"),
        API_TOKEN=WEB_API_TOKEN,
        SECRET_KEY="test-secret",
        BROKER_URL=None,
        ARTIFACTS_DIR=None,
        CACHE_DIR=None,
        DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}" if name else None,
        ADMIN_USERNAME=WEB_ADMIN[0],
        ADMIN_PASSWORD=WEB_ADMIN[1],
    )
    prepare_database()  # the explicit step (`leukemia migrate`): creating the app writes nothing
    app = create_app(test_config={"TESTING": True})

    def vanish() -> None:
        if name is None:
            for path in home.glob("leukemia.db*"):
                path.unlink()
        else:
            with psycopg.connect(ADMIN, autocommit=True) as admin:
                admin.execute(f"DROP DATABASE {name} WITH (FORCE)")

    yield app.test_client(), vanish, home
    settings_override.undo()  # the engines let go of the database before it is dropped
    if name is not None:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def test_health_fails_and_writes_are_refused_once_the_database_is_gone(backend, tmp_path: Path) -> None:
    from leukemia.cli import main as leukemia_cli

    client, vanish, home = backend
    folder = synthetic_folder(tmp_path / "data")
    assert client.get("/api/health").status_code == 200
    registered = client.post("/api/data-folders", headers=AUTH, json={"path": str(folder), "name": "before"})
    assert registered.status_code == 201, registered.json

    vanish()

    health = client.get("/api/health")
    assert health.status_code == 503 and health.json["status"] == "unavailable", health.json
    for method, url, body in [
        ("post", "/api/data-folders", {"path": str(folder), "name": "after"}),
        ("post", "/api/jobs", {"kind": "train", "params": {"data_dir": str(folder), "epochs": 1}}),
        ("get", "/api/jobs", None),
    ]:
        response = getattr(client, method)(url, headers=AUTH, json=body)
        assert response.status_code == 503, (url, response.status_code, response.json)
        assert response.json["error"].startswith("database unavailable: ") and "\n" not in response.json["error"]

    result = CliRunner().invoke(leukemia_cli, ["submit", "train", "--data", str(folder), "--epochs", "1"])
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: database unavailable: "), result.stderr
    assert not list(home.glob("leukemia.db*"))  # nobody made an empty database in its place


def test_health_and_refusals_name_no_host_user_or_database(backend, caplog) -> None:
    """Issue 20: anyone may ask /api/health, and an unauthenticated request also reaches the database (to
    check its token): neither answer may tell them where the database is or who it logs in as."""
    from sqlalchemy.engine import make_url

    from core.service.settings import get_settings

    client, vanish, home = backend
    url = make_url(get_settings().resolved_database_url)
    secrets_of_the_connection = (
        [str(home), "leukemia.db"]
        if url.get_backend_name() == "sqlite"
        else [url.host, url.username, url.database, str(url.port), "postgresql"]
    )
    healthy = client.get("/api/health")
    assert healthy.status_code == 200 and healthy.json == {"status": "ok", "database": "reachable"}

    vanish()

    answers = [
        client.get("/api/health"),
        client.get("/api/jobs", headers=AUTH),
        client.get("/api/jobs", headers={"Authorization": "Bearer lk_a-guessed-user-token"}),
    ]
    for answer in answers:
        text = answer.get_data(as_text=True)
        assert answer.status_code == 503 and "database unavailable" in text, text
        assert not [secret for secret in secrets_of_the_connection if secret in text], text
    assert answers[0].json == {
        "status": "unavailable",
        "database": "database unavailable: the service cannot use its database now (the web's log says why)",
    }
    # The operator still learns why, from the log.
    assert any(url.database in record.getMessage() for record in caplog.records if record.name == "leukemia.web")
