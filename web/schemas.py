"""The JSON API's request and response models: defined once, they validate what comes in, serialise
what goes out, and are what /api/openapi.json describes (web.openapi generates it from them).

Responses read ORM rows through `from_attributes`, so a job's fields are named here and in
core.service.records only; job parameters are the core.engine.params models and an epoch is core.engine.progress.EpochRecord,
the one shape training reports, the worker stores and the API answers."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, PlainSerializer, StringConstraints, WithJsonSchema, field_validator,
                      model_validator)

from core.common.text import PRINTABLE_PATTERN, name_pattern
from core.service.sweep_stopping import MedianStopRule
from core.service.job_options import TAG_PATTERN, JobOptions, JobOptionsEdit, Priority
from core.service.users import MAX_PASSWORD, MIN_PASSWORD, TOKEN_NAME_LENGTH, USERNAME_PATTERN
from core.engine.params import PARAMS_BY_KIND
from core.engine.splits import split_schema_pattern
from core.engine.progress import EpochRecord
from core.engine.run_files import ARTIFACT_KINDS
from core.service.records import DELIVERY_STATUSES, JOB_KINDS, JOB_STATUSES, ROLES, WEBHOOK_EVENTS
from core.engine.results import ClinicalReport, ExplainedImage, ImageResult, PredictionSummary, Threshold
from core.service.webhook_http import redact_url
from web.inputs import CSV_FILE_NAME_PATTERN, MAX_ID, MAX_PAGE

# Timestamps are stored as naive UTC; the API writes them with the Z that says so.
UtcTime = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.isoformat() + "Z", return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
# Names are stripped, then must be non-empty and hold no control character (core.common.text.check_printable);
# a queue name holds no comma either (core.service.jobs). The patterns say so in the document.
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                 Field(json_schema_extra={"pattern": name_pattern()})]
QueueName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
                      Field(json_schema_extra={"pattern": name_pattern(",")})]
JobKind = Literal[JOB_KINDS]  # type: ignore[valid-type]
JobStatus = Literal[JOB_STATUSES]  # type: ignore[valid-type]
# Over the web no path comes from a request (web.api.check_web_params): no checkpoint (a parent job gives it),
# and a CSV is a file name inside the data folder.
WEB_PARAMS = {"properties": {"checkpoint": {"maxLength": 0}, "checkpoints": {"maxItems": 0},
                             "csv": {"pattern": CSV_FILE_NAME_PATTERN}}}
# Fields a sweep may not vary over the web: paths never come from a request, and kind is the sweep's.
NOT_IN_WEB_GRIDS = ("data_dir", "checkpoint", "checkpoints", "kind")
# A request's params: validated per kind by core.engine.params after the data-folder check; described as those models.
ParamsObject = Annotated[
    dict[str, Any],
    WithJsonSchema({"anyOf": [{"$ref": f"#/components/schemas/{model.__name__}"} for model in PARAMS_BY_KIND.values()],
                    "allOf": [WEB_PARAMS],
                    "description": "data_dir must be a registered data folder's path; no checkpoint paths"}),
]
GridValue = Union[bool, int, float, str]
TagFilter = Annotated[str, Field(max_length=64, description="only those carrying this tag (core.service.job_options.check_tag)",
                                  json_schema_extra={"pattern": TAG_PATTERN})]
# PATCH /api/jobs/{job_id} and /api/sweeps/{sweep_id}: the partial change of core.service.job_options, in its one shape.
OptionsEdit = JobOptionsEdit


class Row(BaseModel):
    """A response model read from an ORM row's attributes."""

    model_config = ConfigDict(from_attributes=True)


# --- requests --------------------------------------------------------------------------------


class JsonRequest(BaseModel):
    """A JSON request body: values are taken as the JSON types they are (`"folds": "3"` or
    `"tta": "yes"` is a 400 naming the field), unlike query text, which is parsed. An unknown field
    is refused, naming it: a typo must not be silently ignored (the document says additionalProperties: false)."""

    model_config = ConfigDict(strict=True, extra="forbid")


