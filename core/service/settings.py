"""One typed settings object read from the environment. Unset, everything lives under
LEUKEMIA_HOME (SQLite database, embedded broker, artifacts): the embedded default. `get_settings()`
reads it, the web's admin login and cookie flag included, where a process starts or an edge enters (a CLI
command, the worker's start and each job task, create_app's default); the web's code reads its app's
(web.settings). The service's entry points take the settings, or the values they need, as arguments."""

from __future__ import annotations

import ipaddress
import os
import secrets
from datetime import datetime, timedelta
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from core.common.atomic import create_once
from core.common.errors import UserInputError
from core.engine.settings import EngineSettings, read_settings


class Settings(EngineSettings):
    """The service's settings: the engine's (core.engine.settings) and the job service's."""

    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite in LEUKEMIA_HOME.")
    database_password: str = Field(
        "", description="Password for DATABASE_URL's user, kept out of the URL (compose: DATABASE_PASSWORD_FILE, a secret file)."
    )
    broker_url: str = Field("", description="Celery broker; default: embedded (kombu SQLAlchemy transport over SQLite).")
    broker_password: str = Field(
        "",
        description="Password of BROKER_URL's user when the URL names a user and no password (compose: "
        "BROKER_PASSWORD_FILE, the RabbitMQ profile's secret); a URL naming no user takes none.",
    )
    artifacts_dir: Path | None = Field(None, description="Checkpoints, CSVs, plots; default: LEUKEMIA_HOME/artifacts.")
    artifacts_url: str = Field(
        "", description="The artifact store: a folder (a path or file:///path) or s3://bucket/prefix; default: ARTIFACTS_DIR."
    )
    artifacts_s3_endpoint_url: str = Field(
        "", description="The S3-compatible server of an s3:// ARTIFACTS_URL (MinIO, Ceph RGW, ...); empty: AWS S3."
    )
    artifacts_presigned_downloads: bool = Field(
        False, description="Downloads from an s3:// store redirect to a presigned URL instead of passing through the web."
    )
    scratch_dir: Path | None = Field(
        None, description="Where a worker writes a run before storing it in an s3:// store; default: LEUKEMIA_HOME/scratch."
    )
    api_token: str = Field("", description="Bearer token for the JSON API.")
    secret_key: str = Field("", description="Flask session signing key.")
    admin_username: str = Field("admin", description="Dashboard login that `leukemia migrate` creates (or resets).")
    admin_password: str = Field("", description="Its password; unset: a generated one for a first 'admin', shown once.")
    metrics_token: str = Field("", description="Bearer token Prometheus sends to GET /metrics and to the workers' exporters.")
    worker_metrics_address: str = Field(
        "127.0.0.1",
        description="Interface a worker's metrics exporter (`leukemia worker --metrics-port`) listens on; "
        "compose: 0.0.0.0, the container's network, where Prometheus scrapes it.",
    )
    log_format: str = Field("text", description="Log lines as `text`, or `json`: one object per line with the job or request id.")
    session_cookie_secure: bool = Field(False, description="Send the session cookie over HTTPS only (behind TLS).")
    heartbeat_seconds: float = Field(5.0, gt=0)
    broker_heartbeat_seconds: float = Field(
        60.0,
        ge=0,
        description="AMQP heartbeat a worker asks RabbitMQ for (the lower of this and the server's wins); 0: none. Redis ignores it.",
    )
    stale_after_seconds: float = Field(60.0, gt=0, description="A running job whose heartbeat is older is 'worker lost'.")
    max_attempts: int = Field(3, ge=1)
    login_max_failures_per_account: int = Field(
        5, ge=1, description="Failed logins for one user name within the window before it is locked."
    )
    login_max_failures_per_address: int = Field(
        20, ge=1, description="Failed logins from one client address within the window before it is locked."
    )
    login_failure_window_seconds: float = Field(
        900.0, gt=0, description="How far back failed logins count; a lockout ends when they age out."
    )
    max_job_memory_gb: float = Field(
        80.0,
        gt=0,
        description="Largest device-memory estimate of a training job accepted at submit (GiB; core.engine.model.limits).",
    )
    max_sweep_jobs: int = Field(1000, ge=1, description="Most jobs one sweep may queue.")
    max_sweep_gpu_hours: float = Field(1000.0, gt=0, description="Most estimated GPU-hours one sweep may queue.")
    gpu_train_tflops: float = Field(
        100.0, gt=0, description="Sustained training TFLOP/s of one GPU, for the GPU-hours estimate (an assumption; set yours)."
    )
    retention: str = Field(
        "all",
        description="What a finished training job keeps unless it sets its own: all, best or last-N (core.service.retention).",
    )
    public_url: str = Field(
        "",
        description="The dashboard's address as people reach it (https://jobs.example.org); webhook payloads link to job pages under it.",
    )
    webhook_retry_seconds: float = Field(
        30.0, gt=0, description="Wait before a failed webhook delivery's first retry; it doubles per attempt (at most an hour)."
    )
    webhook_max_attempts: int = Field(8, ge=1, description="Attempts of a webhook delivery before it is marked failed.")
    webhook_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long one webhook attempt may take in all (lookup, connection, sending, the whole answer) before it counts as failed.",
    )
    webhook_allowed_networks: str = Field(
        "",
        description="Comma-separated addresses or networks (10.0.0.0/8, 127.0.0.1, fd00::/8) that webhooks may reach "
        "although they are loopback, private, link-local or otherwise not public; default: none (core.service.webhooks.transport).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SecretFilesSource(settings_cls), dotenv_settings, file_secret_settings

    @field_validator("database_password")
    @classmethod
    def _password_for_a_server(cls, value: str, info: ValidationInfo) -> str:
        from sqlalchemy.engine import make_url

        url = info.data.get("database_url") or ""
        if value and (not url or url.startswith("sqlite")):
            raise ValueError("only for a database server: DATABASE_URL must name one (postgresql+psycopg://user@host/db)")
        if value and make_url(url).password is not None:
            raise ValueError("DATABASE_URL carries a password already: keep one of the two")
        return value

    @field_validator("broker_password")
    @classmethod
    def _broker_password_once(cls, value: str, info: ValidationInfo) -> str:
        from urllib.parse import urlsplit

        if value and urlsplit(info.data.get("broker_url") or "").password is not None:
            raise ValueError("BROKER_URL carries a password already: keep one of the two")
        return value

    @model_validator(mode="after")
    def _scratch_outside_the_cache(self) -> Settings:
        scratch, cache = self.resolved_scratch_dir.resolve(), self.resolved_cache_dir.resolve()
        if scratch == cache or scratch.is_relative_to(cache):
            raise ValueError(
                f"SCRATCH_DIR {scratch} lies in CACHE_DIR {cache}, whose cap (CACHE_MAX_GB) would evict "
                "the runs written there; choose a folder outside it"
            )
        return self

    @field_validator("artifacts_url")
    @classmethod
    def _artifacts_url(cls, value: str) -> str:
        from core.engine.run_folder.artifact_store import store_kind

        if value.strip():
            store_kind(value.strip())
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.strip().lower() not in LOG_FORMATS:
            raise ValueError(f"{value!r} is not one of {', '.join(LOG_FORMATS)}")
        return value.strip().lower()

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str) -> str:
        from core.service.job_options import check_retention  # core.service.job_options reads no settings

        return check_retention(value.strip() or None) or "all"

    @field_validator("webhook_allowed_networks")
    @classmethod
    def _webhook_allowed_networks(cls, value: str) -> str:
        for item in _comma_list(value):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an address or a network such as 10.0.0.0/8") from None
        return value

    @property
    def webhook_allowed_network_list(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(item, strict=False) for item in _comma_list(self.webhook_allowed_networks)]

    @property
    def resolved_database_url(self) -> str:
        if self.database_password:  # checked above: a server URL without a password of its own
            from sqlalchemy.engine import make_url

            return make_url(self.database_url).set(password=self.database_password).render_as_string(hide_password=False)
        return self.database_url or f"sqlite:///{self.leukemia_home / 'leukemia.db'}"

    @property
    def resolved_broker_url(self) -> str:
        if self.broker_password and self.broker_url:
            from urllib.parse import quote, urlsplit

            parts = urlsplit(self.broker_url)
            if parts.username:  # user@host → user:password@host (escaped: any characters do)
                user, at, host = parts.netloc.rpartition("@")
                return parts._replace(netloc=f"{user}:{quote(self.broker_password, safe='')}{at}{host}").geturl()
        return self.broker_url or f"sqla+sqlite:///{self.leukemia_home / 'broker.db'}"

    @property
    def resolved_artifacts_dir(self) -> Path:
        return self.artifacts_dir or self.leukemia_home / "artifacts"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url.strip() or str(self.resolved_artifacts_dir)

    @property
    def resolved_scratch_dir(self) -> Path:
        return self.scratch_dir or self.leukemia_home / "scratch"

    def stale_cutoff(self, now: datetime) -> datetime:
        """A heartbeat or a worker's last sighting older than this is stale (STALE_AFTER_SECONDS): the one rule
        the lease's reaper, the live-worker list and the lost-worker report share."""
        return now - timedelta(seconds=self.stale_after_seconds)

    @cached_property
    def api_token_or_stored(self) -> str:
        """API_TOKEN, else the one `make_secrets` keeps under LEUKEMIA_HOME (read once per settings)."""
        return self.api_token or stored_secret(self.leukemia_home, "api_token", "API_TOKEN")

    @cached_property
    def secret_key_or_stored(self) -> str:
        """SECRET_KEY, else the one `make_secrets` keeps under LEUKEMIA_HOME (read once per settings)."""
        return self.secret_key or stored_secret(self.leukemia_home, "secret_key", "SECRET_KEY")


