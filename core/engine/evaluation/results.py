"""The shapes of what evaluate and predict report beyond the headline metrics, defined once:
core builds them, evaluation.json / prediction.json / the CSVs hold them, the API answers them
(web.api.schemas uses these models) and the job page draws them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class Threshold(BaseModel):
    """The operating threshold used (ALL when P(ALL) >= value) and where it came from."""

    value: float = Field(ge=0, le=1)
    source: Literal["given", "valid", "recorded", "default"]
    method: Literal["youden", "sensitivity"] | None = None
    target_sensitivity: float | None = None
    chosen_on: str | None = Field(None, description="the labelled split the threshold was chosen on")
    recorded_in: str | None = Field(None, description="the checkpoint it was written into, when chosen now")
    description: str


class MetricInterval(BaseModel):
    """A point estimate and its 95% interval; all None where the set cannot define the metric."""

    value: float | None
    low: float | None
    high: float | None


class IntervalMethod(BaseModel):
    method: Literal["percentile bootstrap"]
    confidence: float
    resamples: int
    unit: Literal["image", "subject"] = Field(description="what a resample draws")
    units: int


class ClinicalMetrics(BaseModel):
    sensitivity: MetricInterval
    specificity: MetricInterval
    ppv: MetricInterval
    npv: MetricInterval
    roc_auc: MetricInterval
    pr_auc: MetricInterval = Field(description="average precision")


class RocCurve(BaseModel):
    fpr: list[float | None]
    tpr: list[float | None]
    thresholds: list[float | None] = Field(description="the first point, (0, 0), has threshold +infinity: null")


class PrecisionRecallCurve(BaseModel):
    precision: list[float | None]
    recall: list[float | None]
    thresholds: list[float | None]


class CalibrationBin(BaseModel):
    """Images whose P(ALL) fell in [low, high): their mean P(ALL) and the share that is ALL."""

    low: float
    high: float
    count: int
    mean_probability: float | None
    fraction_all: float | None


class Calibration(BaseModel):
    bins: list[CalibrationBin]
    ece: float | None = Field(description="expected calibration error of P(ALL) over the bins")


class ClinicalReport(BaseModel):
    """core.engine.evaluation.clinical.clinical_report: positive class ALL, rates at the threshold, curves, calibration."""

    positive_class: str
    threshold: float
    threshold_source: str
    positives: int
    negatives: int
    interval: IntervalMethod
    metrics: ClinicalMetrics
    roc: RocCurve
    pr: PrecisionRecallCurve
    calibration: Calibration
    notes: list[str] = Field(description="one sentence per metric the set cannot define")


class Histogram(BaseModel):
    edges: list[float]
    counts: list[int]


class PredictedRow(BaseModel):
    ID: str
    label: int
    prob_all: float


class PredictionSummary(BaseModel):
    """prediction.json: what a predict job shows."""

    count: int
    class_counts: dict[Literal["hem", "all"], int]
    histogram: Histogram
    first_rows: list[PredictedRow]
    threshold: Threshold
    explained: int
    explanation_convention: str | None
    checkpoints: list[str] = []
    csv: str = ""
    tta: bool = False


class ImageResult(BaseModel):
    """One row of per_image.csv."""

    ID: str
    subject: str | None
    true_label: int
    prob_all: float
    predicted: int
    correct: bool
    explanation: str | None = Field(description="its heat map's file in explanations.zip, if explained")


class ExplainedImage(BaseModel):
    """One row of explanations.csv."""

    file: str
    ID: str
    why: Literal["confident mistake", "least confident", "all"]
    prob_all: float
    predicted: int
    true_label: int | None
