"""The Flask dashboard and JSON API: an app factory in the Flask tutorial's shape.

Configuration comes from defaults, then the Settings the app is made with (core.service.settings; the
process's own unless given), then the test's dict.
Creating the app has no side effects: migrations, the admin user and the embedded default's
secrets come from the explicit steps in web.auth (`leukemia migrate`, `leukemia web`)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask

from core.service.job_options import listed_options
from core.service.logs import configure_logging
from core.service.records import JobStatus
from core.service.settings import Settings, get_settings
from web.settings import SETTINGS_KEY

MAX_REQUEST_BYTES = 1 * 1024 * 1024  # forms and JSON bodies only; no uploads


def _flask_config(settings: Settings) -> dict[str, Any]:
    """Flask's and its extensions' own keys. Our settings are not copied here: code reads them from
    web.settings.app_settings()."""
    return {
        "SECRET_KEY": settings.secret_key_or_stored,
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=8),
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": settings.session_cookie_secure,
        "MAX_CONTENT_LENGTH": MAX_REQUEST_BYTES,
        "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the (expiring) session
    }


def create_app(settings: Settings | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the dashboard app with these settings (default: the process's, read from the environment);
    deployment runs it with gunicorn (`web.wsgi:app`)."""
    settings = settings or get_settings()
    app = Flask(__name__)
    app.extensions[SETTINGS_KEY] = settings
    app.config.from_mapping(_flask_config(settings))
    if test_config:
        app.config.from_mapping(test_config)
    configure_logging()  # LOG_FORMAT: text, or one JSON object per line

    from web import (  # noqa: F401
        auth,
        cv_views,
        db,
        errors,
        formats,
        metrics,
        request_ids,
        request_json,
        security,
        submit_views,
        users_views,
        views,
        webhook_views,
    )
    from web.api import routes as api_routes

    request_ids.init_app(app)
    formats.init_app(app)
    app.jinja_env.globals["JobStatus"] = JobStatus  # templates name statuses as the code does
    app.jinja_env.globals["listed_options"] = listed_options  # a job's or sweep's other options, by name
    auth.init_app(app)
    security.init_app(app)
    errors.init_app(app)
    request_json.init_app(app)
    db.init_app(app)  # last: its after_request runs first
    app.register_blueprint(auth.bp)
    app.register_blueprint(views.bp)
    app.register_blueprint(submit_views.bp)
    app.register_blueprint(cv_views.bp)
    app.register_blueprint(users_views.bp)
    app.register_blueprint(webhook_views.bp)
    app.register_blueprint(api_routes.bp)
    app.register_blueprint(metrics.bp)
    security.csrf.exempt(api_routes.bp)
    return app
