"""docker-compose.yml kept honest without a Docker engine.

Static: the file parses; every command is a real `leukemia` command (or gunicorn with real
options); healthchecks and depends_on conditions are in place; secrets are required, never
defaulted; every variable is a real setting and documented (docs/deploy.md's table is checked
against core.service.settings.Settings); the Dockerfile pins the same PyTorch as scripts/setup.sh.

Live: the migrate, web and worker commands run exactly as compose writes them, with compose's
environment after interpolation, against the real PostgreSQL and Redis of this machine
(hosts mapped to 127.0.0.1, a fresh database, container paths mapped to temporary folders),
and a train job and an evaluate job go end to end through the HTTP API."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import click
import pytest
import yaml

from conftest import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
SECRETS = ("POSTGRES_PASSWORD", "SECRET_KEY", "API_TOKEN", "ADMIN_PASSWORD")
APP_SERVICES = ("migrate", "web", "gpu-worker", "cpu-worker")
LONG_RUNNING = ("redis", "postgres", "web", "gpu-worker", "cpu-worker")
VENV_BIN = Path(sys.executable).parent


# --- compose's variable interpolation (compose-spec "Interpolation") ---------------------------

INTERPOLATION = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<invalid>))"
)


class MissingVariable(Exception):
    """A `${VAR:?message}` whose variable is unset or empty: compose refuses to start."""


def interpolate(value, env: dict[str, str]):
    """The value with ${VAR}, ${VAR:-default}, ${VAR:?error}, $$ resolved as compose does."""
    if isinstance(value, dict):
        return {key: interpolate(item, env) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match) -> str:
        if match.group("escaped"):
            return "$"
        if match.group("invalid") is not None:
            raise ValueError(f"invalid interpolation in {value!r}: a literal $ must be written $$")
        name = match.group("braced") or match.group("named")
        op, arg = match.group("op"), match.group("arg") or ""
        current = env.get(name)
        unset_or_empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset_or_empty else current
        if op in (":?", "?"):
            if unset_or_empty:
                raise MissingVariable(f"required variable {name} is missing a value: {arg}")
            return current
        if op in (":+", "+"):
            return "" if unset_or_empty else arg
        return current or ""

    return INTERPOLATION.sub(replace, value)


def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: {line!r} is not NAME=value"
            values[name.strip()] = value.strip()
    return values


def filled_env() -> dict[str, str]:
    """.env.example with its secrets filled in, as a user's .env would be."""
    return {**env_example(), **{name: f"test-{name.lower()}-{secrets.token_hex(4)}" for name in SECRETS}}


def referenced_variables() -> set[str]:
    text = COMPOSE_FILE.read_text()
    return {m.group("braced") or m.group("named") for m in INTERPOLATION.finditer(text) if m.group("braced") or m.group("named")}


# --- static checks ----------------------------------------------------------------------------


