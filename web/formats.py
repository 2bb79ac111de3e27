"""The templates' number filters, each the one formatter of core.common.formats (live.js writes the same
in the browser): `bytes` (decimal units), `duration`, `percent` (metrics: one decimal), and `number`
(losses, areas, learning rates, speeds: significant digits); `parameter`, a job parameter's value;
`link_or_text`, a job option's value (a web address as a link)."""

from __future__ import annotations

import re
from typing import Any

from flask import Flask
from markupsafe import Markup

from core.common.formats import human_bytes, human_duration, percent


def number(value: float | None, digits: int = 3) -> str:
    """A value that is not a share (a loss, an area, a learning rate): `digits` significant digits."""
    return "—" if value is None else f"{value:.{digits}g}"


def parameter(value: Any) -> str:
    """A job parameter as people read it, not as Python writes it: none, empty text or an empty list as "—",
    a switch as yes or no, a list as its items."""
    if value is None or value == "" or value == []:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


WEB_ADDRESS = re.compile(r"https?://[^\s<>\"'`]+")


def link_or_text(value: Any) -> Markup | str:
    """A job option's value as the page shows it: a web address (http or https only) as a link that opens apart,
    anything else as text (parameter)."""
    text = parameter(value)
    if WEB_ADDRESS.fullmatch(text):
        return Markup('<a href="{0}" rel="noopener noreferrer" target="_blank">{0}</a>').format(text)
    return text


def init_app(app: Flask) -> None:
    app.add_template_filter(human_bytes, "bytes")
    app.add_template_filter(human_duration, "duration")
    app.add_template_filter(percent, "percent")
    app.add_template_filter(number, "number")
    app.add_template_filter(parameter, "parameter")
    app.add_template_filter(link_or_text, "link_or_text")
