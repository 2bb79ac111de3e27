"""The templates' number filters, each the one formatter of core.common.formats (live.js writes the same
in the browser): `bytes` (decimal units), `duration`, `percent` (metrics: one decimal), and `number`
(losses, areas, learning rates, speeds: significant digits); `parameter`, a job parameter's value."""

from __future__ import annotations

from typing import Any

from flask import Flask

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


def init_app(app: Flask) -> None:
    app.add_template_filter(human_bytes, "bytes")
    app.add_template_filter(human_duration, "duration")
    app.add_template_filter(percent, "percent")
    app.add_template_filter(number, "number")
    app.add_template_filter(parameter, "parameter")
