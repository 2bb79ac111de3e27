"""A sweep's median stopping rule: a point whose metric at epoch e is worse than the median of the
sweep's finished points at e stops. `MedianStopRule` is its one shape for the API, the CLI and the form;
`median_stop_reason` reads the finished points from epoch_metrics; the worker asks it after each epoch
(worker.job_progress.JobObserver)."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.common.errors import UserInputError
from core.engine.training.early_stopping import LOWER_IS_BETTER, EarlyStoppingMetric, better
from core.service.records import JobStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.engine.progress import EpochRecord


class MedianStopRule(BaseModel):
    """A sweep's median stopping rule: a point whose metric at epoch e is worse than the median of the
    finished points' metric at e stops (ends succeeded, with the reason). Strict, like the JSON API's
    fields (a JSON "2" is not 2); text from a form goes through median_rule_from_options."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    rule: Literal["median"] = "median"
    metric: EarlyStoppingMetric = Field(description="Validation metric compared at each epoch (valid_loss: lower is better).")
    min_finished: int = Field(2, ge=1, le=1000, description="Points that must have finished before the rule acts.")
    grace_epochs: int = Field(1, ge=0, le=1000, description="Epochs a point always runs before the rule may stop it.")


def describe_rule(rule: MedianStopRule) -> str:
    """The rule in words, for the sweep's job list (dashboard and `leukemia jobs --sweep`)."""
    return (
        f"median stopping rule on {rule.metric}: acts from epoch {rule.grace_epochs + 1} once "
        f"{rule.min_finished} point(s) have finished"
    )


def parse_median_rule(values: dict | None) -> MedianStopRule | None:
    """A sweep's early_stopping object as the rule (None: no rule); bad values are a one-line error."""
    if values is None:
        return None
    if isinstance(values, MedianStopRule):
        return values
    if not isinstance(values, dict):
        raise UserInputError(
            'early_stopping: must be an object like {"rule": "median", "metric": "valid_accuracy"}', field="early_stopping"
        )
    try:
        return MedianStopRule.model_validate(values)
    except ValidationError as error:
        item = error.errors()[0]
        where = ".".join(str(p) for p in item["loc"])
        raise UserInputError(
            f"early_stopping.{where}: {item['msg']}" if where else f"early_stopping: {item['msg']}", field="early_stopping"
        ) from None


def median_rule_from_options(
    metric: str | None, min_finished: int | str | None = None, grace_epochs: int | str | None = None
) -> MedianStopRule | None:
    """The rule from separate values (CLI options, form fields: numbers as text); None when no metric is given."""
    if metric is None or not str(metric).strip():
        if min_finished is not None or grace_epochs is not None:
            raise UserInputError(
                "early_stopping: min_finished and grace_epochs need the median rule's metric", field="early_stopping"
            )
        return None
    values: dict = {"metric": metric}
    for name, value in (("min_finished", min_finished), ("grace_epochs", grace_epochs)):
        if value is None:
            continue
        try:
            values[name] = int(str(value).strip())
        except ValueError:
            raise UserInputError(
                f"early_stopping.{name}: {str(value)[:40]!r} is not a whole number", field="early_stopping"
            ) from None
    return parse_median_rule(values)


def median_stop_reason(session: Session, job_id: int, record: EpochRecord) -> str | None:
    """Why this sweep point must stop after the epoch just run (record), or None to go on.

    Finished points are the sweep's succeeded jobs with a row for that epoch; the rule acts from
    epoch grace_epochs + 1 on, once min_finished of them exist."""
    from sqlalchemy import select

    from core.service.records import EpochMetric, Job, Sweep

    job = session.get(Job, job_id)
    if job is None or job.sweep_id is None:
        return None
    sweep = session.get(Sweep, job.sweep_id)
    rule = parse_median_rule(sweep.early_stopping) if sweep is not None else None
    epoch, value = record.epoch, None if rule is None else getattr(record, rule.metric)
    if rule is None or epoch <= rule.grace_epochs or value is None:
        return None
    column = getattr(EpochMetric, rule.metric)
    finished = list(
        session.scalars(
            select(column)
            .join(Job, Job.id == EpochMetric.job_id)
            .where(
                Job.sweep_id == job.sweep_id,
                Job.status == JobStatus.succeeded,
                Job.id != job_id,
                EpochMetric.epoch == epoch,
                column.is_not(None),
            )
        )
    )
    if len(finished) < rule.min_finished:
        return None
    median = statistics.median(finished)
    if not better(rule.metric, median, value):
        return None
    sign = ">" if rule.metric in LOWER_IS_BETTER else "<"
    return (
        f"stopped by the sweep's median rule at epoch {epoch}: {rule.metric} {value:.4g} {sign} "
        f"median {median:.4g} of {len(finished)} finished point{'s' if len(finished) > 1 else ''}"
    )
