"""Prometheus metrics of the job service, read from the rows at scrape time.

The rows are the truth (the broker carries ids only), and every web process sees the same rows,
so a scrape of any web process answers for the whole service: queue depth, jobs by status, job
and epoch durations, the running jobs' ages, throughput, workers, webhook deliveries. A handful of
aggregate queries per scrape (`read_service_metrics`); `ServiceCollector` turns their result into
metric families. The counters (jobs ended, workers lost, webhook attempts) are the event_counts
table's (core.service.event_counts), which deletes never lower, so `increase()` over them is true
across deletes and web restarts. A worker process's own counters are worker.metrics.
docs/deploy.md, "Monitoring"."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, extract, func, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from core.common.errors import DatabaseUnavailable
from core.service import jobs
from core.service.event_counts import event_counts
from core.service.records import (
    DELIVERY_STATUSES,
    FINISHED_STATUSES,
    JOB_KINDS,
    JOB_STATUSES,
    PRIORITY_NAMES,
    EpochMetric,
    Job,
    JobStatus,
    WebhookDelivery,
    WorkerRecord,
    utcnow,
)

log = logging.getLogger("leukemia.metrics")

# A job runs minutes to days; an epoch seconds to an hour.
JOB_SECONDS_BUCKETS = (60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0, 259200.0)
WEBHOOK_OUTCOMES = ("delivered", "retried", "failed")  # of an attempt, as core.service.webhooks.sender counts them
EPOCH_SECONDS_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


@dataclass
class Histogram:
    """A histogram read from rows: cumulative counts per upper bound, the sum and the count."""

    buckets: tuple[float, ...]
    cumulative: list[int]
    total: float
    count: int

    def prometheus_buckets(self) -> list[tuple[str, float]]:
        return [*((repr(bound), float(n)) for bound, n in zip(self.buckets, self.cumulative)), ("+Inf", float(self.count))]


@dataclass
class ServiceMetrics:
    """What one scrape reports, as plain data (label tuples → values)."""

    queue_depth: dict[tuple[str, str], int] = field(default_factory=dict)  # (queue, priority name)
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (status, kind)
    job_seconds: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (kind, status)
    epoch_seconds: dict[str, Histogram] = field(default_factory=dict)  # kind
    images_per_second: dict[str, float] = field(default_factory=dict)  # queue: running jobs' sum
    queue_workers: dict[str, int] = field(default_factory=dict)  # queue: live workers consuming it
    workers: dict[str, int] = field(default_factory=dict)  # live, lost
    webhook_deliveries: dict[str, int] = field(default_factory=dict)  # status
    running_ages: dict[tuple[str, str, str], float] = field(default_factory=dict)  # (job id, kind, queue): seconds
    jobs_ended: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status): a counter
    workers_lost: int = 0  # a counter
    webhook_attempts: dict[str, int] = field(default_factory=dict)  # outcome (WEBHOOK_OUTCOMES): a counter


def _seconds_between(session: Session, start: Any, end: Any) -> Any:
    """end - start in seconds, as SQL (SQLite keeps timestamps as text; PostgreSQL subtracts them)."""
    if session.get_bind().dialect.name == "sqlite":
        return (func.julianday(end) - func.julianday(start)) * 86400.0
    return extract("epoch", end - start)


def _histograms(
    session: Session, value: Any, buckets: tuple[float, ...], group: list[Any], *where: Any
) -> dict[tuple, Histogram]:
    """One query: per group, how many values fall at or under each bound, their sum and count."""
    counts = [func.sum(case((value <= bound, 1), else_=0)) for bound in buckets]
    rows = session.execute(select(*group, func.count(), func.sum(value), *counts).where(*where).group_by(*group))
    found = {}
    for row in rows:
        keys, count, total, cumulative = row[: len(group)], row[len(group)], row[len(group) + 1], row[len(group) + 2 :]
        found[tuple(keys)] = Histogram(buckets, [int(n or 0) for n in cumulative], float(total or 0.0), int(count))
    return found


def read_service_metrics(session: Session) -> ServiceMetrics:
    """The service's metrics from its rows; absent label combinations of known values are 0."""
    metrics = ServiceMetrics()
    live = jobs.live_workers(session)
    known_queues = set(jobs.DEFAULT_QUEUES.values()) | {queue for worker in live for queue in worker.queue_names}
    by_queue = select(Job.queue, Job.priority, func.count()).where(jobs.waiting()).group_by(Job.queue, Job.priority)
    depth = {(queue, PRIORITY_NAMES.get(priority, str(priority))): n for queue, priority, n in session.execute(by_queue)}
    for queue in known_queues | {queue for queue, _ in depth}:
        for priority in PRIORITY_NAMES.values():
            metrics.queue_depth[(queue, priority)] = depth.get((queue, priority), 0)

    by_status = select(Job.status, Job.kind, func.count()).group_by(Job.status, Job.kind)
    counted = {(status, kind): n for status, kind, n in session.execute(by_status)}
    metrics.jobs = {(status, kind): counted.get((status, kind), 0) for status in JOB_STATUSES for kind in JOB_KINDS}

    duration = _seconds_between(session, Job.started_at, Job.finished_at)
    metrics.job_seconds = _histograms(
        session,
        duration,
        JOB_SECONDS_BUCKETS,
        [Job.kind, Job.status],
        Job.status.in_(FINISHED_STATUSES),
        Job.started_at.is_not(None),
        Job.finished_at.is_not(None),
    )
    epochs = _histograms(
        session,
        EpochMetric.seconds,
        EPOCH_SECONDS_BUCKETS,
        [Job.kind],
        EpochMetric.job_id == Job.id,
        EpochMetric.seconds.is_not(None),
    )
    metrics.epoch_seconds = {kind: histogram for (kind,), histogram in epochs.items()}

    running = select(Job.queue, func.sum(Job.images_per_s)).where(Job.status == JobStatus.running).group_by(Job.queue)
    throughput = {queue: float(total or 0.0) for queue, total in session.execute(running)}
    metrics.images_per_second = {queue: throughput.get(queue, 0.0) for queue in known_queues | set(throughput)}
    # Every queue a job waits in as well: a queue nobody consumes answers 0, for the "no worker" alert.
    metrics.queue_workers = {queue: sum(queue in w.queue_names for w in live) for queue in known_queues | {q for q, _ in depth}}
    lost = session.scalar(select(func.count()).select_from(WorkerRecord).where(WorkerRecord.lost_at.is_not(None)))
    metrics.workers = {"live": len(live), "lost": int(lost or 0)}

    delivered = dict(session.execute(select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)).all())
    metrics.webhook_deliveries = {status: int(delivered.get(status, 0)) for status in DELIVERY_STATUSES}

    now = utcnow()
    started = select(Job.id, Job.kind, Job.queue, Job.started_at).where(
        Job.status == JobStatus.running, Job.started_at.is_not(None)
    )
    metrics.running_ages = {
        (str(job_id), kind, queue): max((now - at).total_seconds(), 0.0) for job_id, kind, queue, at in session.execute(started)
    }
    # Every known label set from 0, so the first failure is an increase Prometheus sees.
    counted = event_counts(session)
    metrics.jobs_ended = {
        (kind, status): counted.get((f"job.{status}", kind), 0) for kind in JOB_KINDS for status in FINISHED_STATUSES
    }
    metrics.workers_lost = counted.get(("worker.lost", ""), 0)
    metrics.webhook_attempts = {outcome: counted.get(("webhook.attempt", outcome), 0) for outcome in WEBHOOK_OUTCOMES}
    return metrics


