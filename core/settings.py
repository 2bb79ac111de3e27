"""One typed settings object read from the environment. Unset, everything lives under
LEUKEMIA_HOME (SQLite database, embedded broker, artifacts): the embedded default."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    leukemia_home: Path = Field(Path.home() / ".leukemia", description="Folder for everything the embedded default keeps.")
    database_url: str = Field("", description="SQLAlchemy URL; default: SQLite in LEUKEMIA_HOME.")
    broker_url: str = Field("", description="Celery broker; default: embedded (kombu SQLAlchemy transport over SQLite).")
    artifacts_dir: Path | None = Field(None, description="Checkpoints, CSVs, plots; default: LEUKEMIA_HOME/artifacts.")
    cache_dir: Path | None = Field(None, description="Decoded-image caches; default: LEUKEMIA_HOME/cache.")
    data_roots: str = Field("", description="Colon-separated folders under which data folders may be registered.")
    api_token: str = Field("", description="Bearer token for the JSON API.")
    secret_key: str = Field("", description="Flask session signing key.")
    heartbeat_seconds: float = Field(5.0, gt=0)
    stale_after_seconds: float = Field(60.0, gt=0, description="A running job whose heartbeat is older is 'worker lost'.")
    max_attempts: int = Field(3, ge=1)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.leukemia_home / 'leukemia.db'}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.leukemia_home / 'broker.db'}"

    @property
    def resolved_artifacts_dir(self) -> Path:
        return self.artifacts_dir or self.leukemia_home / "artifacts"

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.leukemia_home / "cache"

    @property
    def data_root_paths(self) -> list[Path]:
        roots = [Path(p).expanduser().resolve() for p in self.data_roots.split(":") if p.strip()]
        return roots or [(self.leukemia_home / "data").resolve()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings; tests call get_settings.cache_clear() after changing the environment."""
    return Settings()
