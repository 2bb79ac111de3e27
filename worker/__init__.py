"""The Celery edge of the service. `celery -A worker inspect ping|active|stats` and `celery -A worker
flower` find the configured app here as `worker.app` (or `worker.celery`).

The app is made on first access (PEP 562), so `import worker` and `from worker import dispatch`
stay cheap: Celery is imported only by what uses it.

Imports between the worker modules run one way: runtime → tasks → dispatch → celery_app (and metrics),
tasks → core_call, job_progress; terminate → tasks (Celery finds `worker.terminate:RunJobTaskRequest` by
path). The commands in leukemia/commands/ call them; nothing imports back up the chain."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.celery_app import get_app

        return get_app()
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