def metric_families(metrics: ServiceMetrics) -> Iterator[Metric]:
    """The Prometheus families of one reading."""
    yield _gauge(
        "leukemia_queue_depth",
        "Jobs waiting to start (queued, no cancel asked), by queue and priority.",
        ["queue", "priority"],
        metrics.queue_depth,
    )
    yield _gauge("leukemia_jobs", "Jobs in the database, by status and kind.", ["status", "kind"], metrics.jobs)
    yield _histogram(
        "leukemia_job_duration_seconds",
        "Run time of finished jobs (their last attempt: started to finished).",
        ["kind", "status"],
        metrics.job_seconds,
    )
    yield _histogram("leukemia_epoch_duration_seconds", "Time of each recorded training epoch.", ["kind"], metrics.epoch_seconds)
    yield _gauge(
        "leukemia_images_per_second",
        "Images per second of the running jobs of a queue, summed (each job's latest report).",
        ["queue"],
        metrics.images_per_second,
    )
    yield _gauge("leukemia_queue_workers", "Live workers consuming a queue.", ["queue"], metrics.queue_workers)
    yield _gauge(
        "leukemia_workers",
        "Worker processes: live (seen within STALE_AFTER_SECONDS), lost (reported lost, not seen since).",
        ["state"],
        metrics.workers,
    )
    yield _gauge("leukemia_webhook_deliveries", "Webhook deliveries, by outcome.", ["status"], metrics.webhook_deliveries)
    yield _gauge(
        "leukemia_running_job_age_seconds",
        "Seconds since each running job's attempt started.",
        ["job_id", "kind", "queue"],
        metrics.running_ages,
    )
    yield _counter(
        "leukemia_jobs_ended",
        "Jobs that ended, by kind and status (deleting jobs does not lower it).",
        ["kind", "status"],
        metrics.jobs_ended,
    )
    yield _counter(
        "leukemia_workers_lost", "Workers reported lost (silent for STALE_AFTER_SECONDS).", [], {(): metrics.workers_lost}
    )
    yield _counter(
        "leukemia_webhook_attempts",
        "Webhook delivery attempts by outcome: delivered, retried (failed, tried again later), failed (gave up).",
        ["outcome"],
        metrics.webhook_attempts,
    )


def _label_values(key: str | tuple[str, ...]) -> list[str]:
    """A reading's key as a sample's label values: one label's value, or a tuple of several."""
    return list(key) if isinstance(key, tuple) else [key]


def _gauge(name: str, documentation: str, labels: list[str], values: dict) -> GaugeMetricFamily:
    """A gauge family with a sample for each key of values, in key order."""
    family = GaugeMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(_label_values(key), value)
    return family


def _counter(name: str, documentation: str, labels: list[str], values: dict) -> CounterMetricFamily:
    """A counter family (exposed as name_total) with a sample for each key of values, in key order."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(_label_values(key), value)
    return family


def _histogram(name: str, documentation: str, labels: list[str], histograms: dict) -> HistogramMetricFamily:
    """A histogram family with a sample for each key of histograms (a Histogram each), in key order."""
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for key, histogram in sorted(histograms.items()):
        family.add_metric(_label_values(key), histogram.prometheus_buckets(), histogram.total)
    return family


class ServiceCollector(Collector):
    """Reads the rows at each scrape. An unavailable database is reported as leukemia_database_up 0
    (the reason goes to the log), so an alert can tell "down" from "no jobs"."""

    def collect(self) -> Iterator[Metric]:
        from core.service.db import database_unavailable, get_sessionmaker

        up = GaugeMetricFamily("leukemia_database_up", "1 when the job database answered this scrape, else 0.")
        try:
            with get_sessionmaker().begin() as session:
                metrics = read_service_metrics(session)
        except (DatabaseUnavailable, OperationalError, ProgrammingError) as error:  # down, dropped, no schema
            log.warning("metrics: %s", database_unavailable(error))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metric_families(metrics)
