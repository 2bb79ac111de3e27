"""Text checks every layer shares: names and file names hold no control characters."""

from __future__ import annotations

import re

from core.common.errors import UserInputError

# C0 and C1 control characters, NUL included: they break paths, log lines, CSV rows and headers.
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
NO_CONTROL_CHARACTERS = "contains a control character (NUL, line break, tab, escape...), which names and file names may not"


def check_printable(value: str, field: str) -> str:
    """A name or file name as given, or a UserInputError naming the field if it holds a control character."""
    if CONTROL_CHARACTER.search(value):
        raise UserInputError(f"{field}: {NO_CONTROL_CHARACTERS}", field=field)
    return value