LOG_FORMATS = ("text", "json")
# Settings that may come from a file, `<NAME>_FILE=/path` (compose `secrets:`, the official
# postgres image's convention): secrets, and the URLs that may hold one.
SECRET_FILE_SETTINGS = (
    "database_url",
    "database_password",
    "broker_url",
    "broker_password",
    "api_token",
    "secret_key",
    "admin_password",
    "metrics_token",
)


class SecretFilesSource(PydanticBaseSettingsSource):
    """`API_TOKEN_FILE=/run/secrets/api_token` sets API_TOKEN to that file's content (surrounding
    whitespace removed), so a secret need not be an environment variable that `docker inspect`,
    /proc and crash reports show. Setting both NAME and NAME_FILE, an unreadable or an empty file
    is one line naming the variable."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self.read(field_name), field_name, False

    def read(self, field_name: str) -> str | None:
        variable = field_name.upper()
        path = os.environ.get(f"{variable}_FILE", "")
        if not path:
            return None
        if os.environ.get(variable):
            raise UserInputError(f"{variable} and {variable}_FILE are both set: keep one")
        try:
            value = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise UserInputError(f"{variable}_FILE: cannot read {path}: {getattr(error, 'strerror', None) or error}") from None
        if not value:
            raise UserInputError(f"{variable}_FILE: {path} is empty")
        return value

    def __call__(self) -> dict[str, Any]:
        values = {name: self.read(name) for name in SECRET_FILE_SETTINGS if name in self.settings_cls.model_fields}
        return {name: value for name, value in values.items() if value is not None}


def _comma_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read at the edges (a CLI command, the worker's start, create_app) and handed on
    as arguments; tests change them through their settings_override fixture (tests/settings_override.py)."""
    return read_settings(Settings)


def stored_secret(home: Path, name: str, setting: str) -> str:
    """The secret `persisted_secret` keeps in LEUKEMIA_HOME/<name>; reading it creates nothing."""
    path = home / name
    value = path.read_text().strip() if path.is_file() else ""
    if not value:
        raise UserInputError(f"{setting}: not set, and {path} holds none; set it, or start `leukemia web` once to have one made")
    return value


def persisted_secret(home: Path, name: str) -> tuple[str, bool]:
    """A random secret kept in LEUKEMIA_HOME/<name> (mode 0600), made once: (value, made_now).

    Made with core.common.atomic.create_once: several processes starting at once (gunicorn workers,
    serve and its children) all end up with the same, complete value."""
    path = home / name
    home.mkdir(parents=True, exist_ok=True)
    made_now = create_once(path, secrets.token_urlsafe(32) + "\n", mode=0o600)
    value = path.read_text().strip()
    if not value:
        raise UserInputError(f"{path} is empty: delete it to have a new secret made")
    return value, made_now
