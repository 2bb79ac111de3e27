"""`leukemia web`: the dashboard on Flask's development server, for local use; `leukemia migrate`:
the explicit setup step creating the app does not take (the schema and the dashboard admin)."""

from __future__ import annotations

import logging

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
def web(host: str, port: int) -> None:
    """Serve the dashboard and JSON API (deployment: gunicorn 'web.wsgi:app' after `leukemia migrate`)."""
    from core.service.logs import configure_logging
    from leukemia.commands.base import run_user_command
    from web import create_app
    from web.auth import make_secrets, prepare_database

    def prepared_app():  # type: ignore[no-untyped-def]
        configure_logging()  # before the migration's first line
        prepare_database()
        make_secrets()
        return create_app()

    # A bad setting or an unreachable database is one line, not a traceback.
    app = run_user_command(prepared_app)
    # werkzeug's server, as app.run starts it but without Flask's banner (printed outside logging):
    # werkzeug's own lines (its start, its access lines) are log records, in LOG_FORMAT.
    from werkzeug.serving import run_simple

    logging.getLogger("leukemia.web").info("dashboard on http://%s:%s/ (Flask's development server)", host, port)
    run_simple(host, port, app, threaded=True)


@click.command()
def migrate() -> None:
    """Bring the database to the newest migration and create (or reset) the dashboard admin
    from ADMIN_USERNAME/ADMIN_PASSWORD (none set and no user yet: 'admin' with a generated password)."""
    from leukemia.commands.base import run_user_command
    from web.auth import prepare_database

    run_user_command(prepare_database)
