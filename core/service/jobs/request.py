"""What a user asks for when they submit work, in one shape per kind of submission: a job, a sweep (a job's
fields with base params and a grid), a cross-validation, a fold ensemble.

Each edge builds one (the forms in web.submit_views and web.cv_views, `leukemia submit`, the API, whose
request bodies in web.api.schemas are these models), and core.service.submissions.submit takes it whole
with the actor (who asks) and the Origin (through which door). Params stay raw here: core.engine.params
validates them per kind when the rows are made (core.service.jobs.create_job), after the data folder fills
in its image size. A new submit-time option is one field of core.service.job_options.JobOptions."""

from __future__ import annotations

import enum
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from core.common.text import name_pattern
from core.engine.data.splits import split_schema_pattern
from core.engine.params import input_error
from core.service.job_options import JobOptions
from core.service.records import JOB_KINDS, MAX_ID
from core.service.sweep_stopping import MedianStopRule

JobKind = Literal[JOB_KINDS]  # type: ignore[valid-type]
Id = Annotated[int, Field(strict=True, ge=1, le=MAX_ID)]
# Names are stripped, then must be non-empty and hold no control character (core.common.text.check_printable);
# a queue name holds no comma either (core.service.jobs). The patterns say so in the API's document.
Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
    Field(json_schema_extra={"pattern": name_pattern()}),
]
QueueName = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=100),
    Field(json_schema_extra={"pattern": name_pattern(",")}),
]
SplitName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
GridValue = Union[bool, int, float, str]
Grid = Annotated[dict[str, Annotated[list[GridValue], Field(min_length=1)]], Field(min_length=1)]


class Origin(enum.Enum):
    """Through which door a request came, passed beside it with the actor. `stored`: the job row's origin (a
    web job reads only files inside DATA_ROOTS, worker.tasks); `strict`: its params are JSON values taken as
    their types (the API), not text to parse (the CLI, the forms; core.engine.params.parse_params)."""

    CLI = ("cli", False)
    FORM = ("web", False)
    API = ("web", True)

    @property
    def stored(self) -> str:
        return self.value[0]

    @property
    def strict(self) -> bool:
        return self.value[1]


class Request(BaseModel):
    """A submit request: frozen, and a field it does not have is refused, naming it."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class QueuedWork(Request):
    """The fields a job and a sweep share: each of a sweep's jobs is asked for with them."""

    kind: JobKind
    parent_id: Id | None = Field(None, description="the train/finetune job whose checkpoint to start from")
    queue: QueueName | None = Field(None, description="default: gpu for train/finetune, cpu for evaluate/predict")
    options: JobOptions = Field(default_factory=JobOptions, description="priority, notes, tags, retention")


class JobRequest(QueuedWork):
    """One job: POST /api/jobs, `leukemia submit KIND`, the form of each job kind."""

    params: dict[str, Any] = Field(description="the kind's parameters (core.engine.params)")


class SweepRequest(QueuedWork):
    """One job per point of the grid's cartesian product: POST /api/sweeps, `leukemia submit sweep`, the sweep
    form. Its options are the sweep's and each of its jobs'."""

    base_params: dict[str, Any] = Field(description="the parameters every point starts from")
    grid: Grid = Field(description="field: [values]; one job per point of the cartesian product")
    name: Name | None = None
    early_stopping: MedianStopRule | None = Field(
        None, description="median stopping rule: a point worse than the finished points' median at an epoch stops"
    )

    def point(self, values: dict[str, Any]) -> JobRequest:
        """The job request of one grid point: the sweep's job fields, its base params with the point's values."""
        shared = {name: getattr(self, name) for name in QueuedWork.model_fields}
        return JobRequest(**shared, params={**self.base_params, **values})


class CrossValidationRequest(Request):
    """One training job per fold, with the same train parameters: POST /api/cross-validations, `leukemia submit
    cv`, the cross-validation form."""

    params: dict[str, Any] = Field(description="TrainParams without split and valid_split (each fold sets its own)")
    folds: int | None = Field(
        None,
        ge=2,
        le=20,
        description="K subject-grouped folds; default: the release's folds when they are subject-disjoint, else 3",
    )
    release_folds: bool = Field(False, description="use the release's own folds; refused when they share a subject")
    name: Name | None = None
    queue: QueueName | None = None


class EnsembleChoice(Request):
    """What a fold ensemble is asked to do (the body of POST /api/cross-validations/{cv_id}/ensemble)."""

    kind: Literal["evaluate", "predict"] = "predict"
    split: SplitName = Field(
        description="named split or CSV of the data folder, e.g. prelim (labelled) or final",
        json_schema_extra={"pattern": split_schema_pattern()},
    )
    tta: bool = False
    queue: QueueName | None = None


class EnsembleRequest(EnsembleChoice):
    """An evaluate or predict job averaging a finished cross-validation's fold models: the API's body with the
    path's cv_id, `leukemia submit ensemble`, the cross-validation page's ensemble form."""

    cv_id: int = Field(description="the cross-validation; one that does not exist is NotFound (404), not bad input")


AnyRequest = Union[JobRequest, SweepRequest, CrossValidationRequest, EnsembleRequest]
R = TypeVar("R", bound=Request)


def parse_request(model: type[R], values: dict[str, Any]) -> R:
    """A request from an edge's values; a bad one is a UserInputError naming the field (CLI, forms)."""
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise input_error(error) from None
