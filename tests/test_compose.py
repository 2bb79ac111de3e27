"""docker-compose.yml kept honest without a Docker engine.

Static: the file parses; every command is a real `leukemia` command (or gunicorn with real
options); healthchecks (with headroom) and depends_on conditions are in place; every secret is a
compose secret file read through a <NAME>_FILE setting, never an environment value; every variable
is a real setting and documented (docs/deploy.md's table is checked against
core.service.settings.Settings); the monitoring profile's Prometheus config points at the services'
real ports and paths with the metrics token; the Dockerfile pins the same PyTorch as scripts/setup.sh.

Live: the migrate, web and worker commands run exactly as compose writes them, with compose's
environment after interpolation, against the real PostgreSQL and Redis of this machine
(hosts mapped to 127.0.0.1, a fresh database, container paths and /run/secrets mapped to temporary
folders), a train job and an evaluate job go end to end through the HTTP API, the healthchecks are
timed, and every target of deploy/prometheus.yml is scraped as Prometheus would."""

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

from tests import polling

COMPOSE_FILE = REPO / "docker-compose.yml"
OBJECTSTORE_FILE = REPO / "docker-compose.objectstore.yml"
ENV_EXAMPLE = REPO / ".env.example"
DEPLOY_DOC = REPO / "docs" / "deploy.md"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus.yml"
SECRETS = (
    "postgres_password",
    "secret_key",
    "api_token",
    "admin_password",
    "metrics_token",
    "broker_password",
    "flower_password",
    "grafana_admin_password",
)  # compose secret files
OBJECTSTORE_SECRETS = ("minio_root_user", "minio_root_password")  # profile "objectstore" only
SECRET_VARIABLES = ("POSTGRES_PASSWORD", "DATABASE_PASSWORD", "SECRET_KEY", "API_TOKEN", "ADMIN_PASSWORD", "METRICS_TOKEN")
APP_SERVICES = ("migrate", "web", "gpu-worker", "cpu-worker")
MONITORING = ("prometheus", "flower", "grafana")  # profile "monitoring"
OBJECTSTORE = ("minio", "minio-bucket")  # profile "objectstore"
PROFILES = {
    "prometheus": ["monitoring"],
    "flower": ["monitoring"],
    "grafana": ["monitoring"],
    "rabbitmq": ["rabbitmq"],
    "minio": ["objectstore"],
    "minio-bucket": ["objectstore"],
}
LONG_RUNNING = ("redis", "rabbitmq", "postgres", "web", "gpu-worker", "cpu-worker", *MONITORING, "minio")
RABBITMQ_URL = "amqp://leukemia@rabbitmq:5672/leukemia"  # .env's BROKER_URL for the rabbitmq profile (docs/deploy.md)
WORKER_HEALTH_FILE = "/tmp/leukemia-worker-alive"
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
    """.env.example as a user's .env would be (it holds no secret: those are files)."""
    return env_example()


