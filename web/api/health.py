"""GET /api/health and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from core.common.errors import DatabaseUnavailable
from core.service.db import check_database
from web import errors
from web.api import schemas
from web.api.blueprint import answer, bp
from web.db import commit
from web.openapi import openapi_document, operation


@operation(
    bp,
    "get",
    "/health",
    operation_id="getHealth",
    tag="service",
    public=True,
    responses={200: schemas.Health, 503: schemas.Health},
)
def health() -> Any:
    """Is the database reachable? (for compose healthchecks)"""
    commit()  # check_database asks on a connection of its own (web.db)
    try:
        check_database()
    except DatabaseUnavailable as error:  # gone, dropped, unreachable or without tables: the reason is logged
        return answer(schemas.Health(status="unavailable", database=errors.database_unavailable_line(error)), 503)
    return answer(schemas.Health(status="ok", database="reachable"))


@operation(
    bp,
    "get",
    "/openapi.json",
    operation_id="getOpenApiDocument",
    tag="service",
    public=True,
    responses={200: schemas.OpenApiDocument},
)
def openapi() -> Any:
    """This document, generated from the declared operations and their models"""
    return answer(schemas.OpenApiDocument.model_validate(openapi_document()))
