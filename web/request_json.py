"""JSON bodies that cannot be data are refused before any view reads them.

Python's json module accepts two things no view can use: nesting deeper than the interpreter's
recursion limit (it raises RecursionError, not ValueError, so Flask would answer 500) and lone
surrogates (`"\\ud800"`), which are not text and cannot be encoded for the database or a path.
Both become a 400 naming the field; the parsed body is cached for the view.

A body sent without a Content-Length (chunked) is measured before Flask sees it (SizedBody), so one over
MAX_CONTENT_LENGTH is a 413 as a sized one is."""

from __future__ import annotations

import io
from typing import Any

from flask import Flask, request

from core.common.errors import UserInputError

BODY_METHODS = ("POST", "PUT", "PATCH")


def field_with_lone_surrogate(value: Any, field: str = "body") -> str | None:
    """The innermost object key under which a string (or key) holding a lone surrogate lies, or None."""
    pending = [(value, field)]
    while pending:  # iterative: the body may be deep (up to the recursion limit)
        item, name = pending.pop()
        if isinstance(item, str):
            if not _is_text(item):
                return name
        elif isinstance(item, dict):
            for key, inner in item.items():
                if not _is_text(key):
                    return name
                pending.append((inner, key))
        elif isinstance(item, list):
            pending.extend((inner, name) for inner in item)
    return None


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def refuse_unusable_json() -> None:
    """before_request: parse a JSON body once (cached for the view) and refuse what cannot be data."""
    if request.method not in BODY_METHODS or not request.is_json:
        return
    try:
        body = request.get_json(silent=True)  # invalid JSON is left to the view's "send a JSON object"
    except RecursionError:
        raise UserInputError("body: JSON nested too deeply", field="body") from None
    field = field_with_lone_surrogate(body)
    if field is not None:
        raise UserInputError(f"{field}: contains a lone surrogate (\\ud800-\\udfff), which is not text", field=field)


class SizedBody:
    """WSGI middleware: a body without Content-Length (chunked, the server having ended its input: gunicorn,
    werkzeug) is read here up to MAX_CONTENT_LENGTH + 1 bytes and handed on with its length, so Werkzeug refuses
    an oversized one with 413 before any view reads it. Werkzeug's own limit on such a body stops reading at the
    limit without an error, and the view then found JSON cut short (a 400)."""

    def __init__(self, app: Flask) -> None:
        self.app, self.wsgi_app = app, app.wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        limit = self.app.config.get("MAX_CONTENT_LENGTH")
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if (
            limit is not None
            and environ.get("REQUEST_METHOD") in BODY_METHODS
            and environ.get("wsgi.input_terminated")
            and (chunked or not environ.get("CONTENT_LENGTH"))
        ):
            body = _read_at_most(environ["wsgi.input"], limit + 1)
            # Dechunked and measured: Werkzeug ignores a Content-Length beside Transfer-Encoding: chunked.
            environ.pop("HTTP_TRANSFER_ENCODING", None)
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body), str(len(body))
        return self.wsgi_app(environ, start_response)


def _read_at_most(stream: Any, size: int) -> bytes:
    """Up to size bytes of a stream (a read of a dechunked stream may return fewer than asked before its end)."""
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = stream.read(min(left, 65536))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def init_app(app: Flask) -> None:
    app.wsgi_app = SizedBody(app)  # type: ignore[method-assign]
    app.before_request(refuse_unusable_json)