def seconds(duration: str) -> float:
    """A compose duration ("90s", "1m30s", "500ms") in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, f"not a compose duration: {duration!r}"
    return sum(float(n) * units[u] for n, u in parts)


def referenced_variables() -> set[str]:
    text = COMPOSE_FILE.read_text()
    return {m.group("braced") or m.group("named") for m in INTERPOLATION.finditer(text) if m.group("braced") or m.group("named")}


# --- static checks ----------------------------------------------------------------------------


def test_services_healthchecks_and_start_order():
    services = compose()["services"]
    assert set(services) == {
        "redis",
        "rabbitmq",
        "postgres",
        "migrate",
        "web",
        "gpu-worker",
        "cpu-worker",
        *MONITORING,
        *OBJECTSTORE,
    }
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert any("/api/health" in part for part in services["web"]["healthcheck"]["test"])
    for name in LONG_RUNNING:
        check = services[name]["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and check["interval"] and check["retries"], name
        # Headroom: a check may take seconds on a loaded host, and the first ones run while it starts.
        assert seconds(check["timeout"]) >= 5 and seconds(check["start_period"]) >= 30, name
        assert seconds(check["interval"]) >= seconds(check["timeout"]) / 2, name
        assert services[name]["restart"] == "unless-stopped", name
    for name in ("gpu-worker", "cpu-worker"):  # the worker's check is a stat(), not an import of the service
        test = interpolate(services[name]["healthcheck"]["test"], filled_env())
        assert test[:5] == ["CMD", "python", "-I", "-S", "-c"] and WORKER_HEALTH_FILE in test[5], test
        assert not re.search(r"\b(import|from) (core|worker|web|leukemia|sqlalchemy)", test[5]), test
        command = services[name]["command"]
        assert command[command.index("--health-file") + 1] == WORKER_HEALTH_FILE
        assert seconds(services[name]["healthcheck"]["timeout"]) >= 10
    assert services["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "gpu-worker", "cpu-worker"):
        assert services[name]["depends_on"] == {
            "redis": {"condition": "service_healthy"},
            "rabbitmq": {"condition": "service_healthy", "required": False},  # only when its profile runs
            "postgres": {"condition": "service_healthy"},
            "migrate": {"condition": "service_completed_successfully"},
        }, name
        mounts = {volume.rsplit(":", 1)[1] for volume in interpolate(services[name]["volumes"], filled_env())}
        assert {"/data", "/artifacts", "/cache"} <= mounts, name
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert set(compose()["volumes"]) == {
        "pgdata",
        "redisdata",
        "rabbitmqdata",
        "artifacts",
        "cache",
        "prometheusdata",
        "grafanadata",
        "miniodata",
    }
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


# Which secret files each service mounts, and the variable that names each file to the process.
SECRET_USE = {
    "postgres": {"postgres_password": "POSTGRES_PASSWORD_FILE"},
    "migrate": {"postgres_password": "DATABASE_PASSWORD_FILE", "admin_password": "ADMIN_PASSWORD_FILE"},
    "web": {
        "postgres_password": "DATABASE_PASSWORD_FILE",
        "broker_password": "BROKER_PASSWORD_FILE",
        "secret_key": "SECRET_KEY_FILE",
        "api_token": "API_TOKEN_FILE",
        "metrics_token": "METRICS_TOKEN_FILE",
    },
    "gpu-worker": {
        "postgres_password": "DATABASE_PASSWORD_FILE",
        "broker_password": "BROKER_PASSWORD_FILE",
        "metrics_token": "METRICS_TOKEN_FILE",
    },
    "cpu-worker": {
        "postgres_password": "DATABASE_PASSWORD_FILE",
        "broker_password": "BROKER_PASSWORD_FILE",
        "metrics_token": "METRICS_TOKEN_FILE",
    },
    "prometheus": {"metrics_token": None},  # read by deploy/prometheus.yml's credentials_file
    "rabbitmq": {"broker_password": None},  # read by its entrypoint into the server's own environment
    "flower": {"broker_password": "BROKER_PASSWORD_FILE", "flower_password": "FLOWER_PASSWORD_FILE"},  # flower_start.py
    "grafana": {"grafana_admin_password": "GF_SECURITY_ADMIN_PASSWORD__FILE"},  # the image's run.sh reads GF_*__FILE
    "minio": {"minio_root_user": "MINIO_ROOT_USER_FILE", "minio_root_password": "MINIO_ROOT_PASSWORD_FILE"},
    "minio-bucket": {"minio_root_user": None, "minio_root_password": None},  # read by its command
}
# The <NAME>_FILE conventions of the images themselves (PostgreSQL's, MinIO's, Grafana's) and of deploy/flower_start.py,
# not settings.
IMAGE_FILE_VARIABLES = (
    "POSTGRES_PASSWORD_FILE",
    "MINIO_ROOT_USER_FILE",
    "MINIO_ROOT_PASSWORD_FILE",
    "FLOWER_PASSWORD_FILE",
    "GF_SECURITY_ADMIN_PASSWORD__FILE",
)


def test_secrets_are_files_never_environment_values():
    from sqlalchemy.engine import make_url

    from core.service.settings import SECRET_FILE_SETTINGS

    document = interpolate(compose(), filled_env())
    assert document["secrets"] == {name: {"file": f"./secrets/{name}"} for name in (*SECRETS, *OBJECTSTORE_SECRETS)}
    assert "/secrets/" in (REPO / ".gitignore").read_text().split()
    assert "secrets" in (REPO / ".dockerignore").read_text().split()
    assert not re.search(r"\$\{(" + "|".join(SECRET_VARIABLES) + r")\b", COMPOSE_FILE.read_text())
    assert not set(SECRET_VARIABLES) & set(env_example())
    for name, service in document["services"].items():
        environment = service.get("environment", {})
        assert not set(SECRET_VARIABLES) & set(environment), f"{name}: a secret as an environment value"
        if "DATABASE_URL" in environment:
            assert make_url(environment["DATABASE_URL"]).password is None, name
        uses = SECRET_USE.get(name, {})
        assert service.get("secrets", []) == list(uses), name
        files = {variable: value for variable, value in environment.items() if variable.endswith("_FILE")}
        assert files == {variable: f"/run/secrets/{secret}" for secret, variable in uses.items() if variable}, name
        for variable in files:
            assert variable in IMAGE_FILE_VARIABLES or variable.removesuffix("_FILE").lower() in SECRET_FILE_SETTINGS


def test_the_web_acts_as_the_admin_migrate_creates():
    services = interpolate(compose(), {**filled_env(), "ADMIN_USERNAME": "boss"})["services"]
    assert services["web"]["environment"]["ADMIN_USERNAME"] == services["migrate"]["environment"]["ADMIN_USERNAME"] == "boss"


def test_the_monitoring_profile_scrapes_the_services_real_ports_and_paths_with_the_token(app):
    """deploy/prometheus.yml against docker-compose.yml: each target is a service of the file, on the port its
    command listens on, at a path the app serves, with the token file the prometheus service mounts."""
    document = interpolate(compose(), filled_env())
    services = document["services"]
    assert {name: service["profiles"] for name, service in services.items() if service.get("profiles")} == PROFILES
    prometheus, flower = services["prometheus"], services["flower"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    # The alert rules beside the configuration, where its rule_files names them (tests/test_alerts.py checks both).
    assert yaml.safe_load(PROMETHEUS_CONFIG.read_text())["rule_files"] == ["alerts.yml"]
    assert "./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for name in MONITORING:  # no login of their own: published on the host's loopback only
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"]), name

    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"leukemia-web", "leukemia-workers", "flower"}
    for name in ("leukemia-web", "leukemia-workers"):
        assert jobs[name]["authorization"] == {"type": "Bearer", "credentials_file": "/run/secrets/metrics_token"}
        assert jobs[name]["metrics_path"] in {rule.rule for rule in app.url_map.iter_rules()}
    assert "metrics_token" in prometheus["secrets"]
    assert jobs["leukemia-web"]["static_configs"] == [{"targets": ["web:8000"]}]
    assert "0.0.0.0:8000" in services["web"]["command"]
    exporters = {
        name: metrics_port(service) for name, service in services.items() if "--metrics-port" in service.get("command", [])
    }
    (discovery,) = jobs["leukemia-workers"]["dns_sd_configs"]
    assert discovery["type"] == "A" and set(discovery["names"]) == set(exporters) == {"gpu-worker", "cpu-worker"}
    assert set(exporters.values()) == {discovery["port"]}
    assert jobs["flower"]["static_configs"] == [{"targets": ["flower:5555"]}] and "--port=5555" in flower["command"]
    # Flower watches the broker the app uses, from the same one variable, and docs/deploy.md's version.
    for env in (filled_env(), {**filled_env(), "BROKER_URL": RABBITMQ_URL}):
        services = interpolate(compose(), env)["services"]
        assert {services[name]["environment"]["BROKER_URL"] for name in ("web", "gpu-worker", "cpu-worker", "flower")} == {
            env["BROKER_URL"]
        }
    assert flower["image"] == "mher/flower:2.2" and "Flower 2.2" in DEPLOY_DOC.read_text()
    assert not any("--broker" in part or "--basic-auth" in part or "basic_auth" in part for part in flower["command"])
    assert "./deploy/flower_start.py:/etc/flower/flower_start.py:ro" in flower["volumes"]
    assert flower["command"][:2] == ["python", "/etc/flower/flower_start.py"]


def test_the_rabbitmq_profile_is_the_broker_the_url_names():
    """`--profile rabbitmq` with .env's BROKER_URL=amqp://leukemia@rabbitmq:5672/leukemia: the server makes that
    user and virtual host, its password the broker_password secret (read into the server's own environment,
    never compose's), and the app adds the same file's password to the URL (BROKER_PASSWORD_FILE)."""
    from urllib.parse import urlsplit

    from core.service.settings import Settings

    services = interpolate(compose(), {**filled_env(), "BROKER_URL": RABBITMQ_URL})["services"]
    rabbitmq = services["rabbitmq"]
    url = urlsplit(RABBITMQ_URL)
    assert (url.hostname, url.port) == ("rabbitmq", 5672) and url.password is None
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_USER"] == url.username
    assert rabbitmq["environment"]["RABBITMQ_DEFAULT_VHOST"] == url.path.lstrip("/")
    assert "RABBITMQ_DEFAULT_PASS" not in rabbitmq["environment"]
    assert (
        'RABBITMQ_DEFAULT_PASS="$(cat /run/secrets/broker_password)" exec docker-entrypoint.sh rabbitmq-server'
        in rabbitmq["entrypoint"][2]
    )
    assert rabbitmq["healthcheck"]["test"][:2] == ["CMD", "rabbitmq-diagnostics"]
    assert "consumer_timeout 604800000" in rabbitmq["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    app = Settings(broker_url=services["web"]["environment"]["BROKER_URL"], broker_password="s3cret/+")
    assert app.resolved_broker_url == "amqp://leukemia:s3cret%2F%2B@rabbitmq:5672/leukemia"
    redis = Settings(
        broker_url=interpolate(compose(), filled_env())["services"]["web"]["environment"]["BROKER_URL"], broker_password="s3cret"
    )
    assert redis.resolved_broker_url == "redis://redis:6379/0"  # names no user: takes no password


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
    from core.service.settings import SECRET_FILE_SETTINGS, Settings

    documented = documented_settings()
    settings_names = {name.upper() for name in Settings.model_fields} | {f"{name.upper()}_FILE" for name in SECRET_FILE_SETTINGS}
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


_OverrideLoader.add_constructor(
    "!override",
    lambda loader, node: (
        loader.construct_sequence(node) if isinstance(node, yaml.SequenceNode) else loader.construct_mapping(node)
    ),
)


def test_the_objectstore_profile_and_its_override_give_every_host_the_bucket(monkeypatch):
    """MinIO and its bucket job under the `objectstore` profile; docker-compose.objectstore.yml points every
    service that reads or writes artifacts at that bucket, with the credentials as a secret file read through
    the standard AWS_SHARED_CREDENTIALS_FILE, and starts them once the bucket exists."""
    from core.engine.run_folder.artifact_store import open_store
    from core.service.settings import Settings

    services = interpolate(compose(), filled_env())["services"]
    minio, bucket_job = services["minio"], services["minio-bucket"]
    assert all(services[name]["profiles"] == ["objectstore"] for name in OBJECTSTORE)
    assert minio["command"][:2] == ["server", "/data"] and "miniodata:/data" in minio["volumes"]
    assert minio["ports"] == ["9000:9000", "127.0.0.1:9001:9001"]  # the API for every host, the console on loopback
    assert minio["healthcheck"]["test"] == ["CMD", "mc", "ready", "local"]
    assert bucket_job["depends_on"] == {"minio": {"condition": "service_healthy"}} and bucket_job["restart"] == "no"
    script = bucket_job["command"][0]
    assert "mc alias set store http://minio:9000" in script and "/run/secrets/minio_root_password" in script
    bucket = re.search(r"mc mb --ignore-existing store/(\S+)$", script).group(1)

    override = yaml.safe_load(OBJECTSTORE_FILE.read_text())
    assert override["secrets"] == {"s3_credentials": {"file": "./secrets/s3_credentials"}}
    assert set(override["services"]) == {"web", "gpu-worker", "cpu-worker"}  # every service that touches artifacts
    settings = {name.upper() for name in Settings.model_fields}
    for name, service in override["services"].items():
        environment = service["environment"]
        assert set(environment) - settings == {"AWS_SHARED_CREDENTIALS_FILE"}, name  # settings, and AWS's own variable
        assert environment["AWS_SHARED_CREDENTIALS_FILE"] == "/run/secrets/s3_credentials" and service["secrets"] == [
            "s3_credentials"
        ]
        assert environment["ARTIFACTS_S3_ENDPOINT_URL"] == "http://minio:9000"
        assert service["depends_on"] == {"minio-bucket": {"condition": "service_completed_successfully"}}
        assert "SCRATCH_DIR" not in environment  # never inside CACHE_DIR (/cache), whose cap would evict runs
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
        store = open_store(environment["ARTIFACTS_URL"], endpoint_url=environment["ARTIFACTS_S3_ENDPOINT_URL"])
        assert (store.bucket, store.local_root) == (bucket, None)  # the bucket the job makes
    assert set(OBJECTSTORE_SECRETS) <= set(compose()["secrets"])


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


def checkout_under_test() -> dict[str, str]:
    """PYTHONPATH when the tests run a checkout other than the installed one (a worktree): the image's
    environment has none, but its processes must run the code under test."""
    return {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}


class Deployment:
    """The compose services' processes on this machine, with compose's mappings applied."""

    def __init__(self, tmp: Path, database: str, redis_db: int, port: int) -> None:
        from sqlalchemy.engine import make_url

        self.tmp, self.port = tmp, port
        self.paths = {
            "/data": tmp / "data",
            "/artifacts": tmp / "artifacts",
            "/cache": tmp / "cache",
            "/run/secrets": tmp / "secrets",
        }
        for path in self.paths.values():
            path.mkdir()
        for name in SECRETS:  # as docs/deploy.md says to make them
            (self.paths["/run/secrets"] / name).write_text(secrets.token_hex(24) + "\n")
        # Not the defaults: the web must get migrate's admin name, and every line must be JSON.
        self.values = {**filled_env(), "ADMIN_USERNAME": "boss", "LOG_FORMAT": "json"}
        self.services = interpolate(compose(), self.values)["services"]
        self.processes: dict[str, subprocess.Popen] = {}
        # Ports a container listens on, published here on free host ports: web 8000, each worker's exporter.
        self.ports = {
            "web": {8000: port},
            **{name: {metrics_port(self.services[name]): free_port()} for name in ("gpu-worker", "cpu-worker")},
        }

        def mapped_env(service: str) -> dict[str, str]:
            env = {key: str(value) for key, value in self.services[service]["environment"].items()}
            url = make_url(env["DATABASE_URL"])
            assert (url.host, url.database) == ("postgres", "leukemia"), "compose's DATABASE_URL changed"
            env["DATABASE_URL"] = url.set(host="127.0.0.1", username="postgres", database=database).render_as_string(
                hide_password=False
            )
            assert env["BROKER_URL"] == "redis://redis:6379/0"
            env["BROKER_URL"] = f"redis://127.0.0.1:6379/{redis_db}"  # a db of its own: no other test's worker consumes it
            for key in ("ARTIFACTS_DIR", "CACHE_DIR", "DATA_ROOTS"):
                env[key] = str(self.paths[env[key]])
            for key, value in env.items():
                if value.startswith("/run/secrets/"):
                    env[key] = str(self.paths["/run/secrets"] / value.removeprefix("/run/secrets/"))
            # The image's own environment (Dockerfile ENV): its venv first on PATH, a home of its own.
            return {
                **env,
                "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
                "HOME": str(tmp / "home"),
                "LEUKEMIA_HOME": str(tmp / "home"),
                "PYTHONUNBUFFERED": "1",
                "LEUKEMIA_TEST_THREADS": "1",
                "OMP_NUM_THREADS": "1",
                **checkout_under_test(),
            }

        self.env = {name: mapped_env(name) for name in APP_SERVICES}

    def secret(self, name: str) -> str:
        return (self.paths["/run/secrets"] / name).read_text().strip()

    def mapped(self, service: str, argv: list[str]) -> list[str]:
        """A command or healthcheck of the service with its ports and its container-private files mapped."""
        ports = self.ports.get(service, {})
        mapped = [
            part.replace("0.0.0.0:8000", f"127.0.0.1:{self.port}")
            .replace("127.0.0.1:8000", f"127.0.0.1:{self.port}")
            .replace(WORKER_HEALTH_FILE, str(self.tmp / f"{service}-alive"))
            for part in argv
        ]
        if "--metrics-port" in mapped:
            at = mapped.index("--metrics-port") + 1
            mapped[at] = str(ports[int(mapped[at])])
        return mapped

    def argv(self, service: str) -> list[str]:
        return self.mapped(service, self.services[service]["command"])

    def run(self, service: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(service), env=self.env[service], cwd=self.tmp, capture_output=True, text=True, timeout=120
        )

    def start(self, service: str) -> None:
        log = open(self.tmp / f"{service}.log", "w")
        self.processes[service] = subprocess.Popen(
            self.argv(service), env=self.env[service], cwd=self.tmp, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def healthcheck(self, service: str) -> subprocess.CompletedProcess:
        test = self.mapped(service, self.services[service]["healthcheck"]["test"])
        assert test[0] == "CMD"
        return subprocess.run(test[1:], env=self.env[service], cwd=self.tmp, capture_output=True, text=True, timeout=60)

    def timed_healthcheck(self, service: str) -> float:
        """Seconds the service's healthcheck took, asserting it passed."""
        started = time.perf_counter()
        check = self.healthcheck(service)
        elapsed = time.perf_counter() - started
        assert check.returncode == 0, f"{service} healthcheck: {check.stdout}{check.stderr}"
        return elapsed

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
    """tests/polling.py's wait, failing at once when a service's process exits, with the logs."""

    def running() -> None:
        for name, process in deployment.processes.items():
            assert process.poll() is None, (
                f"{name} exited with {process.returncode} while waiting for {what}\n{deployment.logs()}"
            )

    return polling.wait_for(predicate, timeout, what, check=running, describe=deployment.logs, interval=0.5)


def test_an_empty_or_missing_secret_file_stops_the_service_with_one_line(deployment):
    (deployment.paths["/run/secrets"] / "admin_password").write_text("\n")
    migrated = deployment.run("migrate")
    assert migrated.returncode == 2 and migrated.stderr.strip().splitlines() == [
        f"error: ADMIN_PASSWORD_FILE: {deployment.paths['/run/secrets'] / 'admin_password'} is empty"
    ], migrated.stderr
    (deployment.paths["/run/secrets"] / "postgres_password").unlink()
    migrated = deployment.run("migrate")
    assert migrated.returncode == 2 and "DATABASE_PASSWORD_FILE: cannot read" in migrated.stderr, migrated.stderr


@pytest.mark.timeout(300)
def test_compose_commands_run_a_job_end_to_end(deployment):
    from sqlalchemy import create_engine, text

    from core.engine.data.synth import write_synthetic_dataset

    migrated = deployment.run("migrate")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert deployment.healthcheck("cpu-worker").returncode == 1  # no worker has reached the database yet
    for service in ("web", "gpu-worker", "cpu-worker"):
        deployment.start(service)
    base = f"http://127.0.0.1:{deployment.port}"
    wait_for(lambda: deployment.healthcheck("web").returncode == 0, 90, deployment, "the web healthcheck")
    token = deployment.secret("api_token")
    status, me = http_json("GET", f"{base}/api/me", token)
    assert status == 200 and (me["username"], me["role"]) == ("boss", "admin"), me  # the admin migrate made

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
    # The run folder is jobs/<id>-<run key> (core.engine.run_folder.resolver).
    assert len(list((deployment.paths["/artifacts"] / "jobs").glob(f"{train_id}-*/last.pt"))) == 1

    # The healthchecks pass while the services run, with a timeout several times what they take here
    # (two cores shared with the other tests: a loaded host).
    for service in ("web", "gpu-worker", "cpu-worker"):
        elapsed = max(deployment.timed_healthcheck(service) for _ in range(3))
        timeout = seconds(deployment.services[service]["healthcheck"]["timeout"])
        print(f"{service} healthcheck: {elapsed:.2f} s (timeout {timeout:.0f} s, load {os.getloadavg()[0]:.1f})")
        assert elapsed * 5 <= timeout, f"{service} healthcheck took {elapsed:.2f} s against a {timeout} s timeout"
    # A worker that stops reaching the database turns unhealthy, and healthy again with its next beat.
    alive = deployment.tmp / "cpu-worker-alive"
    stale = time.time() - float(deployment.env["cpu-worker"]["STALE_AFTER_SECONDS"]) - 5
    os.utime(alive, (stale, stale))
    assert deployment.healthcheck("cpu-worker").returncode == 1
    wait_for(lambda: deployment.healthcheck("cpu-worker").returncode == 0, 30, deployment, "the next presence beat")

    scrape_every_prometheus_target(deployment, train_id, body["id"])
    check_json_logs(deployment, train_id)


def metrics_port(service: dict) -> int:
    command = service["command"]
    return int(command[command.index("--metrics-port") + 1])


def scrape(url: str, token: str | None) -> tuple[int, dict]:
    """GET a metrics endpoint as Prometheus does: (status, {(sample name, labels): value})."""
    from prometheus_client.parser import text_string_to_metric_families

    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {}
    return 200, {
        (s.name, frozenset(s.labels.items())): s.value for family in text_string_to_metric_families(text) for s in family.samples
    }


def scrape_every_prometheus_target(deployment: Deployment, train_id: int, evaluate_id: int) -> None:
    """Each scrape job of deploy/prometheus.yml (but Flower's) as Prometheus would run it inside compose:
    its targets' service names and container ports mapped to this machine, its token from the secret file."""
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    found = {}
    for job in config["scrape_configs"]:
        if job["job_name"] == "flower":
            continue
        token_file = job["authorization"]["credentials_file"]
        token = (deployment.paths["/run/secrets"] / token_file.removeprefix("/run/secrets/")).read_text().strip()
        targets = [tuple(t.split(":")) for group in job.get("static_configs", []) for t in group["targets"]]
        targets += [(name, str(sd["port"])) for sd in job.get("dns_sd_configs", []) for name in sd["names"]]
        for service, port in targets:
            url = f"http://127.0.0.1:{deployment.ports[service][int(port)]}{job['metrics_path']}"
            assert scrape(url, None)[0] == 401 and scrape(url, "not-the-token")[0] in (401, 403), url
            status, found[service] = scrape(url, token)
            assert status == 200, url
    assert set(found) == {"web", "gpu-worker", "cpu-worker"}
    web = found["web"]
    assert web[("leukemia_database_up", frozenset())] == 1
    assert web[("leukemia_workers", frozenset({("state", "live")}))] == 2
    for kind in ("train", "evaluate"):
        assert web[("leukemia_job_duration_seconds_count", frozenset({("kind", kind), ("status", "succeeded")}))] == 1
    assert web[("leukemia_epoch_duration_seconds_count", frozenset({("kind", "train")}))] == 2
    assert web[("leukemia_queue_depth", frozenset({("queue", "gpu"), ("priority", "normal")}))] == 0
    outcome = {"train": ("gpu-worker", train_id), "evaluate": ("cpu-worker", evaluate_id)}
    for kind, (service, _) in outcome.items():
        assert found[service][("leukemia_worker_jobs_total", frozenset({("kind", kind), ("outcome", "succeeded")}))] == 1
    assert found["gpu-worker"][("leukemia_worker_epochs_total", frozenset())] == 2


def check_json_logs(deployment: Deployment, train_id: int) -> None:
    """LOG_FORMAT=json: every line is one JSON object (Celery's banner silenced, gunicorn's own lines through
    its logger class); the worker's lines about the job carry its id; the web's access lines a request id."""

    def objects(service: str) -> list[dict]:
        lines = (deployment.tmp / f"{service}.log").read_text().splitlines()
        return [json.loads(line) for line in lines]

    assert any(line["logger"] == "gunicorn.error" and line["message"].startswith("Starting gunicorn") for line in objects("web"))
    assert all(line["worker"].startswith("worker-gpu0-") for line in objects("gpu-worker"))

    worker = [line for line in objects("gpu-worker") if f"job {train_id} " in line["message"]]
    assert len(worker) >= 4 and all(line["job_id"] == train_id for line in worker), worker
    access = [line for line in objects("web") if line["logger"] == "leukemia.web.access"]
    assert access and all(len(line["request_id"]) == 32 for line in access)


def test_flower_starts_as_compose_runs_it_with_its_passwords_on_no_command_line(tmp_path):
    """deploy/flower_start.py, run as compose's flower command runs it (Flower 2.2, here from the test tools),
    against Redis: /healthcheck and /metrics answer anyone (compose's healthcheck, Prometheus), the API only
    the basic auth of the flower_password file, and neither password is on the process's command line."""
    import base64

    flower = compose()["services"]["flower"]
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    for name in ("broker_password", "flower_password"):
        (secrets_dir / name).write_text(secrets.token_hex(12) + "\n")
    password = (secrets_dir / "flower_password").read_text().strip()
    env = {
        **{key: str(value) for key, value in interpolate(flower["environment"], filled_env()).items()},
        "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
        "HOME": str(tmp_path),
    }
    assert env["BROKER_URL"] == "redis://redis:6379/0"
    env["BROKER_URL"] = f"redis://127.0.0.1:6379/{secrets.choice(range(1, 16))}"
    for key in ("BROKER_PASSWORD_FILE", "FLOWER_PASSWORD_FILE"):
        env[key] = str(secrets_dir / env[key].removeprefix("/run/secrets/"))
    port = free_port()
    command = [sys.executable if part == "python" else part for part in flower["command"]]
    command = [
        str(REPO / "deploy" / "flower_start.py")
        if part == "/etc/flower/flower_start.py"
        else part.replace("--port=5555", f"--port={port}")
        for part in command
    ] + ["--address=127.0.0.1"]
    log_path = tmp_path / "flower.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"

    def status(path: str, auth: str | None = None) -> int | None:
        request = urllib.request.Request(base + path, headers={"Authorization": auth} if auth else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as error:
            return error.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            assert process.poll() is None, log_path.read_text()[-3000:]
            return None

    try:
        polling.wait_for(
            lambda: status("/healthcheck") == 200, 60, "Flower's healthcheck", describe=lambda: log_path.read_text()[-3000:]
        )
        assert status("/metrics") == 200
        assert status("/api/workers") == 401
        wrong = "Basic " + base64.b64encode(b"monitor:wrong").decode()
        right = "Basic " + base64.b64encode(f"monitor:{password}".encode()).decode()
        assert status("/api/workers", wrong) == 401 and status("/api/workers", right) == 200
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().decode()
        assert "flower" in command_line and password not in command_line
        assert (secrets_dir / "broker_password").read_text().strip() not in command_line
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
