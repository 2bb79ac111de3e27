"""JSON bodies that cannot be data are refused before any view reads them.

Python's json module accepts two things no view can use: nesting deeper than the interpreter's
recursion limit (it raises RecursionError, not ValueError, so Flask would answer 500) and lone
surrogates (`"\\ud800"`), which are not text and cannot be encoded for the database or a path.
Both become a 400 naming the field; the parsed body is cached for the view."""

from __future__ import annotations

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


def init_app(app: Flask) -> None:
    app.before_request(refuse_unusable_json)
