"""The one way tests change this process's settings: set them where an operator does (the environment, which
the processes a test starts inherit as well), forget what was read from the old values (the settings and the
database engines made from them), and undo both when the test or fixture ends. The `settings_override`
fixture (tests/conftest.py) is this for one test; `overridden_settings` for a module or session fixture."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest


class SettingsOverride:
    """settings_override(NAME="value", OTHER=None) sets NAME and unsets OTHER, then re-reads the settings;
    settings_override() alone re-reads them, as a process starting afresh would. undo() restores all."""

    def __init__(self) -> None:
        self._environment = pytest.MonkeyPatch()
        self._apps: list[Any] = []

    def follow(self, app: Any) -> Any:
        """Hand this web app (web.create_app) the settings of every later override, as a deployment restarts
        its app with new ones; returns it."""
        self._apps.append(app)
        return app

    def __call__(self, **values: str | None) -> None:
        for name, value in values.items():
            if value is None:
                self._environment.delenv(name, raising=False)
            else:
                self._environment.setenv(name, str(value))
        forget_settings()
        if self._apps:
            from core.service.settings import get_settings
            from web.settings import SETTINGS_KEY

            for app in self._apps:
                app.extensions[SETTINGS_KEY] = get_settings()

    def undo(self) -> None:
        """Back to the environment before the first override, and settings read afresh from it (twice is harmless)."""
        self._apps.clear()  # done with: the environment before the test may not even be valid settings
        self._environment.undo()
        forget_settings()


def forget_settings() -> None:
    """The settings and engines are read again on next use (lazily: a test may expect a bad value to raise)."""
    from core.service.db import reset_engines
    from core.service.settings import get_settings

    get_settings.cache_clear()
    reset_engines()


@contextlib.contextmanager
def overridden_settings(**values: str | None) -> Iterator[SettingsOverride]:
    """SettingsOverride for a `with` block (module- and session-scoped fixtures), undone when it ends."""
    override = SettingsOverride()
    try:
        override(**values)
        yield override
    finally:
        override.undo()
