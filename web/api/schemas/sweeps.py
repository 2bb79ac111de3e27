"""The models of sweeps and cross-validations (a grid of jobs; one job per fold and the fold ensemble)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field, StringConstraints

from core.engine.data.splits import split_schema_pattern
from core.service.job_options import JobOptions, Priority
from core.service.sweep_stopping import MedianStopRule
from web.api.schemas.common import (
    Id,
    JsonRequest,
    Name,
    Paged,
    PageQuery,
    QueueName,
    Row,
    TagFilter,
    UtcTime,
)
from web.api.schemas.jobs import NOT_IN_WEB_GRIDS, JobKind, ParamsObject, StatusName
from web.inputs import CSV_FILE_NAME_PATTERN

GridValue = Union[bool, int, float, str]


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


class SweepListQuery(PageQuery):
    """GET /api/sweeps query arguments (and the page's)."""

    tag: TagFilter | None = None


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
    status: StatusName
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
    status: StatusName
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


class SweepPage(Paged):
    sweeps: list[Sweep]