class JobSubmission(JsonRequest):
    """POST /api/jobs."""

    kind: JobKind
    params: ParamsObject
    parent_id: Id | None = Field(None, description="the train/finetune job whose checkpoint to start from")
    queue: QueueName | None = Field(None, description="default: gpu for train/finetune, cpu for evaluate/predict")
    options: JobOptions = Field(default_factory=JobOptions, description="priority, notes, tags, retention")


class SweepSubmission(JsonRequest):
    """POST /api/sweeps: one job per point of the cartesian product of grid."""

    kind: JobKind
    base_params: ParamsObject
    grid: dict[str, Annotated[list[GridValue], Field(min_length=1)]] = Field(
        min_length=1, description="field: [values]; one job per point of the cartesian product",
        json_schema_extra={"propertyNames": {"not": {"enum": list(NOT_IN_WEB_GRIDS)}},
                           "properties": {"csv": {"type": "array", "minItems": 1,
                                                  "items": {"type": "string", "pattern": CSV_FILE_NAME_PATTERN}}}})
    name: Name | None = None
    parent_id: Id | None = None
    queue: QueueName | None = None
    options: JobOptions = Field(default_factory=JobOptions, description="the sweep's and each of its jobs'")
    early_stopping: MedianStopRule | None = Field(
        None, description="median stopping rule: a point worse than the finished points' median at an epoch stops")


class CrossValidationSubmission(JsonRequest):
    """POST /api/cross-validations: one training job per fold, with the same train parameters."""

    params: ParamsObject = Field(description="TrainParams without split and valid_split (each fold sets its own)")
    folds: int | None = Field(None, ge=2, le=20, description="K subject-grouped folds; default: the release's folds "
                                                                    "when they are subject-disjoint, else 3")
    release_folds: bool = Field(False, description="use the release's own folds; refused when they share a subject")
    name: Name | None = None
    queue: QueueName | None = None


class EnsembleSubmission(JsonRequest):
    """POST /api/cross-validations/{cv_id}/ensemble: average the fold models' probabilities on a split."""

    kind: Literal["evaluate", "predict"] = "predict"
    split: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)] = Field(
        description="named split or CSV of the data folder, e.g. prelim (labelled) or final",
        json_schema_extra={"allOf": [{"pattern": split_schema_pattern()}, {"pattern": CSV_FILE_NAME_PATTERN}]})
    tta: bool = False
    queue: QueueName | None = None


class DataFolderRegistration(JsonRequest):
    """POST /api/data-folders."""

    path: str = Field(description="absolute path under a configured data root",
                      json_schema_extra={"pattern": f"^/{PRINTABLE_PATTERN[1:]}"})
    name: Name | None = Field(None, description="default: the folder's name")


class JobListQuery(BaseModel):
    """GET /api/jobs query arguments."""

    status: JobStatus | None = None
    kind: JobKind | None = None
    sweep_id: int | None = Field(None, ge=1, le=MAX_ID)  # query text: not strict
    tag: TagFilter | None = None
    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(50, ge=1, le=200)


class SweepListQuery(BaseModel):
    """GET /api/sweeps query arguments."""

    tag: TagFilter | None = None
    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(50, ge=1, le=200)


class PageQuery(BaseModel):
    """Query arguments of a paged list."""

    page: int = Field(1, ge=1, le=MAX_PAGE)
    per_page: int = Field(50, ge=1, le=200)


# --- responses -------------------------------------------------------------------------------


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


class Job(Row):
    id: int
    kind: JobKind
    status: JobStatus
    params: dict[str, Any]
    parent_id: int | None
    sweep_id: int | None
    cv_id: int | None = Field(description="the cross-validation this job is a fold (cv_fold) or an ensemble of")
    cv_fold: int | None
    data_dir: str
    queue: str
    worker_host: str | None
    attempts: int
    max_attempts: int
    cancel_requested: bool
    created_at: UtcTime
    started_at: UtcTime | None
    finished_at: UtcTime | None
    progress: float
    epoch: int | None
    epochs_total: int | None
    images_per_s: float | None
    eta_s: float | None
    error: str | None
    best_valid_accuracy: float | None
    log_tail: str | None
    finished: bool
    queue_position: int | None = Field(description="1-based place among the queued jobs of its queue, in the order "
                                                    "they start (higher priority first, then oldest); null unless queued")
    queue_served: bool = Field(description="false: no live worker consumes this job's queue")
    submitted_by: int | None = Field(description="the submitting user's id; null: submitted from the CLI")
    submitted_by_name: str = Field(description="the submitting user's name, or 'cli'")
    priority: Priority
    description: str
    tags: list[str]
    retention: str | None = Field(description="all, best or last-N; null: the global policy")
    stopped_epoch: int | None = Field(description="the epoch a run stopped at before its last (early stopping)")
    stop_reason: str | None
    disk_bytes: int | None = Field(description="its run folder's size on disk, measured when it finished")


