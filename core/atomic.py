"""The one way this service writes a file that someone may be reading: into a private temporary
file beside it, then one rename. A reader (the dashboard, a download, a resumed run) sees the old
file or the whole new one, and a crash leaves no half file behind."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterator


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` for the block to fill; it replaces `path` when the block
    ends without error and is removed when it fails. For writers that want a file name
    (numpy's memmap, several processes)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def open_atomic(path: Path, mode: str = "w", *, newline: str | None = None) -> Iterator[IO]:
    """open() for writing whole files atomically ("w" text, "wb" binary); flushed to disk before the rename.

    A path that cannot be written is an OSError naming `path` (not the temporary file), which
    the CLI turns into `cannot use PATH`."""
    path = Path(path)
    with atomic_path(path) as temporary:
        try:
            file = open(temporary, mode, newline=newline)  # noqa: SIM115 - closed by the with below
        except OSError as error:
            raise OSError(error.errno, error.strerror, str(path)) from None
        with file:
            yield file
            file.flush()
            os.fsync(file.fileno())


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step."""
    with open_atomic(path) as file:
        file.write(text)
