"""The settings a web app was made with (web.create_app), which its code reads instead of the process's."""

from __future__ import annotations

from flask import Flask, current_app

from core.service.settings import Settings

SETTINGS_KEY = "leukemia.settings"  # app.extensions[SETTINGS_KEY]


def app_settings(app: Flask | None = None) -> Settings:
    """The settings of the app (default: the one serving this request)."""
    return (app or current_app).extensions[SETTINGS_KEY]
