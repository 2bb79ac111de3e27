"""The OpenAPI 3.1 document of the JSON API, generated from the operations the API declares.

Each route of web.api is declared with `operation(...)`: its operationId, tag, request body,
query and response models (web.api.schemas). The document is built from those declarations and
the models' own JSON schemas (pydantic's `models_json_schema`), so it cannot drift from what
the views validate and serialise: fields carry the checks' limits and patterns, request bodies are
`additionalProperties: false`, downloads list the media types web.downloads sends. A small generator rather than flask-openapi3 or spectree:
both wrap Flask's routing and request parsing in their own, while the API needs only this."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Literal

from flask import Blueprint
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from core.engine.params import PARAMS_BY_KIND
from web.api import schemas
from web.downloads import ARTIFACT_MEDIA_TYPES, OTHER_FILES
from web.inputs import MAX_ID

REF = "#/components/schemas/{model}"
ERROR_REASONS = {
    400: "bad input: the field and why",
    401: "missing or wrong bearer token",
    403: "your role does not allow this (core.service.access)",
    404: "unknown id",
    409: "refused by the current state (core.common.errors.StateConflict): e.g. the job is finished, or still queued",
    413: "request body too large",
    503: "unavailable: the database or the broker is unreachable, or an artifact file cannot be changed",
}
FILE = "file"  # a response that is a download, not a model
PNG = "png"  # a response that is a PNG image shown inline
# Media types of the non-model responses: a recorded file is sent as its kind's (web.downloads). Octet-stream
# comes first and a PNG is also listed as it: generated clients (openapi-python-client) read the first media
# type they know, octet-stream as bytes (text/csv first would be read as text), and know no image/* type.
MEDIA = {
    FILE: ("the file, as the media type of its kind", tuple(dict.fromkeys([OTHER_FILES, *ARTIFACT_MEDIA_TYPES.values()]))),
    PNG: ("the image", ("image/png", "application/octet-stream")),
}
BYTES = {"type": "string", "format": "binary"}
FILE_SCHEMA = {"application/json": {"description": "a JSON file a job wrote (evaluation.json, metrics.json...)"}}
PATH_PARAMETER = re.compile(r"<int:(\w+)>")


@dataclass(frozen=True)
class Operation:
    """One documented route of the API."""

    method: Literal["get", "post", "patch", "delete"]
    rule: str  # the Flask rule under /api, e.g. /jobs/<int:job_id>
    operation_id: str
    tag: str
    summary: str
    responses: dict[int, type[BaseModel] | str]  # status → model, or FILE / PNG
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    errors: tuple[int, ...]
    public: bool


OPERATIONS: list[Operation] = []


def operation(
    blueprint: Blueprint,
    method: Literal["get", "post", "patch", "delete"],
    rule: str,
    *,
    operation_id: str,
    tag: str,
    responses: dict[int, type[BaseModel] | str],
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    errors: tuple[int, ...] = (),
    public: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a view on the blueprint and declare it for the document; its docstring's first line is the summary."""

    def declare(view: Callable[..., Any]) -> Callable[..., Any]:
        summary = (view.__doc__ or operation_id).strip().splitlines()[0]
        OPERATIONS.append(
            Operation(
                method, rule, operation_id, tag, summary, responses, body, query, errors if public else (*errors, 401), public
            )
        )
        blueprint.add_url_rule(rule, endpoint=view.__name__, view_func=view, methods=[method.upper()])
        return view

    return declare


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _parameters(op: Operation) -> list[dict[str, Any]]:
    """Path ids (1..MAX_ID) from the rule, then one query parameter per field of the query model."""
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}
        for name in PATH_PARAMETER.findall(op.rule)
    ]
    if op.query is not None:
        properties = op.query.model_json_schema()["properties"]
        for name, info in op.query.model_fields.items():
            parameters.append({"name": name, "in": "query", "required": info.is_required(), "schema": properties[name]})
    return parameters


def _responses(op: Operation) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    for status, model in op.responses.items():
        if model in MEDIA:
            description, media_types = MEDIA[model]  # type: ignore[index]
            answers[str(status)] = {
                "description": description,
                "content": {media: {"schema": FILE_SCHEMA.get(media, BYTES)} for media in media_types},
            }
        else:
            answers[str(status)] = _json(_ref(model), model.__doc__ or model.__name__)  # type: ignore[union-attr]
    for status in sorted(op.errors):
        answers.setdefault(str(status), _json(_ref(schemas.ErrorBody), ERROR_REASONS[status]))
    return answers


def _path_item(op: Operation) -> dict[str, Any]:
    item: dict[str, Any] = {"operationId": op.operation_id, "tags": [op.tag], "summary": op.summary, "responses": _responses(op)}
    if parameters := _parameters(op):
        item["parameters"] = parameters
    if op.body is not None:
        item["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(op.body)}}}
    if op.public:
        item["security"] = []
    return item


def _component_schemas(operations: list[Operation]) -> dict[str, Any]:
    """Every request model (validation), response model (serialisation) and job params model, by name."""
    requests = {op.body for op in operations if op.body is not None} | set(PARAMS_BY_KIND.values())
    responses = {model for op in operations for model in op.responses.values() if model not in MEDIA} | {schemas.ErrorBody}
    pairs = [(model, "validation") for model in requests] + [(model, "serialization") for model in responses]
    _, top = models_json_schema(sorted(pairs, key=lambda pair: pair[0].__name__), ref_template=REF)  # type: ignore[arg-type]
    return dict(sorted(top["$defs"].items()))


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The API's description, generated once per process from its declared operations and their models."""
    operations = OPERATIONS
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        path = "/api" + PATH_PARAMETER.sub(r"{\1}", op.rule)
        paths.setdefault(path, {})[op.method] = _path_item(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Leukemia jobs API",
            "version": "1",
            "description": "Queue and watch ResNet jobs on C-NMC 2019 images. Errors: {error, field}.",
        },
        "tags": [{"name": tag} for tag in dict.fromkeys(op.tag for op in operations)],
        "components": {
            "schemas": _component_schemas(operations),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
