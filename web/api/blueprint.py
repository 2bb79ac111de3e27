"""The API blueprint and what every route shares: the token check and the answer serialised by its model.

Reads also accept a logged-in browser session (the live pages poll them); writes need the token,
so the CSRF-exempt API cannot be driven by another site through a person's cookie."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, current_app, g, request
from pydantic import BaseModel

from web.auth import bearer_token_valid

bp = Blueprint("api", __name__, url_prefix="/api")
PUBLIC_ENDPOINTS = {"api.health", "api.openapi"}


@bp.before_request
def require_token() -> None:
    """Bearer token for everything but health and the document; a browser session may read."""
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    if bearer_token_valid():
        return
    if request.method == "GET" and g.get("user") is not None:
        return
    abort(401, description="authorization: send 'Authorization: Bearer <API token>'")


def answer(model: BaseModel, status: int = 200) -> Any:
    """A response serialised by its model (the shape the document promises)."""
    return current_app.response_class(model.model_dump_json(), status=status, mimetype="application/json")
