"""Bad input is a 400 naming the field, a refused role a 403, an unknown id a 404, a wrong method a 405, a request
the current state refuses a 409, an unreachable broker a 503; a traceback is a bug.

API paths answer JSON `{"error": ..., "field": ...}` (web.api.schemas.ErrorBody); pages answer a
short HTML page. The field comes from the error itself (UserInputError.field), never from its text. An error
answer commits nothing: what the request wrote before the error is rolled back (web.db)."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from core.common.errors import BrokerUnavailable, DatabaseUnavailable, NotFound, StateConflict, StorageError, UserInputError
from core.service.access import PermissionDenied
from web.db import UNREACHABLE, rollback

log = logging.getLogger("leukemia.web")
DATABASE_UNAVAILABLE = "database unavailable: the service cannot use its database now (the web's log says why)"


def wants_json() -> bool:
    return request.path.startswith("/api/")


def error_response(status: int, message: str, field: str | None = None) -> Response:
    """The one shape of every error answer; the request's writes are rolled back first."""
    rollback()
    if wants_json():
        body: dict[str, str] = {"error": message}
        if field:
            body["field"] = field
        return make_response(jsonify(body), status)
    return make_response(render_template("error.html", status=status, message=message, field=field), status)


def refusal_status(error: UserInputError | StateConflict) -> int:
    """The status of a page that shows a refusal beside its form: bad input 400, an unknown id 404, a state
    conflict 409 (as the API)."""
    return 409 if isinstance(error, StateConflict) else 404 if isinstance(error, NotFound) else 400


def handle_user_input(error: UserInputError):  # type: ignore[no-untyped-def]
    return error_response(400, str(error), error.field)


def handle_not_found(error: NotFound):  # type: ignore[no-untyped-def]
    """An id that names nothing (core.common.errors.NotFound), raised by the service that looked it up: 404."""
    return error_response(404, str(error), error.field)


def handle_state_conflict(error: StateConflict):  # type: ignore[no-untyped-def]
    """Well formed, and refused by the current state (a finished job cancelled, the last admin disabled): 409."""
    return error_response(409, str(error), error.field)


def handle_permission_denied(error: PermissionDenied):  # type: ignore[no-untyped-def]
    """Known who, and not allowed (core.service.access): 403 with the reason in one line."""
    return error_response(403, str(error))


def handle_broker_unavailable(error: BrokerUnavailable):  # type: ignore[no-untyped-def]
    """The job row is committed (and marked failed); its message could not be sent: not the user's fault."""
    return error_response(503, str(error))


def handle_storage_error(error: StorageError):  # type: ignore[no-untyped-def]
    """A file on the artifacts volume could not be changed (core.common.errors.StorageError): nothing was recorded."""
    return error_response(503, str(error))


def database_unavailable_line(error: Exception) -> str:
    """What anyone may be told when the database cannot serve: the reason names its host, user and
    database (or file), so that goes to the log for the operator, and the answer stays generic."""
    from core.service.db import database_unavailable

    log.warning("%s", database_unavailable(error))
    return DATABASE_UNAVAILABLE


def handle_database_unavailable(error: Exception):  # type: ignore[no-untyped-def]
    """The database cannot serve (gone, dropped, unreachable): nothing was read or written."""
    return error_response(503, database_unavailable_line(error))


def handle_csrf(error: CSRFError):  # type: ignore[no-untyped-def]
    return error_response(400, f"csrf_token: {error.description} Reload the page and try again.", "csrf_token")


def handle_http(error: HTTPException):  # type: ignore[no-untyped-def]
    if isinstance(error, InternalServerError):
        return handle_unexpected(error)
    response = error_response(error.code or 500, error.description or error.name)
    if error.code == 405 and error.valid_methods:
        response.headers["Allow"] = ", ".join(error.valid_methods)
    if error.code == 401 and wants_json():
        response.headers["WWW-Authenticate"] = "Bearer"
    return response


def handle_unexpected(error: Exception):  # type: ignore[no-untyped-def]
    """Last resort: a bug. Its traceback goes to the log; the user gets a one-line 500."""
    original = getattr(error, "original_exception", None) or error
    from flask import current_app

    current_app.logger.error("unexpected error on %s %s", request.method, request.path, exc_info=original)
    return error_response(500, "internal error: the server hit a bug; it has been logged")


def init_app(app: Flask) -> None:
    app.register_error_handler(UserInputError, handle_user_input)
    app.register_error_handler(NotFound, handle_not_found)
    app.register_error_handler(StateConflict, handle_state_conflict)
    app.register_error_handler(PermissionDenied, handle_permission_denied)
    app.register_error_handler(BrokerUnavailable, handle_broker_unavailable)
    app.register_error_handler(DatabaseUnavailable, handle_database_unavailable)
    app.register_error_handler(StorageError, handle_storage_error)
    app.register_error_handler(UNREACHABLE, handle_database_unavailable)
    app.register_error_handler(CSRFError, handle_csrf)
    app.register_error_handler(HTTPException, handle_http)
    app.register_error_handler(Exception, handle_unexpected)