def test_services_healthchecks_and_start_order():
    services = compose()["services"]
    assert set(services) == {"redis", "postgres", "migrate", "web", "gpu-worker", "cpu-worker"}
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert any("/api/health" in part for part in services["web"]["healthcheck"]["test"])
    for name in LONG_RUNNING:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["interval"] and check["retries"], name
        assert services[name]["restart"] == "unless-stopped", name
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "gpu-worker", "cpu-worker"):
        assert services[name]["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        mounts = {volume.rsplit(":", 1)[1] for volume in interpolate(services[name]["volumes"], filled_env())}
        assert {"/data", "/artifacts", "/cache"} <= mounts, name
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert set(compose()["volumes"]) == {"pgdata", "redisdata", "artifacts", "cache"}
    assert services["web"]["ports"] == ["${WEB_PORT:-8000}:8000"]


def test_gpu_worker_reserves_one_nvidia_gpu_and_cpu_worker_none():
    services = compose()["services"]
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert services["gpu-worker"]["command"][:4] == ["leukemia", "worker", "--queues", "gpu"]
    assert services["cpu-worker"]["command"][:4] == ["leukemia", "worker", "--queues", "cpu"]
    assert "deploy" not in services["cpu-worker"]
    # The GPU image is PyPI's (CUDA) torch; everything else uses the CPU wheel index.
    assert "args" not in services["gpu-worker"]["build"]
    for name in ("migrate", "web", "cpu-worker"):
        assert services[name]["build"]["args"]["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"


def test_secrets_are_required_and_never_defaulted():
    text = COMPOSE_FILE.read_text()
    for name in SECRETS:
        uses = re.findall(r"\$\{" + name + r"([^}]*)\}", text)
        assert uses, f"{name} is not used in docker-compose.yml"
        assert all(use.startswith(":?") and len(use) > 2 for use in uses), f"{name}: every use must be ${{{name}:?message}}"
        assert env_example()[name] == "", f".env.example must leave {name} empty"
        for missing in ({}, {name: ""}):
            values = {**filled_env(), **missing}
            if not missing:
                values.pop(name)
            with pytest.raises(MissingVariable, match=name):
                interpolate(compose(), values)
    interpolate(compose(), filled_env())  # all four given: it resolves


def resolve_leukemia_command(argv: list[str]) -> click.Command:
    """The click command `leukemia ARGV...` runs, after parsing its options (unknown ones fail)."""
    from leukemia import cli

    assert argv[0] in cli.COMMANDS, f"`leukemia {argv[0]}` is not in leukemia.cli.COMMANDS"
    command: click.Command = cli.main
    args = list(argv)
    path = ["leukemia"]
    while isinstance(command, click.Group):
        name, *args = args
        sub = command.get_command(click.Context(command), name)
        assert sub is not None, f"`{' '.join(path)} {name}` is not a command"
        path.append(name)
        command = sub
    try:
        command.make_context(" ".join(path), list(args))
    except (click.UsageError, SystemExit) as error:
        raise AssertionError(f"`leukemia {' '.join(argv)}` is refused by its click command: {error}") from None
    return command


def test_every_command_is_a_real_entry_point():
    from gunicorn.config import Config

    services = interpolate(compose(), filled_env())["services"]
    for name in APP_SERVICES:
        argv = services[name]["command"]
        if argv[0] == "leukemia":
            resolve_leukemia_command(argv[1:])
        else:
            assert argv[0] == "gunicorn" and name == "web"
            parsed = Config().parser().parse_args(argv[1:])
            assert parsed.bind == ["0.0.0.0:8000"] and parsed.args == ["web.wsgi:app"]
        checks = services[name].get("healthcheck", {}).get("test", [])
        if checks[1:3] == ["python", "-c"]:
            compile(checks[3], f"{name} healthcheck", "exec")
    with pytest.raises(AssertionError, match="--no-such-option"):  # the resolver does refuse what does not exist
        resolve_leukemia_command(["worker", "--no-such-option"])
    with pytest.raises(AssertionError, match="not a command"):
        resolve_leukemia_command(["db", "downgrade"])


def documented_settings() -> dict[str, tuple[str, str]]:
    """Every `| \\`NAME\\` | default | meaning |` row of docs/deploy.md's settings tables."""
    rows = re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \| (.*?) \| (.*?) \|$", DEPLOY_DOC.read_text(), re.MULTILINE)
    return {name: (default.strip(), meaning.strip()) for name, default, meaning in rows}


def expected_defaults() -> dict[str, str]:
    """The default of every core.service.settings.Settings field, as docs/deploy.md writes it."""
    from core.service.settings import Settings

    home_placeholder = "/LEUKEMIA_HOME_PLACEHOLDER"
    settings = Settings(_env_file=None, leukemia_home=Path(home_placeholder))
    expected = {}
    for field_name, info in Settings.model_fields.items():
        resolved = getattr(settings, f"resolved_{field_name}", None)
        if field_name == "data_roots":
            resolved = ":".join(str(p) for p in settings.data_root_paths)
        if field_name == "leukemia_home":
            text = str(info.default).replace(str(Path.home()), "~")
        elif resolved is not None:
            text = str(resolved).replace(home_placeholder, "$LEUKEMIA_HOME")
        elif info.default == "" or info.default is None:
            text = "(empty)"
        else:
            text = f"{info.default:g}" if isinstance(info.default, (int, float)) else str(info.default)
        env_name = str(info.validation_alias or field_name).upper()  # the variable a user sets
        expected[env_name] = text if text == "(empty)" else f"`{text}`"
    return expected


def test_settings_table_matches_core_settings(monkeypatch):
    for name in ("LEUKEMIA_HOME", "DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR", "DATA_ROOTS"):
        monkeypatch.delenv(name, raising=False)
    documented = documented_settings()
    expected = expected_defaults()
    table = "\n".join(f"| `{name}` | {default} | ... |" for name, default in expected.items())
    for name, default in expected.items():
        assert name in documented, f"docs/deploy.md lacks the setting {name}; expected rows:\n{table}"
        assert documented[name][0] == default, f"docs/deploy.md: {name} default is {documented[name][0]}, Settings says {default}"
        assert documented[name][1], f"docs/deploy.md: {name} has no meaning"


def test_every_variable_is_a_setting_and_documented():
    from core.service.settings import Settings

    documented = documented_settings()
    settings_names = {name.upper() for name in Settings.model_fields}
    services = compose()["services"]
    for name in APP_SERVICES:
        for variable in services[name]["environment"]:
            assert variable in settings_names or variable in documented, f"{name}: {variable} is neither a setting nor documented"
    for variable in referenced_variables() | set(env_example()):
        assert variable in documented, f"{variable} (docker-compose.yml / .env.example) is not documented in docs/deploy.md"
    # .env.example offers exactly what compose reads.
    assert set(env_example()) == referenced_variables()


def test_dockerfile_pins_setup_torch_and_keeps_runtime_small():
    dockerfile = (REPO / "Dockerfile").read_text()
    setup = (REPO / "scripts" / "setup.sh").read_text()
    pinned = dict(re.findall(r"(torch|torchvision)==([\w.+]+)", setup))
    assert re.search(rf"ARG TORCH_VERSION={re.escape(pinned['torch'])}\n", dockerfile)
    assert re.search(rf"ARG TORCHVISION_VERSION={re.escape(pinned['torchvision'])}\n", dockerfile)
    stages = re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.MULTILINE)
    assert stages == ["build", "runtime"]
    build, runtime = dockerfile.split("AS runtime")
    # dependencies before the source: a code change reuses the dependency layers
    assert build.index("COPY pyproject.toml") < build.index("pip install -r") < build.index("COPY core")
    assert "pip install --no-deps /src" in build
    assert "COPY --from=build /opt/venv /opt/venv" in runtime
    assert re.search(r"^USER leukemia$", runtime, re.MULTILINE)
    assert "[test]" not in dockerfile and "pytest" not in dockerfile
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", ".env", "tests", "*.db"} <= set(ignored)


class _OverrideLoader(yaml.SafeLoader):
    """PyYAML with compose's !override and !reset tags (they only change how files merge)."""


_OverrideLoader.add_constructor("!override", lambda loader, node: loader.construct_sequence(node)
                                if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node))  # fmt: skip


