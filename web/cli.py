"""`leukemia web`: the dashboard on Flask's development server, for local use."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
def web(host: str, port: int) -> None:
    """Serve the dashboard and JSON API (deployment: gunicorn 'web.wsgi:app')."""
    from core.cli import run_user_command
    from web import create_app

    # A bad setting or an unreachable database is one line, not a traceback.
    app = run_user_command(create_app)
    app.run(host=host, port=port, debug=False, use_reloader=False)