class Artifact(Row):
    id: int
    job_id: int
    kind: Literal[ARTIFACT_KINDS]  # type: ignore[valid-type]
    name: str
    size_bytes: int
    sha256: str
    created_at: UtcTime


class Sweep(Row):
    id: int
    name: str
    kind: JobKind
    base_params: dict[str, Any]
    grid: dict[str, list[GridValue]]
    created_at: UtcTime
    job_ids: list[int]
    submitted_by: int | None
    priority: Priority
    description: str
    tags: list[str]
    retention: str | None
    early_stopping: MedianStopRule | None


class FoldMetrics(BaseModel):
    fold: int
    epoch: int = Field(description="the fold's best epoch (highest valid accuracy, the one best.pt keeps)")
    accuracy: float
    balanced_accuracy: float
    weighted_f1: float


class CrossValidationFold(BaseModel):
    fold: int
    job_id: int
    status: JobStatus
    progress: float
    split: str | None
    valid_split: str | None
    best: FoldMetrics | None


class MeanStd(BaseModel):
    mean: float | None
    std: float | None = Field(description="sample standard deviation over folds (n-1); null with one fold")


class CrossValidationEnsemble(BaseModel):
    job_id: int
    kind: JobKind
    status: JobStatus
    split: str | None
    tta: bool | None


class CrossValidation(BaseModel):
    id: int
    name: str
    data_dir: str
    scheme: str = Field(description="how the folds were made, in words")
    base_params: dict[str, Any]
    created_at: UtcTime
    submitted_by: int | None = Field(description="who submitted its folds (its owner); null: the CLI")
    folds: list[CrossValidationFold]
    mean_std: dict[str, MeanStd] = Field(description="accuracy, balanced_accuracy, weighted_f1 over the folds with results")
    out_of_fold: dict[str, Any] | None = Field(description="metrics and per-subject table of all out-of-fold "
                                                           "predictions; null until every fold has written them")
    finished: bool = Field(description="every fold job succeeded: the ensemble can be made")
    ensembles: list[CrossValidationEnsemble]


class DataFolder(Row):
    id: int
    name: str
    path: str
    registered_at: UtcTime
    report: dict[str, Any] | None = Field(description="core.engine.check's report; {ok: false, error} when the check refused it")


class JobPage(BaseModel):
    jobs: list[Job]
    total: int
    page: int
    per_page: int


class SweepPage(BaseModel):
    sweeps: list[Sweep]
    total: int
    page: int
    per_page: int


class JobMetrics(BaseModel):
    job_id: int
    epochs: list[EpochRecord]


class JobArtifacts(BaseModel):
    job_id: int
    artifacts: list[Artifact]


class DataFolderList(BaseModel):
    data_folders: list[DataFolder]


