"""Form fields generated from core.engine.params (the one schema) and form values validated by it.

A field's input type, choices, default and help come from the pydantic model, so a new
parameter shows up in the forms without touching a template. What a blank choice means, the form's
presets and the folder's names offered are here too; web/static/forms.js is the browser's side."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from core.common.errors import UserInputError
from core.engine.params import PARAMS_BY_KIND
from core.service.job_options import JobOptions, parse_options, parse_tag_list
from core.service.sweep_stopping import MedianStopRule, median_rule_from_options

# Paths never come from a browser: the data folder is chosen among registered ones and
# checkpoints come from a parent job (best or last).
NOT_IN_FORMS = {"kind", "data_dir", "checkpoint", "checkpoints"}
# Train fields a sweep may vary; values separated by commas (class_weights: by ';').
SWEEP_FIELDS = (
    "arch",
    "epochs",
    "batch_size",
    "optimizer",
    "lr",
    "schedule",
    "weight_decay",
    "class_weights",
    "augment",
    "image_size",
    "seed",
)
FORM_LEVEL = "__form__"
# Left blank, these take their default from the chosen data folder (core.engine.data.splits.with_folder_image_size).
FOLDER_DEFAULTS = {
    "image_size": "Blank: the data folder's image size when all its images share one (shown next to the folder), else 450."
}
# What the blank choice of an optional select means, as its option says it (finetune's arch comes from its checkpoint).
BLANK_CHOICES = {"arch": "(from the checkpoint)", "early_stopping_metric": "(off: every epoch runs)"}
# Values the forms fill in where the schema's default is not what a person at the dashboard wants: a queued
# evaluate or predict job always has a folder for heat maps (the CLI's default, none, needs no --out).
FORM_PRESETS = {"explain": ("8", "The form fills in 8 (up to 16 heat maps); blank or none: no heat maps.")}
# The field naming a CSV or split of the chosen folder: the forms show it beside the folder, with the folder's names.
SPLIT_FIELD = "csv"


@dataclass
class FormField:
    """One input of a generated form."""

    name: str
    label: str
    input: str  # select | checkbox | number | text
    default: Any
    help: str = ""
    choices: list[str] = field(default_factory=list)
    step: str = "any"
    optional: bool = False
    blank: str = "(default)"  # the option of a blank optional select


def _literal_choices(annotation: Any) -> tuple[list[str], bool]:
    """Choices of a Literal (or Optional Literal) annotation, and whether None is allowed."""
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)], False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and typing.get_origin(args[0]) is Literal:
            return [str(a) for a in typing.get_args(args[0])], True
    return [], False


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """`int | None` → (int, True)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else str), True
    return annotation, False


def form_fields(kind: str) -> list[FormField]:
    """The inputs for a job kind, in the schema's order."""
    model = PARAMS_BY_KIND[kind]
    fields = []
    for name, info in model.model_fields.items():
        if name in NOT_IN_FORMS:
            continue
        label = name.replace("_", " ")
        default = None if info.is_required() else info.get_default(call_default_factory=True)
        help_text = info.description or ""
        choices, optional = _literal_choices(info.annotation)
        if choices:
            fields.append(
                FormField(
                    name,
                    label,
                    "select",
                    default,
                    help_text,
                    choices,
                    optional=optional,
                    blank=BLANK_CHOICES.get(name, "(default)"),
                )
            )
            continue
        base, optional = _base_type(info.annotation)
        if kind == "train" and name in FOLDER_DEFAULTS:
            default, optional, help_text = None, True, FOLDER_DEFAULTS[name]
        if name in FORM_PRESETS:
            default, note = FORM_PRESETS[name]
            help_text = f"{help_text} {note}".strip()
        if base is bool:
            fields.append(FormField(name, label, "checkbox", default, help_text))
        elif base in (int, float):
            fields.append(
                FormField(name, label, "number", default, help_text, step="1" if base is int else "any", optional=optional)
            )
        else:
            fields.append(FormField(name, label, "text", default, help_text, optional=optional))
    return fields


