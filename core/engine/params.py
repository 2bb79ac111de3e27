"""The one schema for job parameters, shared by the CLI, the JSON API, the web forms and
the worker: a bad value is refused where it is typed, naming the field.

`parse_params(kind, values, strict=False)` builds one: strict (the JSON API) takes values as their JSON
types, else text is parsed. Names and file names holding control characters are refused
(core.common.text.check_printable)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from core.common.errors import UserInputError
from core.common.text import CONTROL_CHARACTER, NO_CONTROL_CHARACTERS, PRINTABLE_PATTERN
from core.engine.data.splits import SPLIT_HELP, check_split_name, split_schema_pattern
from core.engine.training.early_stopping import DEFAULT_PATIENCE, EarlyStoppingMetric

Architecture = Literal["resnet18", "resnet50", "resnet152"]
Device = Literal["auto", "cpu", "cuda"]
# What the validators below accept, as JSON Schema patterns for the API's document (each in its plain
# form: the checks also take surrounding spaces and upper case).
WEIGHT = r"([1-9][0-9]{0,5}(\.[0-9]{1,6})?|0?\.[0-9]{0,5}[1-9])"  # positive, finite: 0.000001 to 999999.999999
CLASS_WEIGHTS_PATTERN = rf"^(auto|none|{WEIGHT},{WEIGHT})$"
EXPLAIN_PATTERN = r"^(|none|all|0|[0-9]*[1-9][0-9]*)$"


def _document_printable(schema: dict[str, Any]) -> None:
    """The document says what _printable checks: a text field without a pattern of its own gets the printable one."""
    for field in schema.get("properties", {}).values():
        for part in [field, field.get("items", {}), *field.get("anyOf", [])]:
            if part.get("type") == "string" and not {"enum", "const", "pattern"} & (part.keys() | field.keys()):
                part["pattern"] = PRINTABLE_PATTERN


class _Params(BaseModel):
    # Unknown fields are refused: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_document_printable)

    @field_validator("*")
    @classmethod
    def _printable(cls, value: Any) -> Any:
        """Every text parameter is a name or a path (data_dir, csv, split, checkpoint...)."""
        for text in value if isinstance(value, list) else [value]:
            if isinstance(text, str) and CONTROL_CHARACTER.search(text):
                raise ValueError(NO_CONTROL_CHARACTERS)
        return value


class TrainParams(_Params):
    """Train a ResNet from scratch. Defaults follow the lab's ResNet18 run."""

    kind: Literal["train"] = "train"
    data_dir: str = Field(min_length=1, description="Data folder (lab layout: train.csv, valid.csv, test CSV).")
    arch: Architecture = "resnet18"
    epochs: int = Field(10, ge=1, le=1000)
    batch_size: int = Field(16, ge=2, le=4096, description="Images per step; BatchNorm needs at least 2.")
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0, le=10)
    schedule: Literal["step", "cosine", "constant"] = Field(
        "step", description="step: the lab's two phases (lr, then lr*lr_gamma from lr_step_epoch on)."
    )
    lr_step_epoch: int | None = Field(None, ge=1, description="Epoch where the step schedule drops; default: half way.")
    lr_gamma: float = Field(0.1, gt=0, le=1)
    warmup_epochs: int = Field(0, ge=0, le=100)
    weight_decay: float = Field(0.0, ge=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD only.")
    class_weights: str = Field(
        "1.2,1.0",
        description="auto (inverse class frequency), none, or W0,W1.",
        json_schema_extra={"pattern": CLASS_WEIGHTS_PATTERN},
    )
    augment: bool = True
    image_size: int = Field(
        450,
        ge=32,
        le=1024,
        description="Side in pixels; the CLI and forms default to the folder's when all its images share one.",
    )
    split: str = Field(
        "train", description=f"Training split: {SPLIT_HELP}.", json_schema_extra={"pattern": split_schema_pattern()}
    )
    valid_split: str | None = Field(
        None,
        description="Validation split: a split name, share:F (a subject-disjoint share of the training split) or none; "
        "default: valid.csv / the release's held-out share when training on train.",
        json_schema_extra={"pattern": split_schema_pattern(validation=True)},
    )
    early_stopping_metric: EarlyStoppingMetric | None = Field(
        None,
        description="Stop when this validation metric has not improved for early_stopping_patience epochs; "
        "best.pt then follows this metric (valid_loss: lowest) instead of valid_accuracy. Needs a validation split.",
    )
    early_stopping_patience: int | None = Field(
        None, ge=1, le=1000, description=f"Epochs without improvement before the run stops (default {DEFAULT_PATIENCE})."
    )
    early_stopping_min_delta: float | None = Field(
        None, ge=0, le=1e6, description="Smallest change that counts as an improvement (default 0)."
    )
    seed: int = Field(0, ge=0, le=2**31 - 1)
    device: Device = "auto"
    amp: bool = Field(True, description="bf16 autocast and channels_last on a GPU; ignored on the CPU.")
    compile: bool = Field(False, description="torch.compile the model (GPU).")
    num_workers: int = Field(
        0, ge=0, le=64, description="Image decoding threads; 0: the machine's cores (capped by DECODE_WORKERS)."
    )

    @field_validator("split")
    @classmethod
    def _split(cls, value: str) -> str:
        return check_split_name(value)

    @field_validator("valid_split")
    @classmethod
    def _valid_split(cls, value: str | None) -> str | None:
        return None if value is None or not value.strip() else check_split_name(value, validation=True)

    @field_validator("class_weights")
    @classmethod
    def _class_weights(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("auto", "none"):
            return value
        parts = value.split(",")
        try:
            weights = [float(p) for p in parts]
        except ValueError:
            weights = []
        if len(weights) != 2 or any(w <= 0 or w != w or w == float("inf") for w in weights):
            raise ValueError("must be auto, none or two positive numbers W0,W1 (e.g. 1.2,1.0)")
        return ",".join(f"{w:g}" for w in weights)

    @model_validator(mode="after")
    def _schedule_fits(self) -> "TrainParams":
        if self.lr_step_epoch is not None and self.lr_step_epoch > self.epochs:
            raise ValueError(f"lr_step_epoch ({self.lr_step_epoch}) is after the last epoch ({self.epochs})")
        if self.warmup_epochs >= self.epochs and self.warmup_epochs > 0:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs ({self.epochs})")
        return self

    @field_validator("early_stopping_patience", "early_stopping_min_delta")
    @classmethod
    def _needs_metric(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is not None and info.data.get("early_stopping_metric") is None:
            raise ValueError("only applies with early_stopping_metric (the validation metric to watch)")
        return value

    @field_validator("early_stopping_metric")
    @classmethod
    def _needs_validation(cls, value: str | None, info: ValidationInfo) -> str | None:
        valid_split, split = info.data.get("valid_split"), info.data.get("split")
        if value is not None and (valid_split == "none" or (valid_split is None and split not in (None, "train"))):
            raise ValueError(
                f"{value} needs a validation split; set valid_split (training on {split} has none by default)"
                if valid_split is None
                else f"{value} needs a validation split, but valid_split is none"
            )
        return value

    @property
    def patience(self) -> int:
        """Epochs without improvement before an early stop (meaningful with early_stopping_metric)."""
        return self.early_stopping_patience or DEFAULT_PATIENCE

    @property
    def min_delta(self) -> float:
        return self.early_stopping_min_delta or 0.0


class FinetuneParams(TrainParams):
    """Continue from a checkpoint, by default on train+valid with a smaller learning rate (the lab's last step)."""

    kind: Literal["finetune"] = "finetune"  # type: ignore[assignment]
    checkpoint: str = Field(
        "", description="Run folder or .pt file (CLI); left empty for a job, which takes its parent job's checkpoint."
    )
    checkpoint_choice: Literal["best", "last"] = "best"
    epochs: int = Field(3, ge=1, le=1000)
    lr: float = Field(1e-4, gt=0, le=10)
    schedule: Literal["step", "cosine", "constant"] = "constant"
    split: str = Field(
        "train_all", description=f"Training split: {SPLIT_HELP}.", json_schema_extra={"pattern": split_schema_pattern()}
    )
    # None: taken from the checkpoint; a value that disagrees with it is refused.
    arch: Architecture | None = None  # type: ignore[assignment]
    image_size: int | None = Field(None, ge=32, le=1024, description="Default: the checkpoint's.")  # type: ignore[assignment]


class OperatingPointParams(_Params):
    """Where evaluate and predict call an image ALL, and which images get a Grad-CAM heat map."""

    threshold: float | None = Field(
        None, ge=0, le=1, description="Call ALL at P(ALL) >= this. Default: the checkpoint's recorded one, else 0.5."
    )
    threshold_from: Literal["recorded", "valid"] = Field(
        "recorded",
        description="valid: choose the threshold on the data folder's valid.csv and record it in the checkpoint "
        "(a queued job records it only when its submitter owns the model or is an admin; else the job's results keep it).",
    )
    target_sensitivity: float | None = Field(
        None,
        description="With threshold_from valid: the highest threshold reaching this sensitivity; default Youden's J.",
        json_schema_extra={"exclusiveMinimum": 0, "maximum": 1},
    )
    explain: str = Field(
        "",
        description="Grad-CAM maps: N (the N most confident mistakes and N least confident images), all, or none.",
        json_schema_extra={"pattern": EXPLAIN_PATTERN},
    )

    @field_validator("threshold_from")
    @classmethod
    def _one_threshold_source(cls, value: str, info: ValidationInfo) -> str:
        if value == "valid" and info.data.get("threshold") is not None:
            raise ValueError("give either a threshold or threshold_from valid, not both")
        return value

    @field_validator("target_sensitivity")
    @classmethod
    def _sensitivity(cls, value: float | None, info: ValidationInfo) -> float | None:
        if value is None:
            return None
        if not 0 < value <= 1:
            raise ValueError(f"{value:g} is not a sensitivity; give a fraction in (0, 1], e.g. 0.95")
        if info.data.get("threshold_from") != "valid":
            raise ValueError("only applies with threshold_from valid")
        return value

    @field_validator("explain")
    @classmethod
    def _explain(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("", "none", "0"):
            return ""
        if value == "all" or (value.isdigit() and int(value) >= 1):
            return value
        raise ValueError(f"{value!r} is not a number of images; give a whole number of 1 or more, or all")

    @property
    def explain_count(self) -> int | None:
        """Images per selection group for Grad-CAM (None: every image); 0 when nothing is explained."""
        return None if self.explain == "all" else int(self.explain or 0)


class EvaluateParams(OperatingPointParams):
    """Score a checkpoint on a labelled CSV of the data folder."""

    kind: Literal["evaluate"] = "evaluate"
    data_dir: str = Field(min_length=1)
    csv: str = Field(
        "valid.csv",
        min_length=1,
        description=f"CSV file name inside the data folder (Path,label), or a named split: {SPLIT_HELP}.",
        json_schema_extra={"pattern": split_schema_pattern()},
    )
    checkpoint: str = ""
    checkpoints: list[str] = Field(
        default_factory=list,
        description="More checkpoints averaged with checkpoint (an ensemble, e.g. a cross-validation's folds).",
    )
    checkpoint_choice: Literal["best", "last"] = "best"
    batch_size: int = Field(64, ge=1, le=4096)
    tta: bool = False
    device: Device = "auto"

    @field_validator("csv")
    @classmethod
    def _csv(cls, value: str) -> str:
        return check_split_name(value)


class PredictParams(OperatingPointParams):
    """Write the submission CSV (ID,label) for a test CSV of the data folder."""

    kind: Literal["predict"] = "predict"
    data_dir: str = Field(min_length=1)
    csv: str = Field(
        min_length=1,
        description=f"Test CSV file name inside the data folder (column Path), or a named split: {SPLIT_HELP}.",
        json_schema_extra={"pattern": split_schema_pattern()},
    )
    checkpoints: list[str] = Field(default_factory=list, description="Several make an ensemble.")
    checkpoint_choice: Literal["best", "last"] = "best"
    batch_size: int = Field(64, ge=1, le=4096)
    tta: bool = False
    probabilities: bool = False
    device: Device = "auto"

    @field_validator("csv")
    @classmethod
    def _csv(cls, value: str) -> str:
        return check_split_name(value)


PARAMS_BY_KIND: dict[str, type[_Params]] = {
    "train": TrainParams,
    "finetune": FinetuneParams,
    "evaluate": EvaluateParams,
    "predict": PredictParams,
}


def describe_validation_error(error: ValidationError) -> str:
    """One line naming each bad field and why: `epochs: Input should be greater than or equal to 1`."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "parameters"
        message = item["msg"].removeprefix("Value error, ")
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def input_error(error: ValidationError) -> UserInputError:
    """A pydantic ValidationError as the one-line UserInputError, about the first field it names."""
    first = error.errors()[0]["loc"]
    return UserInputError(describe_validation_error(error), field=str(first[0]) if first else "params")


def parse_params(kind: str, values: dict, *, strict: bool = False) -> _Params:
    """Validate raw values for a job kind; bad input is a UserInputError.

    Text from a form or the CLI is parsed ("64" → 64, "yes" → True); strict (the JSON API) takes
    values as the types they are, so `"epochs": true` or `"image_size": "64"` is refused."""
    try:
        model = PARAMS_BY_KIND[kind]
    except KeyError:
        raise UserInputError(
            f"kind: unknown job kind {kind!r}; choose one of {', '.join(PARAMS_BY_KIND)}", field="kind"
        ) from None
    if not isinstance(values, dict):
        raise UserInputError("parameters: must be an object of field: value", field="params")
    try:
        return model.model_validate({**values, "kind": kind}, strict=strict)
    except ValidationError as error:
        raise input_error(error) from None


def class_weight_values(spec: str) -> tuple[float, float] | None:
    """The explicit W0,W1 of a class_weights field, or None for auto/none."""
    if spec in ("auto", "none"):
        return None
    w0, w1 = spec.split(",")
    return float(w0), float(w1)
