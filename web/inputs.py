"""Reading request input, for the pages and the JSON API alike: every bad value is a UserInputError
naming its field (a 400), never a 500."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from core.common.errors import UserInputError
from core.engine.params import input_error
from core.service.jobs import MAX_ID

# A CSV named over the web: a file name inside the data folder, not a folder's nor a hidden file's (the document's pattern).
CSV_FILE_NAME_PATTERN = r"^[^/\\.][^/\\]*$"
CSV_FILE_NAME = re.compile(CSV_FILE_NAME_PATTERN)
MAX_PAGE = 10**6  # (page - 1) × page size is an OFFSET: it must stay a database integer
Model = TypeVar("Model", bound=BaseModel)


def storable_id(value: int) -> bool:
    """An id a database integer column can hold."""
    return 1 <= value <= MAX_ID


def query_int(name: str, default: int | None, low: int = 1, high: int = MAX_ID) -> int | None:
    """An integer query argument between low and high; absent or blank gives the default."""
    raw = request.args.get(name) or None
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserInputError(f"{name}: must be a whole number", field=name) from None
    if not low <= value <= high:
        allowed = f"between {low} and {high}" if high < MAX_ID else f"{low} or more"
        raise UserInputError(f"{name}: must be {allowed}", field=name)
    return value


def query_choice(name: str, choices: tuple[str, ...]) -> str | None:
    """One of choices, or None when the argument is absent or blank."""
    value = request.args.get(name) or None
    if value is not None and value not in choices:
        raise UserInputError(f"{name}: must be one of {', '.join(choices)}", field=name)
    return value


def csv_name_problem(csv: Any) -> str | None:
    """Why a CSV name is not a plain file name inside the data folder (no path may come from a browser), or None."""
    if isinstance(csv, str) and csv and not CSV_FILE_NAME.fullmatch(csv):
        return f"give a file name inside the data folder, e.g. test.csv, not {csv!r}"
    return None


def json_body(model: type[Model]) -> Model:
    """The request's JSON object, validated by the model that the OpenAPI document also describes."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise UserInputError("body: send a JSON object with Content-Type: application/json", field="body")
    return validated(model, whole_numbers(body))


def whole_numbers(body: dict[str, Any]) -> dict[str, Any]:
    """The body with each whole number written as 3.0 or 3e2 read as an integer (changed in place). JSON has one
    number type: the document's integer fields (JSON Schema's integer) accept 3.0, and strict validation takes
    only ints for them; a float field takes the int as it is. Iterative: a body may be nested deeply."""
    pending: list[dict[str, Any] | list[Any]] = [body]
    while pending:
        container = pending.pop()
        for key in list(container.keys() if isinstance(container, dict) else range(len(container))):
            item = container[key]  # type: ignore[index]
            if isinstance(item, float) and item.is_integer():
                container[key] = int(item)  # type: ignore[index]
            elif isinstance(item, (dict, list)):
                pending.append(item)
    return body


def query_model(model: type[Model]) -> Model:
    """The query arguments, validated by their model, which the document also describes: a blank argument
    (`tag=`) is a value, refused where the document's pattern or type refuses it, not taken as absent."""
    return validated(model, dict(request.args.items()))


def validated(model: type[Model], values: dict[str, Any]) -> Model:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise input_error(error) from None
