"""gunicorn's own lines (its start, its workers booting and exiting, its shutdown) in LOG_FORMAT, like
the app's: `gunicorn --logger-class web.gunicorn_logging.ServiceLogger ... web.wsgi:app` (compose's
web command). gunicorn formats them with handlers of its own, set up before the app is loaded; under
LOG_FORMAT=json each of them gets core.service.logs' JSON formatter, so every line on the web's
stdout and stderr is one JSON object. The text format keeps gunicorn's."""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from core.service.logs import JsonFormatter
from core.service.settings import get_settings


class ServiceLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        if get_settings().log_format == "json":
            for log in (self.error_log, self.access_log):
                for handler in log.handlers:
                    handler.setFormatter(JsonFormatter())
