"""Start Flower for compose's monitoring profile (the mher/flower image): `python flower_start.py FLOWER_ARGS`.

Flower reads its basic auth from FLOWER_BASIC_AUTH and Celery its broker from CELERY_BROKER_URL; both are
set here, in Flower's own process environment, from the secret files, so neither password is on a command
line (`ps`) nor in compose's environment (`docker inspect`). The broker is BROKER_URL, the app's one broker
setting, with BROKER_PASSWORD_FILE's password for a URL that names a user without one (RabbitMQ; a Redis
URL names none), as core/service/settings.py's resolved_broker_url does for the app (this image has no
app code to import). tests/test_compose.py runs this file as compose does."""

import os
import sys
from urllib.parse import quote, urlsplit


def secret(variable: str) -> str:
    path = os.environ.get(variable, "")
    value = open(path, encoding="utf-8").read().strip() if path and os.path.isfile(path) else ""
    return value


def broker_url() -> str:
    url, password = os.environ["BROKER_URL"], secret("BROKER_PASSWORD_FILE")
    parts = urlsplit(url)
    if password and parts.username and parts.password is None:
        user, at, host = parts.netloc.rpartition("@")
        return parts._replace(netloc=f"{user}:{quote(password, safe='')}{at}{host}").geturl()
    return url


def main() -> None:
    password = secret("FLOWER_PASSWORD_FILE")
    if not password:
        sys.exit(f"error: FLOWER_PASSWORD_FILE: {os.environ.get('FLOWER_PASSWORD_FILE', '')} is empty or missing")
    env = {**os.environ, "CELERY_BROKER_URL": broker_url(), "FLOWER_BASIC_AUTH": f"monitor:{password}"}
    os.execvpe("celery", ["celery", "flower", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
