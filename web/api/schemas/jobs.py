"""The models of jobs: the submission, the list query, the job answer, its metrics, artifacts, results and images."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, model_validator

from core.engine.evaluation.results import (
    ClinicalReport,
    ExplainedImage,
    ImageResult,
    PredictionSummary,
    Threshold,
)
from core.engine.params import PARAMS_BY_KIND
from core.engine.progress import EpochRecord
from core.engine.run_folder.layout import ARTIFACT_KINDS
from core.service.job_options import JobOptions
from core.service.jobs.request import JobKind, JobRequest
from core.service.records import JOB_STATUSES
from web.api.schemas.common import JsonRequest, Paged, PageQuery, Row, TagFilter, UtcTime
from web.inputs import CSV_FILE_NAME_PATTERN, MAX_ID

StatusName = Literal[JOB_STATUSES]  # type: ignore[valid-type]  (core.service.records.JobStatus, as the API writes it)


# Over the web no path comes from a request (web.api.check_web_params): no checkpoint (a parent job gives it),
# and a CSV is a file name inside the data folder.
WEB_PARAMS = {
    "properties": {"checkpoint": {"maxLength": 0}, "checkpoints": {"maxItems": 0}, "csv": {"pattern": CSV_FILE_NAME_PATTERN}}
}


# Fields a sweep may not vary over the web: paths never come from a request, and kind is the sweep's.
NOT_IN_WEB_GRIDS = ("data_dir", "checkpoint", "checkpoints", "kind")


# A request's params: validated per kind by core.engine.params after the data-folder check; described as those models.
ParamsObject = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "anyOf": [{"$ref": f"#/components/schemas/{model.__name__}"} for model in PARAMS_BY_KIND.values()],
            "allOf": [WEB_PARAMS],
            "description": "data_dir must be a registered data folder's path; no checkpoint paths",
        }
    ),
]


class JobSubmission(JsonRequest, JobRequest):
    """POST /api/jobs: the job request (core.service.jobs.request.JobRequest), its fields as they are there."""

    params: ParamsObject


class JobListQuery(PageQuery):
    """GET /api/jobs query arguments (and the page's)."""

    status: StatusName | None = None
    kind: JobKind | None = None
    sweep_id: int | None = Field(None, ge=1, le=MAX_ID)  # query text: not strict
    tag: TagFilter | None = None


class Job(JobOptions, Row):
    """A job as the API and the live pages see it; its options (JobOptions: priority, notes, tags, retention...)
    are fields of it, as submitted or edited."""

    model_config = ConfigDict(from_attributes=True, frozen=False)

    id: int
    kind: JobKind
    status: StatusName
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
    queue_position: int | None = Field(
        description="1-based place among the queued jobs of its queue, in the order "
        "they start (higher priority first, then oldest); null unless queued"
    )
    queue_served: bool = Field(description="false: no live worker consumes this job's queue")
    submitted_by: int | None = Field(description="the submitting user's id; null: submitted from the CLI")
    submitted_by_name: str = Field(description="the submitting user's name, or 'cli'")
    stopped_epoch: int | None = Field(description="the epoch a run stopped at before its last (early stopping)")
    stop_reason: str | None
    attempt_note: str | None = Field(
        description="how its latest attempt started when it was not its first: resumed at "
        "an epoch from last.pt, or over at epoch 1 for want of a checkpoint"
    )
    disk_bytes: int | None = Field(description="its run folder's size in the artifact store, measured when it finished")


class Artifact(Row):
    id: int
    job_id: int
    kind: Literal[ARTIFACT_KINDS]  # type: ignore[valid-type]
    name: str
    size_bytes: int
    sha256: str
    created_at: UtcTime


class JobPage(Paged):
    jobs: list[Job]


class JobMetrics(BaseModel):
    job_id: int
    epochs: list[EpochRecord]


class JobArtifacts(BaseModel):
    job_id: int
    artifacts: list[Artifact]


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