def test_documented_gpu_and_worker_host_overrides_fit_the_compose_file():
    blocks = re.findall(r"```yaml\n(.*?)```", DEPLOY_DOC.read_text(), re.DOTALL)
    services = compose()["services"]
    gpu_ids = []
    for block in blocks:
        document = yaml.load(block, Loader=_OverrideLoader)
        for name, service in document["services"].items():
            extends = service.get("extends")
            if extends:
                assert extends == {"file": "docker-compose.yml", "service": "gpu-worker"}
            else:
                assert name in services, f"docs/deploy.md overrides unknown service {name}"
            devices = service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices")
            if devices:
                assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
                gpu_ids.extend(devices[0]["device_ids"])
    assert gpu_ids == ["0", "1", "2", "3"]


# --- live: the compose commands against the real PostgreSQL and Redis --------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_json(method: str, url: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


class Deployment:
    """The compose services' processes on this machine, with compose's mappings applied."""

    def __init__(self, tmp: Path, database: str, redis_db: int, port: int) -> None:
        from sqlalchemy.engine import make_url

        self.tmp, self.port = tmp, port
        self.paths = {"/data": tmp / "data", "/artifacts": tmp / "artifacts", "/cache": tmp / "cache"}
        for path in self.paths.values():
            path.mkdir()
        self.values = filled_env()
        self.services = interpolate(compose(), self.values)["services"]
        self.processes: dict[str, subprocess.Popen] = {}

        def mapped_env(service: str) -> dict[str, str]:
            env = {key: str(value) for key, value in self.services[service]["environment"].items()}
            url = make_url(env["DATABASE_URL"])
            assert (url.host, url.database) == ("postgres", "leukemia"), "compose's DATABASE_URL changed"
            env["DATABASE_URL"] = url.set(host="127.0.0.1", username="postgres", database=database).render_as_string(hide_password=False)
            assert env["BROKER_URL"] == "redis://redis:6379/0"
            env["BROKER_URL"] = f"redis://127.0.0.1:6379/{redis_db}"  # a db of its own: no other test's worker consumes it
            for key in ("ARTIFACTS_DIR", "CACHE_DIR", "DATA_ROOTS"):
                env[key] = str(self.paths[env[key]])
            # The image's own environment (Dockerfile ENV): its venv first on PATH, a home of its own.
            return {**env, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "HOME": str(tmp / "home"), "LEUKEMIA_HOME": str(tmp / "home"),
                    "PYTHONUNBUFFERED": "1", "LEUKEMIA_TEST_THREADS": "1", "OMP_NUM_THREADS": "1"}  # fmt: skip

        self.env = {name: mapped_env(name) for name in APP_SERVICES}

    def argv(self, service: str) -> list[str]:
        """The service's command; the container port 8000 is published on a free host port."""
        return [part.replace("0.0.0.0:8000", f"127.0.0.1:{self.port}") for part in self.services[service]["command"]]

    def run(self, service: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(service), env=self.env[service], cwd=self.tmp, capture_output=True, text=True, timeout=120)

    def start(self, service: str) -> None:
        log = open(self.tmp / f"{service}.log", "w")
        self.processes[service] = subprocess.Popen(
            self.argv(service), env=self.env[service], cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def healthcheck(self, service: str) -> subprocess.CompletedProcess:
        test = [part.replace("127.0.0.1:8000", f"127.0.0.1:{self.port}") for part in self.services[service]["healthcheck"]["test"]]
        assert test[0] == "CMD"
        return subprocess.run(test[1:], env=self.env[service], cwd=self.tmp, capture_output=True, text=True, timeout=60)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted(self.tmp.glob("*.log")))

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture()
def deployment(tmp_path):
    import psycopg

    database = f"leukemia_compose_{secrets.token_hex(4)}"
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {database}")
    deployment = Deployment(tmp_path, database, redis_db=secrets.choice(range(1, 16)), port=free_port())
    yield deployment
    deployment.stop()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def wait_for(predicate, timeout: float, deployment: Deployment, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, process in deployment.processes.items():
            assert process.poll() is None, f"{name} exited with {process.returncode} while waiting for {what}\n{deployment.logs()}"
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{deployment.logs()}")


@pytest.mark.timeout(300)
def test_compose_commands_run_a_job_end_to_end(deployment):
    from sqlalchemy import create_engine, text

    from core.engine.synth import write_synthetic_dataset

    migrated = deployment.run("migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    for service in ("web", "gpu-worker", "cpu-worker"):
        deployment.start(service)
    base = f"http://127.0.0.1:{deployment.port}"
    wait_for(lambda: deployment.healthcheck("web").returncode == 0, 90, deployment, "the web healthcheck")
    token = deployment.values["API_TOKEN"]

    # The data folder as a user puts it in DATA_DIR (mounted at /data).
    folder = deployment.paths["/data"] / "demo"
    write_synthetic_dataset(folder, train=24, valid=12, test=6, image_size=32, seed=1)
    status, body = http_json("POST", f"{base}/api/data-folders", token, {"path": str(folder), "name": "demo"})
    assert status == 201, body
    status, body = http_json("GET", f"{base}/api/jobs", token=None)
    assert status == 401  # the API wants the bearer token

    train = {"data_dir": str(folder), "epochs": 2, "image_size": 32, "batch_size": 8, "seed": 1}
    status, body = http_json("POST", f"{base}/api/jobs", token, {"kind": "train", "params": train})
    assert status == 201, body
    train_id = body["id"]

    def finished(job_id: int):
        status, job = http_json("GET", f"{base}/api/jobs/{job_id}", token)
        assert status == 200, job
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job = wait_for(lambda: finished(train_id), 180, deployment, f"train job {train_id}")
    assert job["status"] == "succeeded", f"{job}\n{deployment.logs()}"

    # Evaluate goes to the cpu queue: the cpu-worker runs it from the train job's checkpoint.
    evaluate = {"data_dir": str(folder), "csv": "valid.csv"}
    status, body = http_json("POST", f"{base}/api/jobs", token, {"kind": "evaluate", "params": evaluate, "parent_id": train_id})
    assert status == 201, body
    evaluated = wait_for(lambda: finished(body["id"]), 120, deployment, f"evaluate job {body['id']}")
    assert evaluated["status"] == "succeeded", f"{evaluated}\n{deployment.logs()}"
    assert evaluated["queue"] == "cpu"

    # The metrics rows, in PostgreSQL itself and through the API.
    engine = create_engine(deployment.env["web"]["DATABASE_URL"])
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT epoch, train_loss FROM epoch_metrics WHERE job_id = :id ORDER BY epoch"), {"id": train_id}
        ).all()
        hosts = set(connection.execute(text("SELECT worker_host FROM jobs")).scalars())
    engine.dispose()
    assert [row.epoch for row in rows] == [1, 2] and all(row.train_loss > 0 for row in rows)
    assert any(host.startswith("worker-gpu0-") for host in hosts) and any(host.startswith("worker-cpu-") for host in hosts), hosts
    status, metrics = http_json("GET", f"{base}/api/jobs/{train_id}/metrics", token)
    assert [row["epoch"] for row in metrics["epochs"]] == [1, 2]
    status, artifacts = http_json("GET", f"{base}/api/jobs/{train_id}/artifacts", token)
    assert {"best.pt", "last.pt", "metrics.csv"} <= {a["name"] for a in artifacts["artifacts"]}
    # The run folder is jobs/<id>-<run key> (core.engine.run_folder).
    assert len(list((deployment.paths["/artifacts"] / "jobs").glob(f"{train_id}-*/last.pt"))) == 1

    # The workers' healthchecks pass while they run.
    for service in ("gpu-worker", "cpu-worker"):
        check = deployment.healthcheck(service)
        assert check.returncode == 0, f"{service} healthcheck: {check.stdout}{check.stderr}"
