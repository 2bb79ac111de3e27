"""What a submitter sets on a job or sweep besides its params: priority, notes, tags, retention, and any
option added to JobOptions.

One shape for the CLI options (generated: leukemia.commands.jobs), the API's fields (the request bodies and
the job and sweep answers carry JobOptions' fields) and the forms' inputs (web.forms.options_from_form);
core.service.jobs stores it on the row. The COLUMN_OPTIONS have columns of their own (priority as a number
so SQL can order by it, tags as job_tags/sweep_tags rows) and their own place on the pages; every other
option is stored in the row's extra_options, edited through JobOptionsEdit's generated fields, and listed by
name on the job page and by `leukemia job` (listed_options)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Mapping, Optional

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from core.common.text import CONTROL_CHARACTER, NO_CONTROL_CHARACTERS, PRINTABLE_PATTERN
from core.engine.params import input_error

Priority = Literal["low", "normal", "high"]
# Each rule is one regex: the check below uses it, and the API's document carries it as the field's pattern.
TAG_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}$"
TAG = re.compile(TAG_PATTERN)
RETENTION_PATTERN = r"^(all|best|last-([1-9][0-9]{0,2}))$"
RETENTION = re.compile(RETENTION_PATTERN)
NOTES_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]*$"  # control characters but line breaks and tabs
NOTES = re.compile(NOTES_PATTERN)
MAX_TAGS = 20
MAX_DESCRIPTION = 10_000
RETENTION_HELP = (
    "all (keep every checkpoint), best (after success best.pt only) or last-N (best.pt, last.pt and "
    "the N newest epoch checkpoints, N 1-999)"
)


def check_tag(tag: str) -> str:
    """A tag as stored: 1-64 letters, digits and . _ : + - (starting with a letter or digit), lower-cased."""
    if not isinstance(tag, str) or not TAG.fullmatch(tag):
        raise ValueError(f"{tag!r} is not a tag: use 1-64 letters, digits and . _ : + -, starting with a letter or digit")
    return tag.lower()


def check_retention(policy: str | None) -> str | None:
    """A retention policy as stored, None meaning the global one (RETENTION_HELP). An empty text is no policy
    (the document's pattern refuses it too): the forms and the CLI, where "" means the global one, say None."""
    if policy is None:
        return None
    if not isinstance(policy, str) or not RETENTION.fullmatch(policy):
        raise ValueError(f"{policy!r} is not a retention policy: use {RETENTION_HELP}")
    return policy


Tag = Annotated[str, Field(json_schema_extra={"pattern": TAG_PATTERN})]
Notes = Field(max_length=MAX_DESCRIPTION, json_schema_extra={"pattern": NOTES_PATTERN})
# null or "": the global policy
RetentionPolicy = Annotated[str | None, Field(json_schema_extra={"pattern": RETENTION_PATTERN})]


def check_line(value: str) -> str:
    """One line of text as stored: no control character (a line break included)."""
    if CONTROL_CHARACTER.search(value):
        raise ValueError(NO_CONTROL_CHARACTERS)
    return value


# An option that is one line of text: stripped, at most 500 characters (the document's pattern says the rest).
OneLine = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=500),
    AfterValidator(check_line),
    Field(json_schema_extra={"pattern": PRINTABLE_PATTERN}),
]


