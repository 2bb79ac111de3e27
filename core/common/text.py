"""Text checks every layer shares: names and file names hold no control characters.

`check_printable` is the check; `PRINTABLE_PATTERN` and `name_pattern` are the same rule as JSON Schema
patterns, for the API's document. Each check that is a regex (tags, retention, user names, split names)
keeps it as one constant that the document's pattern reuses."""

from __future__ import annotations

import re

from core.common.errors import UserInputError

# C0 and C1 control characters, NUL included: they break paths, log lines, CSV rows and headers.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"  # a regex character-class body, as Python and JSON Schema read it
CONTROL_CHARACTER = re.compile(f"[{CONTROL_CHARACTERS}]")
# The same rule as a JSON Schema pattern, for the API's document: text without a control character.
PRINTABLE_PATTERN = f"^[^{CONTROL_CHARACTERS}]*$"
NO_CONTROL_CHARACTERS = "contains a control character (NUL, line break, tab, escape...), which names and file names may not"


def check_printable(value: str, field: str) -> str:
    """A name or file name as given, or a UserInputError naming the field if it holds a control character."""
    if CONTROL_CHARACTER.search(value):
        raise UserInputError(f"{field}: {NO_CONTROL_CHARACTERS}", field=field)
    return value


def name_pattern(refused: str = "") -> str:
    """The JSON Schema pattern of a name that is stripped, then must be non-empty: no control character (nor
    any of `refused`, a character-class body) and at least one character that is not whitespace."""
    allowed = f"[^{CONTROL_CHARACTERS}{refused}]"
    return f"^{allowed}*[^\\s{CONTROL_CHARACTERS}{refused}]{allowed}*$"
