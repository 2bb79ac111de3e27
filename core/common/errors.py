"""The errors a person sees as one line, never as a traceback.

`UserInputError` is bad input and names the field it is about as data (`error.field`), so the
API and the forms place it without reading the message. `BrokerUnavailable` is not the user's
fault: the job row was committed but its message could not be sent (the API answers 503).
`StateConflict` is a well-formed request that the current state refuses (cancel a finished job,
delete a queued one, disable the last admin, a name taken; the API answers 409).
`NotFound` is an id that names nothing (404). `DatabaseUnavailable`: the database cannot serve (gone,
dropped, unreachable; 503). `NoSpaceLeft`: "no space left on device: <path>".

Each is a `OneLineError`: the CLI prints its line and exits 2, a worker fails the job with it."""

from __future__ import annotations


class OneLineError(Exception):
    """An error for a person: its message is a single line (a multi-line reason would break tables
    and logs). The CLI prints it and exits 2; a worker records it as the job's error."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class UserInputError(OneLineError):
    """Bad input from a user (file, row, field, option); the API answers 400 with `field`.

    `field` is the request or form field the error is about (`epochs`, `parent_id`, `grid`), or
    None when it is about a file, a row or the request as a whole. Anything else that escapes is
    a bug and keeps its traceback."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class NotFound(UserInputError):
    """An id that names nothing: a job, sweep, cross-validation, user, token, webhook, delivery, artifact
    or image that does not exist (or no longer does). The one "not found": the API and the pages answer
    404, the CLI prints the line and exits 2. A parent named in a request body stays a UserInputError
    (400 naming parent_id): there the request is what is wrong, not its address."""


class StateConflict(OneLineError):
    """A well-formed request that the current state of what it acts on refuses: cancelling a finished job,
    retrying one that has not failed, deleting a queued job, disabling the last admin, a name already taken.
    Not bad input (the same request may succeed later, or did earlier): the API answers 409 with `field`
    when there is one, the CLI prints the line and exits 2."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class BrokerUnavailable(OneLineError):
    """A committed job's id could not be sent to the broker; the job is marked failed (retry re-sends it)."""

    def __init__(self, message: str, *, job_id: int) -> None:
        super().__init__(message)
        self.job_id = job_id


class DatabaseUnavailable(OneLineError):
    """The database cannot serve: unreachable, dropped, its SQLite file deleted or replaced while the
    service ran, or without tables. Nothing is read or written; health fails, the API answers 503."""


class NoSpaceLeft(OneLineError):
    """A write found (or would leave) its disk full: "no space left on device: <path>". The CLI exits 2,
    a job fails with this line; the previous checkpoint is kept (checkpoints are written atomically)."""

    def __init__(self, path: object, detail: str | None = None) -> None:
        super().__init__(f"no space left on device: {path}" + (f" ({detail})" if detail else ""))
        self.path = path


class StorageError(OneLineError):
    """A file on the artifacts volume could not be changed (permissions, an immutable or read-only
    file): not the user's fault, and nothing was recorded as done. The API answers 503, the CLI exits 2."""