class Evaluation(BaseModel):
    """evaluation.json of an evaluate job: the headline metrics at the operating threshold and the clinical report.

    An evaluation written before the clinical report (an upgraded installation's older jobs) holds the
    headline metrics, the confusion matrix and one `checkpoint` only: threshold and clinical are null."""

    accuracy: float
    balanced_accuracy: float
    weighted_f1: float = Field(description="the headline metric (the C-NMC challenge's)")
    confusion: list[list[int]] = Field(description="[[tn, fp], [fn, tp]], rows = true class")
    count: int
    threshold: Threshold | None = Field(None, description="null in an evaluation written before operating thresholds")
    clinical: ClinicalReport | None = Field(None, description="null in an evaluation written before the clinical report")
    subjects: list[dict[str, Any]] = Field(default_factory=list, description="per subject, worst accuracy first")
    explained: int = 0
    explanation_convention: str | None = None
    checkpoints: list[str] = Field(default_factory=list)
    csv: str = ""
    tta: bool = False

    @model_validator(mode="before")
    @classmethod
    def _older_file(cls, data: Any) -> Any:
        """An older evaluation.json names its one checkpoint as `checkpoint` and has no threshold or report."""
        if isinstance(data, dict) and "checkpoints" not in data and isinstance(data.get("checkpoint"), str):
            return {**data, "checkpoints": [data["checkpoint"]]}
        return data


class JobResults(BaseModel):
    """What an evaluate or predict job produced (nulls until it has finished, and for other kinds)."""

    job_id: int
    kind: JobKind
    evaluation: Evaluation | None
    prediction: PredictionSummary | None
    explained: list[ExplainedImage] = Field(description="heat maps: GET .../explanations/{index}, 1-based in this order")
    explanation_convention: str | None


class JobImages(BaseModel):
    """The per-image table of an evaluate job (empty for other kinds); thumbnails: GET .../images/{index}/thumbnail."""

    job_id: int
    images: list[ImageResult]


# --- users, tokens, audit log (core.service.users, core.service.audit) ----------------------------------------------

Role = Literal[ROLES]  # type: ignore[valid-type]


class Me(BaseModel):
    """Who the request acts as: the token's user (the settings' API_TOKEN: the user ADMIN_USERNAME, with their
    role now), or the logged-in one."""

    id: int
    username: str
    role: Role


class UserInfo(Row):
    id: int
    username: str
    role: Role
    disabled: bool = Field(description="no login, and its tokens are refused")
    created_at: UtcTime


class UserList(BaseModel):
    users: list[UserInfo]


class UserCreate(JsonRequest):
    """POST /api/users."""

    username: str = Field(description="1-150 letters, digits and . _ @ -, starting with a letter or digit",
                          json_schema_extra={"pattern": USERNAME_PATTERN})
    role: Role = "member"
    password: str | None = Field(None, description="8-200 characters; omitted: one is generated and answered once",
                                 json_schema_extra={"minLength": MIN_PASSWORD, "maxLength": MAX_PASSWORD,
                                                    "pattern": PRINTABLE_PATTERN})


class UserCreated(BaseModel):
    user: UserInfo
    password: str | None = Field(description="the generated password, shown this once; null when one was given")


class UserUpdate(JsonRequest):
    """PATCH /api/users/{user_id}: the fields to change."""

    role: Role | None = None
    disabled: bool | None = Field(None, description="true ends the user's sessions and refuses their tokens at once")


class PasswordReset(BaseModel):
    user: UserInfo
    password: str = Field(description="the new generated password, shown this once; the user's sessions ended")


class TokenInfo(Row):
    id: int
    user_id: int
    name: str
    prefix: str = Field(description="the token's first characters, to tell tokens apart")
    created_at: UtcTime
    last_used_at: UtcTime | None
    revoked_at: UtcTime | None


class TokenList(BaseModel):
    tokens: list[TokenInfo]


class TokenCreate(JsonRequest):
    """POST /api/tokens: a token for yourself."""

    name: str = Field(description="a label, e.g. the machine that uses it (1-100 characters)",
                      json_schema_extra={"maxLength": TOKEN_NAME_LENGTH, "pattern": name_pattern()})


class TokenCreated(BaseModel):
    token: TokenInfo
    secret: str = Field(description="the token, shown this once (only its SHA-256 is kept): send it as Bearer")


class AuditEntry(Row):
    id: int
    at: UtcTime
    user_id: int | None
    username: str
    action: str = Field(description="<target>.<verb>, e.g. job.submit, user.disable, token.revoke")
    target_type: str
    target_id: str | None
    detail: dict[str, Any] | None
    address: str | None = Field(description="the client address of the web request; null from the CLI")


class AuditPage(BaseModel):
    entries: list[AuditEntry]
    total: int
    page: int
    per_page: int


