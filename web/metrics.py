"""GET /metrics, on its own blueprint: the service's Prometheus metrics (core.service.metrics reads them
from the rows).

Never anonymous: the scraper sends `Authorization: Bearer <METRICS_TOKEN>` (a token that can do
nothing else), or an admin's API token. Queue names, job counts and worker names are not for
anyone who can reach the port. Answers are plain text, as Prometheus reads them."""

from __future__ import annotations

import hmac

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from core.service.access import PermissionDenied, require_admin
from core.service.metrics import ServiceCollector
from web.auth import bearer_actor, bearer_token
from web.db import commit
from web.settings import app_settings

bp = Blueprint("metrics", __name__)
REGISTRY = CollectorRegistry(auto_describe=False)  # the rows' metrics only: this process's own are no one's concern
REGISTRY.register(ServiceCollector())
SEND_TOKEN = "authorization: send 'Authorization: Bearer <METRICS_TOKEN>' (or an admin's API token)\n"


def refusal() -> Response | None:
    """None when the request may read the metrics, else the 401 or 403 to answer."""
    token = bearer_token()
    if token is None:
        return Response(SEND_TOKEN, 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    metrics_token = app_settings().metrics_token
    if metrics_token and hmac.compare_digest(token.encode(), metrics_token.encode()):
        return None
    actor = bearer_actor()
    if actor is None:
        return Response(SEND_TOKEN, 401, {"WWW-Authenticate": "Bearer"}, mimetype="text/plain")
    try:
        require_admin(actor, "read the metrics")
    except PermissionDenied as denied:
        return Response(f"{denied}\n", 403, mimetype="text/plain")
    return None


@bp.get("/metrics")
def metrics() -> Response:
    """The metrics in Prometheus' text format."""
    refused = refusal()
    if refused is not None:
        return refused
    commit()  # the collector reads in a transaction of its own (web.db)
    return Response(generate_latest(REGISTRY), content_type=CONTENT_TYPE_LATEST)
