"""The WSGI entry for deployment: `gunicorn web.wsgi:app`."""

from web import create_app

app = create_app()
