"""The OpenAPI 3.1 document of the JSON API; request parameter schemas come from core.params."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from core.params import PARAMS_BY_KIND
from core.records import ARTIFACT_KINDS, JOB_KINDS, JOB_STATUSES

MAX_ID = 2**63 - 1


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _object(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required if required is not None else list(properties)}


NUMBER_OR_NULL = _nullable({"type": "number"})
INT_OR_NULL = _nullable({"type": "integer"})
STR_OR_NULL = _nullable({"type": "string"})
TIME = {"type": "string", "format": "date-time"}

JOB = _object({
    "id": {"type": "integer"}, "kind": {"enum": list(JOB_KINDS)}, "status": {"enum": list(JOB_STATUSES)},
    "params": {"type": "object"}, "parent_id": INT_OR_NULL, "sweep_id": INT_OR_NULL, "data_dir": {"type": "string"},
    "queue": {"type": "string"}, "worker_host": STR_OR_NULL, "attempts": {"type": "integer"},
    "max_attempts": {"type": "integer"}, "cancel_requested": {"type": "boolean"}, "created_at": TIME,
    "started_at": _nullable(TIME), "finished_at": _nullable(TIME), "progress": {"type": "number"},
    "epoch": INT_OR_NULL, "epochs_total": INT_OR_NULL, "images_per_s": NUMBER_OR_NULL, "eta_s": NUMBER_OR_NULL,
    "error": STR_OR_NULL, "best_valid_accuracy": NUMBER_OR_NULL, "log_tail": STR_OR_NULL,
    "finished": {"type": "boolean"}, "queue_position": INT_OR_NULL,
    "queue_served": {"type": "boolean", "description": "false: no live worker consumes this job's queue"},
})
EPOCH = _object({
    "epoch": {"type": "integer"}, "train_loss": NUMBER_OR_NULL, "train_accuracy": NUMBER_OR_NULL,
    "valid_loss": NUMBER_OR_NULL, "valid_accuracy": NUMBER_OR_NULL, "valid_balanced_accuracy": NUMBER_OR_NULL,
    "valid_f1": NUMBER_OR_NULL, "lr": NUMBER_OR_NULL, "seconds": NUMBER_OR_NULL, "images_per_s": NUMBER_OR_NULL,
    "confusion": _nullable({"type": "array", "items": {"type": "array", "items": {"type": "integer"}}}),
})
ARTIFACT = _object({
    "id": {"type": "integer"}, "job_id": {"type": "integer"}, "kind": {"enum": list(ARTIFACT_KINDS)},
    "name": {"type": "string"}, "size_bytes": {"type": "integer"}, "sha256": {"type": "string"}, "created_at": TIME,
})
SWEEP = _object({
    "id": {"type": "integer"}, "name": {"type": "string"}, "kind": {"enum": list(JOB_KINDS)},
    "base_params": {"type": "object"}, "grid": {"type": "object"}, "created_at": TIME,
    "job_ids": {"type": "array", "items": {"type": "integer"}},
})
DATA_FOLDER = _object({
    "id": {"type": "integer"}, "name": {"type": "string"}, "path": {"type": "string"}, "registered_at": TIME,
    "report": _nullable({"type": "object"}),
})
ERROR = _object({"error": {"type": "string"}, "field": {"type": "string"}}, required=["error"])
PARAMS_ANY_KIND = {"anyOf": [_ref(f"{kind.capitalize()}Params") for kind in PARAMS_BY_KIND]}
JOB_SUBMISSION = _object({
    "kind": {"enum": list(PARAMS_BY_KIND)},
    "params": {**PARAMS_ANY_KIND, "description": "data_dir must be a registered data folder's path; no checkpoint paths"},
    "parent_id": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_ID}),
    "queue": _nullable({"type": "string", "minLength": 1, "maxLength": 100}),
}, required=["kind", "params"])
SWEEP_SUBMISSION = _object({
    "kind": {"enum": list(PARAMS_BY_KIND)}, "base_params": PARAMS_ANY_KIND,
    "grid": {"type": "object", "minProperties": 1, "additionalProperties": {"type": "array", "minItems": 1},
             "description": "field: [values]; one job per point of the cartesian product"},
    "name": _nullable({"type": "string", "minLength": 1, "maxLength": 200}),
    "parent_id": _nullable({"type": "integer", "minimum": 1, "maximum": MAX_ID}),
    "queue": _nullable({"type": "string", "minLength": 1, "maxLength": 100}),
}, required=["kind", "base_params", "grid"])
DATA_FOLDER_REGISTRATION = _object({
    "path": {"type": "string", "description": "absolute path under a configured data root"},
    "name": _nullable({"type": "string", "minLength": 1, "maxLength": 200}),
}, required=["path"])


def _page_of(name: str, item: str) -> dict[str, Any]:
    return _object({name: {"type": "array", "items": _ref(item)}, "total": {"type": "integer"},
                    "page": {"type": "integer"}, "per_page": {"type": "integer"}})


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {400: "bad input: the field and why", 401: "missing or wrong bearer token", 404: "unknown id",
               413: "request body too large", 503: "the broker is unreachable"}
    return {str(code): _json(_ref("Error"), reasons[code]) for code in codes}


def _id_parameter(name: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}}


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema}


PAGE_PARAMETERS = [_query("page", {"type": "integer", "minimum": 1, "maximum": 10**6}),
                   _query("per_page", {"type": "integer", "minimum": 1, "maximum": 200})]


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _paths() -> dict[str, Any]:
    job_id, artifact_id, sweep_id = _id_parameter("job_id"), _id_parameter("artifact_id"), _id_parameter("sweep_id")
    return {
        "/api/health": {"get": {"summary": "Database reachable?", "security": [],
                                "responses": {"200": _json(_ref("Health"), "ok"), "503": _json(_ref("Health"), "down")}}},
        "/api/jobs": {
            "post": {"summary": "Submit a job", "requestBody": _body("JobSubmission"),
                     "responses": {"201": _json(_ref("Job"), "queued"), **_errors(400, 401, 413, 503)}},
            "get": {"summary": "Jobs, newest first", "parameters": [
                _query("status", {"enum": list(JOB_STATUSES)}), _query("kind", {"enum": list(JOB_KINDS)}),
                _query("sweep_id", {"type": "integer", "minimum": 1, "maximum": MAX_ID}), *PAGE_PARAMETERS],
                    "responses": {"200": _json(_ref("JobPage"), "a page of jobs"), **_errors(400, 401)}},
        },
        "/api/jobs/{job_id}": {"get": {"summary": "One job", "parameters": [job_id],
                                       "responses": {"200": _json(_ref("Job"), "the job"), **_errors(401, 404)}}},
        "/api/jobs/{job_id}/cancel": {"post": {
            "summary": "Cancel (queued: now; running: at its next batch)", "parameters": [job_id],
            "responses": {"200": _json(_ref("Job"), "the job"), **_errors(400, 401, 404)}}},
        "/api/jobs/{job_id}/retry": {"post": {
            "summary": "Queue a failed or cancelled job again", "parameters": [job_id],
            "responses": {"200": _json(_ref("Job"), "the job"), **_errors(400, 401, 404, 503)}}},
        "/api/jobs/{job_id}/metrics": {"get": {
            "summary": "Per-epoch metrics", "parameters": [job_id],
            "responses": {"200": _json(_object({"job_id": {"type": "integer"},
                                                "epochs": {"type": "array", "items": _ref("EpochMetric")}}), "epochs"),
                          **_errors(401, 404)}}},
        "/api/jobs/{job_id}/artifacts": {"get": {
            "summary": "Recorded files", "parameters": [job_id],
            "responses": {"200": _json(_object({"job_id": {"type": "integer"},
                                                "artifacts": {"type": "array", "items": _ref("Artifact")}}), "files"),
                          **_errors(401, 404)}}},
        "/api/jobs/{job_id}/artifacts/{artifact_id}": {"get": {
            "summary": "Download a recorded file", "parameters": [job_id, artifact_id],
            "responses": {"200": {"description": "the file", "content": {"application/octet-stream": {}}},
                          **_errors(401, 404)}}},
        "/api/sweeps": {
            "post": {"summary": "Submit a grid sweep", "requestBody": _body("SweepSubmission"),
                     "responses": {"201": _json(_ref("Sweep"), "queued"), **_errors(400, 401, 413, 503)}},
            "get": {"summary": "Sweeps, newest first", "parameters": PAGE_PARAMETERS,
                    "responses": {"200": _json(_ref("SweepPage"), "a page of sweeps"), **_errors(400, 401)}},
        },
        "/api/sweeps/{sweep_id}": {"get": {"summary": "One sweep", "parameters": [sweep_id],
                                           "responses": {"200": _json(_ref("Sweep"), "the sweep"), **_errors(401, 404)}}},
        "/api/data-folders": {
            "post": {"summary": "Register a data folder under a data root (and check it)",
                     "requestBody": _body("DataFolderRegistration"),
                     "responses": {"201": _json(_ref("DataFolder"), "registered"), **_errors(400, 401, 413)}},
            "get": {"summary": "Registered data folders", "responses": {
                "200": _json(_object({"data_folders": {"type": "array", "items": _ref("DataFolder")}}), "folders"),
                **_errors(401)}},
        },
        "/api/openapi.json": {"get": {"summary": "This document", "security": [],
                                      "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")}}},
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    """The API's description, built once per process."""
    schemas: dict[str, Any] = {
        "Job": JOB, "EpochMetric": EPOCH, "Artifact": ARTIFACT, "Sweep": SWEEP, "DataFolder": DATA_FOLDER,
        "Error": ERROR, "JobSubmission": JOB_SUBMISSION, "SweepSubmission": SWEEP_SUBMISSION,
        "DataFolderRegistration": DATA_FOLDER_REGISTRATION, "JobPage": _page_of("jobs", "Job"),
        "SweepPage": _page_of("sweeps", "Sweep"),
        "Health": _object({"status": {"type": "string"}, "database": {"type": "string"}}),
    }
    for kind, model in PARAMS_BY_KIND.items():
        schemas[f"{kind.capitalize()}Params"] = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {
        "openapi": "3.1.0",
        "info": {"title": "Leukemia jobs API", "version": "1",
                 "description": "Queue and watch ResNet jobs on C-NMC 2019 images. Errors: {error, field}."},
        "components": {"schemas": schemas,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": _paths(),
    }
