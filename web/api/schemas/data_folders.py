"""The models of data folders: registration and the registered folder with its check report."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from core.common.text import PRINTABLE_PATTERN
from web.api.schemas.common import JsonRequest, Name, Row, UtcTime


class DataFolderRegistration(JsonRequest):
    """POST /api/data-folders."""

    path: str = Field(
        description="absolute path under a configured data root", json_schema_extra={"pattern": f"^/{PRINTABLE_PATTERN[1:]}"}
    )
    name: Name | None = Field(None, description="default: the folder's name")


class DataFolder(Row):
    id: int
    name: str
    path: str
    registered_at: UtcTime
    report: dict[str, Any] | None = Field(
        description="core.engine.data.check's report; {ok: false, error} when the check refused it"
    )


class DataFolderList(BaseModel):
    data_folders: list[DataFolder]
