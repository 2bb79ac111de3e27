"""A secret made now (a webhook's signing secret, an API token, a generated password) is shown in the
page that answers the action, once, and never travels in the session cookie, which the browser keeps
and sends back (Flask's cookie is signed, not encrypted: anyone holding it can read it)."""

from __future__ import annotations

from flask.sessions import SecureCookieSessionInterface

from core.service import webhooks
from core.service.access import cli_actor
from core.service.db import get_sessionmaker
from tests.conftest import WEB_ADMIN
from tests.web_helpers import csrf_token, login


def cookie_session(app, client) -> str:
    """What the client's session cookie holds, decoded as the server reads it."""
    cookie = client.get_cookie("session")
    if cookie is None:
        return ""
    return repr(SecureCookieSessionInterface().get_signing_serializer(app).loads(cookie.value))


def test_a_new_webhooks_secret_is_in_the_page_not_in_the_cookie(app, client):
    login(client, *WEB_ADMIN)
    token = csrf_token(client, "/admin/webhooks")
    added = client.post(
        "/admin/webhooks", data={"url": "https://hooks.example.org/leukemia", "events": ["job.failed"], "csrf_token": token}
    )
    with get_sessionmaker().begin() as session:
        [hook] = webhooks.list_webhooks(session, cli_actor())
        secret = hook.secret
    assert secret not in cookie_session(app, client)
    page = added.get_data(as_text=True)
    assert added.status_code == 200 and f"Webhook {hook.id} added." in page
    assert f'<code class="secret-value">{secret}</code>' in page and "shown this once" in page
    assert secret not in client.get("/admin/webhooks").get_data(as_text=True)  # once
