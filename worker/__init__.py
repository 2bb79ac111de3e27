"""The Celery edge of the service. `celery -A worker inspect ping|active|stats` and `celery -A worker
flower` find the configured app here as `worker.app` (or `worker.celery`).

The app is made on first access (PEP 562), so `import worker` and `from worker import dispatch`
stay cheap: Celery is imported only by what uses it."""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    if name in ("app", "celery"):
        from worker.celery_app import get_app

        return get_app()
    raise AttributeError(f"module 'worker' has no attribute {name!r}")