class JobOptions(BaseModel):
    """Set at submit (and later changed by an edit) on a job or a sweep (whose jobs share them). A new option is
    one field here, its checks in its type (Annotated, with an AfterValidator raising ValueError), so the edit
    field made from it (JobOptionsEdit) checks the same; the forms need its input in options_fields (_macros.html)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # The descriptions are the API document's and the CLI's help.
    priority: Priority = Field("normal", description="Among queued jobs of a queue, higher starts first.")
    description: Annotated[str, Notes] = Field("", description="Free-text notes, shown on the job page and in compare.")
    tags: list[Tag] = Field(
        default_factory=list,
        max_length=MAX_TAGS,
        description="Labels to filter by: letters, digits and . _ : + - (a list; on the CLI repeat the option).",
    )
    retention: RetentionPolicy = Field(
        None, description=f"After it finishes: {RETENTION_HELP}. Null or not given: the global policy."
    )
    reference: OneLine = Field(
        "",
        description="A link or id of what the run belongs to: a ticket, a lab-notebook "
        "page, a paper (a web address is shown as a link).",
    )

    @field_validator("description")
    @classmethod
    def _printable_notes(cls, value: str) -> str:
        return check_notes(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return check_tags(value)

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        return check_retention(value)


# The options stored in columns of their own and shown in their own place; any other is stored in extra_options.
COLUMN_OPTIONS = ("priority", "description", "tags", "retention")


def extra_options(options: JobOptions) -> dict[str, Any]:
    """The options beyond COLUMN_OPTIONS that differ from their defaults, as JSON values (a row's extra_options)."""
    return options.model_dump(mode="json", exclude=set(COLUMN_OPTIONS), exclude_defaults=True)


def listed_options(options: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """(label, value) of each option beyond COLUMN_OPTIONS that is set, in JobOptions' order: what the job page
    and `leukemia job` list by name. options: a JobOptions' dump, or an API answer carrying its fields."""
    return [
        (name.replace("_", " "), options[name])
        for name in JobOptions.model_fields
        if name not in COLUMN_OPTIONS and options.get(name) not in (None, "", [])
    ]


def _tags_not_with_changes(tags: str) -> dict:
    """JSON Schema: tags given (not null) together with a non-empty `changes` list."""
    return {"required": ["tags", tags], "properties": {"tags": {"type": "array"}, tags: {"minItems": 1}}}


class _ColumnOptionsEdit(BaseModel):
    """JobOptionsEdit's hand-written fields: the COLUMN_OPTIONS, tags also added and removed."""

    # The document says what _changed_tags refuses: tags with add_tags or remove_tags.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={"not": {"anyOf": [_tags_not_with_changes("add_tags"), _tags_not_with_changes("remove_tags")]}},
    )

    priority: Priority | None = Field(None, description="absent or null: unchanged")
    description: Annotated[str | None, Notes] = Field(None, description="the new notes; absent or null: unchanged")
    tags: list[Tag] | None = Field(None, max_length=MAX_TAGS, description="replace every tag; absent or null: unchanged")
    add_tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="tags to add")
    remove_tags: list[Tag] = Field(default_factory=list, max_length=MAX_TAGS, description="tags to remove")
    retention: RetentionPolicy = Field(None, description=f"{RETENTION_HELP}; null: the global policy; absent: unchanged")

    @field_validator("description")
    @classmethod
    def _printable_notes(cls, value: str | None) -> str | None:
        return None if value is None else check_notes(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_tags(value)

    @field_validator("add_tags", "remove_tags")
    @classmethod
    def _changed_tags(cls, value: list[str], info: ValidationInfo) -> list[str]:
        if value and info.data.get("tags") is not None:
            raise ValueError("give either tags (to replace them all) or add_tags/remove_tags, not both")
        return check_tags(value)

    @field_validator("retention")
    @classmethod
    def _retention(cls, value: str | None) -> str | None:
        return check_retention(value)

    def applied_to(self, current: JobOptions) -> JobOptions:
        """The options after this change (checked again as a whole: at most MAX_TAGS tags)."""
        values = current.model_dump()
        for name in JobOptions.model_fields:
            if name not in COLUMN_OPTIONS and getattr(self, name) is not None:
                values[name] = getattr(self, name)
        if self.priority is not None:
            values["priority"] = self.priority
        if self.description is not None:
            values["description"] = self.description
        if self.tags is not None:
            values["tags"] = self.tags
        values["tags"] = sorted((set(values["tags"]) | set(self.add_tags)) - set(self.remove_tags))
        if "retention" in self.model_fields_set:
            values["retention"] = self.retention
        return parse_options(values)


def _edit_field(name: str) -> tuple[Any, Any]:
    """An option beyond COLUMN_OPTIONS as an edit field: its type and checks, or null; absent or null: unchanged."""
    info = JobOptions.model_fields[name]
    annotation = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
    return Optional[annotation], Field(
        None, description=f"{info.description or name}; absent or null: unchanged", json_schema_extra=info.json_schema_extra
    )


JobOptionsEdit = create_model(  # type: ignore[call-overload]
    "JobOptionsEdit",
    __base__=_ColumnOptionsEdit,
    __module__=__name__,
    __doc__="""A later change of a job's or sweep's options (PATCH, `leukemia edit`, the edit forms): a field left
    out stays as it is. Tags are replaced (tags) or changed (add_tags, remove_tags), not both; retention null
    goes back to the global policy. Validated by JobOptions' own checks; each option beyond COLUMN_OPTIONS is a
    field of the same name.""",
    **{name: _edit_field(name) for name in JobOptions.model_fields if name not in COLUMN_OPTIONS},
)


def check_notes(value: str) -> str:
    """Notes as stored: line breaks and tabs are fine, other control characters are not; trimmed."""
    if not NOTES.fullmatch(value):
        raise ValueError(NO_CONTROL_CHARACTERS)
    return value.strip()


def check_tags(tags: list[str]) -> list[str]:
    """Tags as stored: each checked (check_tag), without repeats, sorted."""
    return sorted({check_tag(tag) for tag in tags})


def parse_options(values: dict, *, strict: bool = False) -> JobOptions:
    """Validate raw option values (CLI, form, API); bad input is a UserInputError naming the field."""
    try:
        return JobOptions.model_validate(values, strict=strict)
    except ValidationError as error:
        raise input_error(error) from None


def parse_tag_list(text: str) -> list[str]:
    """Tags typed as one comma- or space-separated text (forms, `--tags a,b`)."""
    return [tag for tag in re.split(r"[,\s]+", text or "") if tag]


def parse_edit(values: dict, *, strict: bool = False) -> JobOptionsEdit:
    """Validate a partial change (CLI, form, API); bad input is a UserInputError naming the field."""
    try:
        return JobOptionsEdit.model_validate(values, strict=strict)
    except ValidationError as error:
        raise input_error(error) from None
