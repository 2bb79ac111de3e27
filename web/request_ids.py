"""A request id on every request: the caller's `X-Request-ID` when it is a plausible id (a proxy
or client that made one), else a new one. Every line logged while the request is handled carries
it (core.service.logs), the response returns it, and one access line per request is logged here,
so that line carries it too (gunicorn's own access log could not)."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, Response, g, request

from core.service.logs import pop_log_context, push_log_context

HEADER = "X-Request-ID"
# Ids from outside are echoed into logs and a header: short, and no characters that could forge a line.
ACCEPTED_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("leukemia.web.access")


def _start() -> None:
    incoming = request.headers.get(HEADER, "")
    g.request_id = incoming if ACCEPTED_ID.fullmatch(incoming) else uuid.uuid4().hex
    g.request_started = time.perf_counter()
    g.log_context_token = push_log_context(request_id=g.request_id)


def _finish(response: Response) -> Response:
    if "request_id" not in g:  # the request failed before the first hook ran
        return response
    response.headers[HEADER] = g.request_id
    milliseconds = (time.perf_counter() - g.request_started) * 1000
    access_log.info("%s %s %s %.0f ms", request.method, request.full_path.rstrip("?"), response.status_code, milliseconds)
    return response


def _leave(_error: BaseException | None) -> None:
    token = g.pop("log_context_token", None)
    if token is not None:
        pop_log_context(token)


def init_app(app: Flask) -> None:
    # First of the before_request hooks: lines the others log (login lookups) carry the id too.
    app.before_request_funcs.setdefault(None, []).insert(0, _start)
    app.after_request(_finish)
    app.teardown_request(_leave)
