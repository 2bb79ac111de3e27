"""The job rows as terminal text for `leukemia jobs`, `leukemia job` and `leukemia cv-summary`:
tables with priority, progress, speed, ETA, queue position and unserved queues. Reads rows, writes nothing."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy.orm import Session

from core.common.formats import human_bytes, human_duration, percent
from core.service import jobs
from core.service.job_options import listed_options
from core.service.records import PRIORITY_NAMES, JobStatus, Sweep
from core.service.run_folders import artifact_store, job_run_key
from core.service.sweep_stopping import describe_rule, parse_median_rule


def _fmt(value: Any, pattern: str = "{}") -> str:
    return "-" if value is None else pattern.format(value)


def _time(moment: Any) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _eta(seconds: float | None) -> str:
    return human_duration(seconds, missing="-")


def _percent(value: float | None) -> str:
    return percent(value, missing="-")


def waiting_note(position: int | None, queue: str, live: set[str]) -> str:
    """'#3 in gpu' for a queued job, plus the flag when no live worker consumes its queue."""
    if position is None:
        return ""
    note = f"#{position} in {queue}"
    return note if queue in live else f"{note} NO WORKER"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows]]
    return "\n".join(lines)


def jobs_table(
    session: Session,
    *,
    status: str | None,
    kind: str | None,
    sweep_id: int | None,
    page: int,
    per_page: int,
    tag: str | None = None,
) -> str:
    """One page of jobs, newest first, with their tags; a sweep's jobs get a column with their grid point."""
    listed, total = jobs.list_jobs(session, status=status, kind=kind, sweep_id=sweep_id, tag=tag, page=page, per_page=per_page)
    live = jobs.live_queues(session)
    tags = jobs.tags_of(session, listed)
    positions = jobs.queue_positions(session, listed)
    rows = []
    for job in listed:
        epochs = f"{job.epoch}/{job.epochs_total}" if job.epoch is not None and job.epochs_total else "-"
        row = [
            str(job.id),
            job.kind,
            status_text(job),
            PRIORITY_NAMES[job.priority],
            f"{job.progress:.0%}",
            epochs,
            _fmt(job.images_per_s, "{:.1f}"),
            _eta(job.eta_s),
            waiting_note(positions.get(job.id), job.queue, live),
            _percent(job.best_valid_accuracy),
            ",".join(tags[job.id]) or "-",
        ]
        if sweep_id is not None:
            row.append(", ".join(f"{k}={job.params.get(k)}" for k in _sweep_fields(session, sweep_id)))
        rows.append(row)
    header = ["ID", "KIND", "STATUS", "PRIORITY", "PROGRESS", "EPOCH", "IMG/S", "ETA", "QUEUE", "BEST VALID ACC", "TAGS"]
    if sweep_id is not None:
        header.append("POINT")
    text = f"{_table(rows, header)}\n{len(rows)} of {total} job(s), page {page}"
    rule = _sweep_rule(session, sweep_id) if sweep_id is not None else None
    return text if rule is None else f"sweep {sweep_id}: {rule}\n{text}"


def status_text(job: Any) -> str:
    """The status, with "(stopped early at epoch N)" for a run that ended before its last epoch."""
    return job.status + (f" (stopped early at epoch {job.stopped_epoch})" if job.stopped_epoch is not None else "")


def _sweep_rule(session: Session, sweep_id: int) -> str | None:
    """The sweep's median stopping rule in words, or None."""
    sweep = session.get(Sweep, sweep_id)
    rule = parse_median_rule(sweep.early_stopping) if sweep is not None else None
    return None if rule is None else describe_rule(rule)


def _sweep_fields(session: Session, sweep_id: int) -> list[str]:
    sweep = session.get(Sweep, sweep_id)
    return list(sweep.grid) if sweep is not None else []


def job_details(session: Session, job_id: int) -> str:
    """One job: status, parameters, metrics per epoch, artifacts, error, log tail."""
    job = jobs.get_job(session, job_id)
    live = jobs.live_queues(session)
    note = waiting_note(jobs.queue_position(session, job), job.queue, live)
    lines = [
        f"job {job.id}: {job.kind} {status_text(job)}" + (f" ({note})" if note else ""),
        f"queue {job.queue}, attempts {job.attempts}/{job.max_attempts}, worker {job.worker_host or '-'}"
        + (", cancel requested" if job.cancel_requested and job.status == JobStatus.running else ""),
        f"parent {_fmt(job.parent_id)}, sweep {_fmt(job.sweep_id)}, data {job.data_dir or '-'}",
        f"run folder {artifact_store().location(job_run_key(job))} (submitted from the {job.origin})",
        f"created {_time(job.created_at)}, started {_time(job.started_at)}, finished {_time(job.finished_at)} (UTC)",
        f"progress {job.progress:.0%}, images/s {_fmt(job.images_per_s, '{:.1f}')}, ETA {_eta(job.eta_s)}, "
        f"best valid accuracy {_percent(job.best_valid_accuracy)}",
    ]
    options = jobs.options_of(session, job)
    lines.append(
        f"priority {options.priority}, retention {options.retention or 'global policy'}, tags {', '.join(options.tags) or '-'}"
    )
    lines += [f"{label}: {value}" for label, value in listed_options(options.model_dump())]
    if options.description:
        lines += ["notes:", *(f"  {line}" for line in options.description.splitlines())]
    if job.status == JobStatus.queued and job.queue not in live:
        lines.append(
            f"warning: no live worker consumes queue {job.queue!r}; start one with `leukemia worker --queues {job.queue}`"
        )
    if job.error:
        lines.append(f"error: {job.error}")
    if job.stop_reason:
        lines.append(job.stop_reason)
    if job.attempt_note:
        lines.append(job.attempt_note)
    lines.append("params: " + json.dumps(job.params, sort_keys=True))
    metrics = jobs.epoch_metrics(session, job.id)
    if metrics:
        rows = [
            [
                str(m.epoch),
                _fmt(m.train_loss, "{:.4f}"),
                _percent(m.train_accuracy),
                _fmt(m.valid_loss, "{:.4f}"),
                _percent(m.valid_accuracy),
                _percent(m.valid_balanced_accuracy),
                _percent(m.valid_f1),
                _fmt(m.lr, "{:.3g}"),
                _fmt(m.seconds, "{:.1f}"),
            ]
            for m in metrics
        ]
        lines += [
            "",
            _table(rows, ["EPOCH", "TRAIN LOSS", "TRAIN ACC", "VALID LOSS", "VALID ACC", "BAL ACC", "F1", "LR", "SECONDS"]),
        ]
    recorded = jobs.artifacts(session, job.id)
    if recorded:
        rows = [[a.name, a.kind, human_bytes(a.size_bytes), a.sha256[:12]] for a in recorded]
        lines += ["", _table(rows, ["ARTIFACT", "KIND", "SIZE", "SHA256"])]
    if job.log_tail:
        lines += ["", "log (last lines):", *job.log_tail.splitlines()[-10:]]
    return "\n".join(lines)