def offered_names(report: dict[str, Any] | None, kind: str) -> list[str]:
    """The CSV files and named splits of a folder's check report that a job of this kind may read: labelled
    ones to evaluate; to predict, those without labels first. Empty for a report from before they were recorded."""
    names = (report or {}).get("split_names") or {}
    labelled, unlabelled = names.get("labelled", []), names.get("unlabelled", [])
    return unlabelled + labelled if kind == "predict" else labelled


def preset_name(names: list[str], kind: str) -> str:
    """What the CSV box shows for a folder before anything is typed: the schema's default when the folder has it
    (evaluate: valid.csv), else the first name offered (predict: the folder's test CSV)."""
    field_info = PARAMS_BY_KIND[kind].model_fields.get(SPLIT_FIELD)
    default = field_info.default if field_info is not None else None
    if isinstance(default, str) and default in names:
        return default
    return names[0] if names else ""


def values_from_form(kind: str, form: Any) -> dict[str, Any]:
    """Raw values of the generated inputs (strings; pydantic converts them); blank optional ones are left out."""
    values: dict[str, Any] = {}
    for item in form_fields(kind):
        if item.input == "checkbox":
            values[item.name] = item.name in form
            continue
        raw = form.get(item.name, "").strip()
        if raw == "":
            continue  # the schema's default applies
        values[item.name] = raw
    return values


def validation_errors(kind: str, values: dict[str, Any]) -> dict[str, str]:
    """Field → message from the schema (FORM_LEVEL for whole-form rules); empty when valid."""
    try:
        PARAMS_BY_KIND[kind].model_validate({**values, "kind": kind})
    except ValidationError as error:
        errors: dict[str, str] = {}
        for item in error.errors():
            name = str(item["loc"][0]) if item["loc"] else FORM_LEVEL
            errors.setdefault(name, item["msg"].removeprefix("Value error, "))
        return errors
    return {}


def split_sweep_values(name: str, text: str) -> list[str]:
    """`0.001, 0.0003` → ['0.001', '0.0003']; class_weights values are separated by ';' (they contain a comma)."""
    separator = ";" if name == "class_weights" else ","
    return [value.strip() for value in text.split(separator) if value.strip()]


def median_rule_from_form(form: Any, errors: dict[str, str]) -> MedianStopRule | None:
    """The sweep form's median stopping rule (blank metric: none); a bad value is put in errors."""
    values = [form.get(name, "").strip() or None for name in ("median_metric", "median_min_finished", "median_grace")]
    try:
        return median_rule_from_options(*values)
    except UserInputError as error:
        errors["early_stopping"] = str(error).partition(": ")[2] or str(error)
        return None


def options_from_form(form: Any, errors: dict[str, str]) -> JobOptions | None:
    """The options fieldset (options_fields in _macros.html: an input per JobOptions field, named as it) as
    JobOptions: a blank input takes the option's default, a list (tags) is typed comma- or space-separated;
    a bad one is put in errors."""
    values: dict[str, Any] = {}
    for name, info in JobOptions.model_fields.items():
        raw = form.get(name, "")
        if typing.get_origin(info.annotation) is list:
            values[name] = parse_tag_list(raw)
        elif raw.strip():
            values[name] = raw
    try:
        return parse_options(values)
    except UserInputError as error:
        errors[error.field or FORM_LEVEL] = str(error).partition(": ")[2] or str(error)
        return None


def options_form_values(options: JobOptions) -> dict[str, str]:
    """Stored options as options_fields' inputs show them (the edit forms): a list comma-separated, none blank."""
    shown = {}
    for name, value in options.model_dump().items():
        shown[name] = ", ".join(value) if isinstance(value, list) else "" if value is None else str(value)
    return shown
