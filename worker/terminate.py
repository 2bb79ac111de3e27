"""Celery's terminate of a running task cancels the job it runs, as `leukemia cancel` does.

`celery -A worker control revoke --terminate TASK_ID`, `celery -A worker control terminate SIGTERM
TASK_ID` and Flower's Terminate button all reach the worker as a revoke with terminate, which Celery
carries out by killing what runs the task. Here that would be wrong twice over: a pool thread cannot
be killed (Celery's thread pool raises NotImplementedError, and the job trains on), and a killed
prefork child loses the epoch in progress while the reaper later runs the job again. So the task's
request (`RunJobTaskRequest`, the task's Request class) asks the job service for a cancel instead, audited
under the actor "celery:terminate": the job stops at its next batch, keeps its checkpoints, ends
cancelled, and the worker takes its next job. Whatever signal was named, the outcome is that cancel.
A task that runs no job (not yet started, or its job has ended) gets one line saying nothing was
cancelled."""

from __future__ import annotations

import logging
from typing import Any

from celery.worker.request import Request

from core.common.errors import OneLineError
from core.service import jobs
from core.service.access import Actor
from core.service.db import get_sessionmaker
from core.service.logs import log_context
from worker.dispatch import cancel_job
from worker.tasks import lease_owner

log = logging.getLogger("leukemia.worker")
TERMINATE_ACTOR = Actor(user_id=None, username="celery:terminate", role="admin")  # who the audit row names


def cancel_terminated_task(hostname: str, task_id: str, signal: Any) -> int | None:
    """Cancel the job that this worker's task runs; its id, or None when the task runs none."""
    with get_sessionmaker().begin() as session:
        job_id = jobs.running_job_of(session, lease_owner(hostname, task_id))
    with log_context(task_id=task_id):
        if job_id is None:
            log.warning(
                "terminate task %s: it runs no job now (not started yet, or its job has ended): nothing "
                "cancelled; `leukemia cancel JOB` cancels a waiting job",
                task_id,
            )
            return None
        with log_context(job_id=job_id):
            try:
                status = cancel_job(job_id, actor=TERMINATE_ACTOR)
            except OneLineError as refused:  # it ended meanwhile
                log.warning("terminate task %s: job %s not cancelled: %s", task_id, job_id, refused)
                return None
            log.info(
                "job %s: cancel requested by Celery's terminate of task %s (signal %s), as `leukemia cancel %s`"
                " does: it stops at its next batch (%s now)",
                job_id,
                task_id,
                signal,
                job_id,
                status,
            )
    return job_id


class RunJobTaskRequest(Request):
    """run_next_job's request: terminate cancels the job (module docstring) instead of killing the pool's worker."""

    def terminate(self, pool: Any, signal: Any = None) -> None:
        cancel_terminated_task(self.hostname, self.id, signal)
