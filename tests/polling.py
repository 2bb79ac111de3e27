"""Waiting in tests: poll a condition until a deadline, never a fixed sleep (a fixed sleep is either
too short on a loaded machine or wasted time on an idle one)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    timeout: float,
    what: str,
    *,
    check: Callable[[], None] | None = None,
    describe: Callable[[], str] | None = None,
    interval: float = 0.1,
) -> T:
    """Poll condition() until it returns something truthy, and return that. On timeout fail naming
    what was awaited, followed by describe() (say, the logs of the processes involved). check()
    runs every round and fails at once when waiting can no longer succeed (a process it needs died)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if check is not None:
            check()
        if time.monotonic() >= deadline:
            details = f"\n{describe()}" if describe is not None else ""
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}{details}")
        time.sleep(interval)
