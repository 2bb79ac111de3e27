"""The service's log lines: plain text, or one JSON object per line (LOG_FORMAT=json) for a log
collector, each carrying the context it was logged in (the job a worker runs, the web request).

The context is a contextvar, so it follows the code that logs, not the thread that happens to be
free: a worker enters `log_context(job_id=...)` around a job and the job's own threads copy it
(worker.tasks), the web enters `log_context(request_id=...)` around a request (web.request_ids).
A process's own fields go on every JSON line (`set_process_log_fields(worker=...)`); `announce` is a
line shown once to the person at the terminal. A text line escapes the control characters of what it
logs (one call, one line; a traceback follows indented), so nothing logged can forge a line.
Stdlib logging only: the formatter is twenty lines, and every library's log lines come through it."""

from __future__ import annotations

import json
import logging
import re
import sys
from contextlib import contextmanager
from contextvars import ContextVar, Token
from datetime import datetime, timezone
from typing import Any, Iterator

from core.service.settings import get_settings

_context: ContextVar[dict[str, Any]] = ContextVar("leukemia_log_context")  # each value a new dict, never changed
_process_fields: dict[str, Any] = {}  # every JSON line of this process carries them (a worker's node name)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(context)s%(message)s"
# What could end a text line or make it look like another: C0 and C1 controls (CR, LF, NEL, ESC...) and
# Unicode's line and paragraph separators. A logged value holding them is written escaped (\n, \x1b,
# \u2028), so that one call writes one line and nothing logged can forge a record.
LINE_BREAKING = re.compile("[\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]")
TRACEBACK_INDENT = "  "


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Every line logged inside carries these fields (nested contexts add to the outer one)."""
    token = push_log_context(**fields)
    try:
        yield
    finally:
        pop_log_context(token)


def push_log_context(**fields: Any) -> Token[dict[str, Any]]:
    """log_context's entry, for a framework that enters and leaves in two hooks (a web request)."""
    return _context.set({**_context.get({}), **fields})


def pop_log_context(token: Token[dict[str, Any]]) -> None:
    """Back to the context push_log_context found."""
    _context.reset(token)


def context_fields() -> dict[str, Any]:
    """The fields of the context this line is logged in."""
    return _context.get({})


def set_process_log_fields(**fields: Any) -> None:
    """Fields every JSON line of this process carries from now on, from any thread (a worker's
    `worker`: its node name); the text format leaves them out."""
    _process_fields.clear()
    _process_fields.update(fields)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, the process's and the
    context's fields (and a record's own `log_fields`, which a logging filter may set), and the
    traceback of an exception as one string (a log collector keeps it with its line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_process_fields,
            **context_fields(),
            **(getattr(record, "log_fields", None) or {}),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def escape_line_breaks(text: str) -> str:
    """The text with every character that could break or forge a log line written as its escape."""
    return LINE_BREAKING.sub(lambda found: found.group().encode("unicode_escape").decode("ascii"), text)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: [job_id=7] message`: the context's fields in front of the message, the message
    and the fields on one line whatever they hold (escape_line_breaks). A traceback follows on lines
    indented by two spaces, so that none of them, whatever an exception's message says, starts like a record."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape_line_breaks(record.getMessage())
        record.context = escape_line_breaks("".join(f"[{name}={value}] " for name, value in context_fields().items()))
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        # The traceback formatted here, not taken from record.exc_text, which another handler may have cached.
        if record.exc_info:
            line += "\n" + _indented(self.formatException(record.exc_info))
        elif record.exc_text:
            line += "\n" + _indented(record.exc_text)
        if record.stack_info:
            line += "\n" + _indented(self.formatStack(record.stack_info))
        return line


def _indented(text: str) -> str:
    """Each line of a traceback (an exception's message among them, with any line breaks it holds) indented,
    and what else it holds that could break a line (ESC, NUL, ...) escaped."""
    return "\n".join(TRACEBACK_INDENT + escape_line_breaks(line) for line in text.splitlines())


class ServiceLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The one handler configure_logging puts on the root logger (found again by its class)."""


def configure_logging(level: int | str = logging.INFO, stream: Any = None) -> logging.Handler:
    """The root logger writes to stderr (or stream) in the LOG_FORMAT the settings ask for.

    Replaces the handler an earlier call installed and leaves any other handler alone (a test's
    log capture, a supervisor's file)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ServiceLogHandler)]:
        root.removeHandler(handler)
    handler = ServiceLogHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if get_settings().log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)  # a library's warning is a line of this format too, not raw stderr
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)  # "setup plugin ..." at every start
    return handler


def announce(text: str) -> None:
    """A line for the person at the terminal (a secret generated now, shown once), on stderr outside
    the log handlers (a job's log tail, a file): as it is, or under LOG_FORMAT=json as one JSON object
    like every other line of the process."""
    if get_settings().log_format == "json":
        record = logging.LogRecord("leukemia", logging.WARNING, __file__, 0, text, None, None)
        text = JsonFormatter().format(record)
    print(text, file=sys.stderr, flush=True)
