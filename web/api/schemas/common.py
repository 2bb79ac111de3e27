"""What every resource's models share: timestamps, ids, names, the row base, strict JSON bodies,
paging, the error body, options edits, deletion and disk answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
)

from core.service.job_options import TAG_PATTERN, JobOptionsEdit, check_tag
from core.service.jobs.request import Id, Name, QueueName  # noqa: F401  (ids and names as every request takes them)
from web.inputs import MAX_PAGE

# Timestamps are stored as naive UTC; the API writes them with the Z that says so.
UtcTime = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.isoformat() + "Z", return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


# The tag rule's one check and the document's pattern of it (an empty `tag=` is no tag: a 400 naming tag).
TagFilter = Annotated[
    str,
    AfterValidator(check_tag),
    Field(
        max_length=64,
        description="only those carrying this tag (core.service.job_options.check_tag)",
        json_schema_extra={"pattern": TAG_PATTERN},
    ),
]


# PATCH /api/jobs/{job_id} and /api/sweeps/{sweep_id}: the partial change of core.service.job_options, in its one shape.
OptionsEdit = JobOptionsEdit


class Row(BaseModel):
    """A response model read from an ORM row's attributes."""

    model_config = ConfigDict(from_attributes=True)


class JsonRequest(BaseModel):
    """A JSON request body: values are taken as the JSON types they are (`"folds": "3"` or
    `"tta": "yes"` is a 400 naming the field), unlike query text, which is parsed. An unknown field
    is refused, naming it: a typo must not be silently ignored (the document says additionalProperties: false)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class PageQuery(BaseModel):
    """Query arguments of a paged list."""

    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(50, ge=1, le=200)


class Paged(BaseModel):
    """One page of a list: the page's rows come in the subclass's own field, beside these."""

    total: int
    page: int
    per_page: int


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str


class OpenApiDocument(BaseModel):
    """The OpenAPI 3.1 document of this API."""

    model_config = ConfigDict(extra="allow")

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]


class ErrorBody(BaseModel):
    """Every error answer: the one line, and the field it is about when there is one."""

    error: str
    field: str | None = Field(None, description="the request field the error is about; absent when none")


class Deletion(BaseModel):
    """DELETE /api/jobs/{job_id}, /api/sweeps/{sweep_id} and /api/cross-validations/{cv_id}: what went, and the
    space it freed."""

    job_ids: list[int] = Field(description="the jobs deleted (a sweep's or a cross-validation's: all of them)")
    sweep_id: int | None = Field(None, description="the sweep deleted; null for a job")
    cv_id: int | None = Field(None, description="the cross-validation deleted (its folds and ensembles); null otherwise")
    freed_bytes: int = Field(description="bytes of the files actually removed from the artifacts dir")


class DiskUse(BaseModel):
    """GET /api/disk: the run folders' recorded sizes (what the artifact store holds) and the artifacts volume."""

    jobs_bytes: int = Field(
        description="sum of jobs.disk_bytes: each run folder in the artifact store as measured when it finished"
    )
    measured_jobs: int
    unmeasured_jobs: int = Field(
        description="queued or running jobs (a finished one is measured, at the latest when this is read)"
    )
    store: str = Field(description="the artifact store: the artifacts folder, or the s3:// bucket and prefix (ARTIFACTS_URL)")
    free_bytes: int | None = Field(description="free space on the artifacts volume; null for an object store")
    total_bytes: int | None = Field(description="size of the artifacts volume; null for an object store")
    retention: str = Field(description="the global retention policy (RETENTION): all, best or last-N")
