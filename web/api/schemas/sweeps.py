"""The models of sweeps and cross-validations (a grid of jobs; one job per fold and the fold ensemble)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.engine.data.splits import split_schema_pattern
from core.service.job_options import JobOptions
from core.service.jobs.request import (
    CrossValidationRequest,
    EnsembleChoice,
    Grid,
    GridValue,
    SplitName,
    SweepRequest,
)
from core.service.sweep_stopping import MedianStopRule
from web.api.schemas.common import (
    JsonRequest,
    Paged,
    PageQuery,
    Row,
    TagFilter,
    UtcTime,
)
from web.api.schemas.jobs import NOT_IN_WEB_GRIDS, JobKind, ParamsObject, StatusName
from web.inputs import CSV_FILE_NAME_PATTERN


class SweepSubmission(JsonRequest, SweepRequest):
    """POST /api/sweeps: the sweep request (core.service.jobs.request.SweepRequest), its fields as they are there;
    over the web a grid varies no path and no kind."""

    base_params: ParamsObject
    grid: Grid = Field(
        description=SweepRequest.model_fields["grid"].description,
        json_schema_extra={
            "propertyNames": {"not": {"enum": list(NOT_IN_WEB_GRIDS)}},
            "properties": {
                "csv": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": CSV_FILE_NAME_PATTERN}}
            },
        },
    )


class CrossValidationSubmission(JsonRequest, CrossValidationRequest):
    """POST /api/cross-validations: the cross-validation request (core.service.jobs.request)."""

    params: ParamsObject = Field(description="TrainParams without split and valid_split (each fold sets its own)")


class EnsembleSubmission(JsonRequest, EnsembleChoice):
    """POST /api/cross-validations/{cv_id}/ensemble: average the fold models' probabilities on a split (the
    ensemble request, core.service.jobs.request, without the path's cv_id); over the web the split is a name."""

    split: SplitName = Field(
        description=EnsembleChoice.model_fields["split"].description,
        json_schema_extra={"allOf": [{"pattern": split_schema_pattern()}, {"pattern": CSV_FILE_NAME_PATTERN}]},
    )


class SweepListQuery(PageQuery):
    """GET /api/sweeps query arguments (and the page's)."""

    tag: TagFilter | None = None


class Sweep(JobOptions, Row):
    """A sweep; its options (JobOptions) are fields of it, as submitted or edited."""

    model_config = ConfigDict(from_attributes=True, frozen=False)

    id: int
    name: str
    kind: JobKind
    base_params: dict[str, Any]
    grid: dict[str, list[GridValue]]
    created_at: UtcTime
    job_ids: list[int]
    submitted_by: int | None
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
    out_of_fold: dict[str, Any] | None = Field(
        description="metrics and per-subject table of all out-of-fold predictions; null until every fold has written them"
    )
    finished: bool = Field(description="every fold job succeeded: the ensemble can be made")
    ensembles: list[CrossValidationEnsemble]


class SweepPage(Paged):
    sweeps: list[Sweep]
