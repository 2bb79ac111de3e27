"""A worker process's own Prometheus metrics, served by `leukemia worker --metrics-port PORT`.

The service's metrics (queues, jobs, durations, workers) come from the rows, at the web's
/metrics. These are what only the process knows: the jobs it ran and how they ended, the epochs
it trained, the job it runs now, and its CPU, memory and open files (prometheus_client's process
collector). Counters live in this process, so the exporter needs --concurrency 1 (a pool thread:
jobs run in this process, not in pool children). Like /metrics, it answers only the bearer
METRICS_TOKEN."""

from __future__ import annotations

import hmac
import threading
from typing import Any, Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, GCCollector, PlatformCollector, ProcessCollector, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from core.common.errors import UserInputError

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=REGISTRY)
PlatformCollector(registry=REGISTRY)
GCCollector(registry=REGISTRY)
JOBS_RUN = Counter("leukemia_worker_jobs", "Jobs this worker process ran, by kind and outcome.", ["kind", "outcome"],
                   registry=REGISTRY)  # fmt: skip
EPOCHS = Counter("leukemia_worker_epochs", "Training epochs this worker process completed (a resume's replayed ones not counted).",
                 registry=REGISTRY)
CURRENT_JOB = Gauge("leukemia_worker_current_job_id", "Id of the job this worker runs now; 0 when idle.", registry=REGISTRY)


class _QuietHandler(WSGIRequestHandler):
    """No access line per scrape on the worker's log."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


def token_required(app: Callable[..., Iterable[bytes]], token: str) -> Callable[..., Iterable[bytes]]:
    """The WSGI app behind a bearer-token check: 401 without the token."""
    expected = f"Bearer {token}".encode()

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        sent = environ.get("HTTP_AUTHORIZATION", "").encode()
        if not hmac.compare_digest(sent, expected):
            start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Bearer")])
            return [b"authorization: send 'Authorization: Bearer <METRICS_TOKEN>'\n"]
        return app(environ, start_response)

    return guarded


def start_exporter(port: int, token: str, host: str = "0.0.0.0") -> ThreadingWSGIServer:
    """Serve REGISTRY at http://host:port/metrics from a daemon thread; returns the server (to shut down)."""
    if not token:
        raise UserInputError("--metrics-port: set METRICS_TOKEN (or METRICS_TOKEN_FILE): the exporter answers only that token",
                             field="metrics_port")
    try:
        server = make_server(host, port, token_required(make_wsgi_app(REGISTRY), token), ThreadingWSGIServer,
                             handler_class=_QuietHandler)  # fmt: skip
    except OSError as error:
        raise UserInputError(f"--metrics-port: cannot listen on {host}:{port}: {error.strerror}", field="metrics_port") from None
    threading.Thread(target=server.serve_forever, name="metrics-exporter", daemon=True).start()
    return server
