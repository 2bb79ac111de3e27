"""How numbers are written for people, once: sizes (`human_bytes`, "131.1 MB"), durations
(`human_duration`, "1m 15s") and metric percentages (`percent`, one decimal).

The dashboard's Jinja filters (web.formats) and the CLI's reports call these; web/static/live.js
(`Live.percent`, for the panels results.js draws) writes the same percentages in the browser. Sizes are
decimal (1 kB = 1000 bytes, as disks are sold and as `df -H` counts)."""

from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

MISSING = "—"
BYTE_UNITS = ("kB", "MB", "GB", "TB")


def _one_decimal(value: float) -> str:
    """value with one decimal, a tie rounded away from zero as JavaScript's toFixed(1) does (Python's format
    rounds 6.25 to '6.2', toFixed to '6.3'): the page's first render and live.js's updates must agree."""
    return str(Decimal(value).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


def human_bytes(count: int | None, missing: str = MISSING) -> str:
    """131127700 → '131.1 MB', 999 → '999 B'; None → missing."""
    if count is None:
        return missing
    if abs(count) < 1000:
        return f"{int(count)} B"
    value = count / 1000
    for unit in BYTE_UNITS:
        if abs(value) < 999.95 or unit == BYTE_UNITS[-1]:  # 999.96 kB would round to "1000.0 kB": say 1.0 MB
            return f"{_one_decimal(value)} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def human_duration(seconds: float | None, missing: str = MISSING) -> str:
    """75 → '1m 15s', 3900 → '1h 05m', 9 → '9s'; None or not finite → missing."""
    if seconds is None or not math.isfinite(seconds):
        return missing
    whole = math.floor(seconds + 0.5)  # half up, as JavaScript's Math.round (Python's round() goes to even)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def percent(value: float | None, missing: str = MISSING) -> str:
    """A metric in [0, 1] as a percentage with one decimal: 0.5333 → '53.3%'; None → missing."""
    return missing if value is None else f"{_one_decimal(100 * value)}%"