# --- retention and disk (core.service.deletion, core.service.disk) ------------------------------------------


class Deletion(BaseModel):
    """DELETE /api/jobs/{job_id}, /api/sweeps/{sweep_id} and /api/cross-validations/{cv_id}: what went, and the
    space it freed."""

    job_ids: list[int] = Field(description="the jobs deleted (a sweep's or a cross-validation's: all of them)")
    sweep_id: int | None = Field(None, description="the sweep deleted; null for a job")
    cv_id: int | None = Field(None, description="the cross-validation deleted (its folds and ensembles); null otherwise")
    freed_bytes: int = Field(description="bytes of the files actually removed from the artifacts dir")


class DiskUse(BaseModel):
    """GET /api/disk: the run folders' recorded sizes and the artifacts volume."""

    jobs_bytes: int = Field(description="sum of jobs.disk_bytes: each run folder as measured when it finished")
    measured_jobs: int
    unmeasured_jobs: int = Field(description="queued or running jobs (a finished one is measured, at the latest when this is read)")
    free_bytes: int = Field(description="free space on the artifacts volume")
    total_bytes: int = Field(description="size of the artifacts volume")
    retention: str = Field(description="the global retention policy (RETENTION): all, best or last-N")


# --- webhooks (admin) ----------------------------------------------------------------------------

WebhookEvent = Literal[WEBHOOK_EVENTS]  # type: ignore[valid-type]
# The document's reading of what core's url and secret checks take, in their plain form (the url check also
# takes IPv6 hosts, user@, a query; the secret check any printable characters without surrounding spaces).
WEBHOOK_URL = {"maxLength": 2000, "pattern": r"^https?://[A-Za-z0-9]([A-Za-z0-9.-]{0,252}[A-Za-z0-9])?"
                                              r"(:[1-9][0-9]{0,3})?(/[!-~]*)?$"}
WEBHOOK_SECRET = {"minLength": 16, "maxLength": 128, "pattern": r"^[!-~]([ -~]*[!-~])?$"}


class WebhookCreation(JsonRequest):
    """POST /api/webhooks."""

    url: str = Field(description="an http:// or https:// address that accepts POSTed JSON", json_schema_extra=WEBHOOK_URL)
    events: list[WebhookEvent] = Field(default_factory=lambda: list(WEBHOOK_EVENTS), min_length=1,
                                       description="default: all of them")
    secret: str | None = Field(None, description="the signing secret, 16-128 characters; default: a generated one",
                               json_schema_extra=WEBHOOK_SECRET)


class WebhookChange(JsonRequest):
    """PATCH /api/webhooks/{webhook_id}: the fields given are changed."""

    url: str | None = Field(None, json_schema_extra=WEBHOOK_URL)
    events: list[WebhookEvent] | None = Field(None, min_length=1)
    enabled: bool | None = None


class Webhook(Row):
    id: int
    url: str = Field(description="the receiver's address; a user:password@ in it is shown as ***@")
    events: list[str]
    enabled: bool
    created_at: UtcTime
    created_by: int | None = Field(description="the admin's user id; null: the CLI")

    @field_validator("url")
    @classmethod
    def _redacted(cls, url: str) -> str:
        return redact_url(url)


class WebhookCreated(Webhook):
    """The new webhook and its signing secret, shown this once."""

    secret: str


class WebhookList(BaseModel):
    webhooks: list[Webhook]


class WebhookDelivery(Row):
    id: int
    webhook_id: int
    event: str = Field(description="one of the webhook events, or webhook.test")
    status: Literal[DELIVERY_STATUSES]  # type: ignore[valid-type]
    attempts: int
    response_code: int | None = Field(description="the receiver's HTTP status at the last attempt; null: no answer")
    last_error: str | None
    next_attempt_at: UtcTime | None = Field(description="when a pending delivery is tried next")
    created_at: UtcTime
    finished_at: UtcTime | None
    body: str = Field(description="the exact JSON sent and signed")


class WebhookDeliveryPage(BaseModel):
    deliveries: list[WebhookDelivery]
    total: int
    page: int
    per_page: int
