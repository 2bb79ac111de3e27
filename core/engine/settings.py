"""The settings the ML engine reads: where decoded-image caches go, how many threads decode, which
folders data may come from, how much disk must stay free. Read from the environment on every call
(a few fields, read once per run), so the engine needs no server and no service settings;
core.service.settings.Settings extends this class, so each field is declared once."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.common.errors import UserInputError


class EngineSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", case_sensitive=False)

    leukemia_home: Path = Field(Path.home() / ".leukemia", description="Folder for everything the embedded default keeps.")
    cache_dir: Path | None = Field(
        None,
        description="Decoded-image caches and parent checkpoints fetched from the artifact store; default: LEUKEMIA_HOME/cache.",
    )
    cache_max_gb: float = Field(
        0.0,
        ge=0,
        description="Most this node's CACHE_DIR may hold (GB); least recently used entries not in use go first. 0: no cap.",
    )
    data_roots: str = Field("", description="Colon-separated folders under which data folders may be registered.")
    decode_workers: int = Field(
        0, ge=0, description="Most threads decoding images for one job; 0: as many as the machine has cores."
    )
    min_free_disk_mb: float = Field(0.0, ge=0, description="Disk space (MiB) that must stay free after each checkpoint write.")

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.leukemia_home / "cache"

    @property
    def data_root_paths(self) -> list[Path]:
        roots = [Path(p).expanduser().resolve() for p in self.data_roots.split(":") if p.strip()]
        return roots or [(self.leukemia_home / "data").resolve()]


def read_settings(settings_class: type[BaseSettings], **given: object) -> BaseSettings:
    """Settings of settings_class from the environment, with `given` fields in place of theirs (a
    command line option); a bad value is one line naming the variable."""
    try:
        return settings_class(**given)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])).upper()}: {e['msg']}" if e["loc"] else e["msg"] for e in error.errors()
        )  # a check of several settings names them itself
        raise UserInputError(f"bad setting in the environment: {problems}") from None


def engine_settings() -> EngineSettings:
    """The engine's settings as the environment has them now."""
    return read_settings(EngineSettings)
