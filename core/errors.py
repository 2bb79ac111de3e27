"""The one exception type for bad input: its message is a single line for the user."""


class UserInputError(Exception):
    """Bad input from a user (file, row, field, option). The CLI prints it and exits 2;
    a worker records it as the job's one-line error; the API answers 400. Anything
    else that escapes is a bug and keeps its traceback."""

    def __init__(self, message: str) -> None:
        # One line, always: a multi-line reason would break tables and logs.
        super().__init__(" ".join(str(message).split()))
