"""The one way this service writes a file that someone may be reading: into a private temporary
file beside it, then one rename. A reader (the dashboard, a download, a resumed run) sees the old
file or the whole new one, and a crash leaves no half file behind. `create_once` is the same
writer for a file that must be made exactly once (a generated secret, a run folder's stamp):
linked into place instead of renamed, so the first of several racing writers wins.

`open_atomic` and `write_text_atomic` write text or bytes, `atomic_path` hands a memmap its temporary
path. Checkpoints, metrics files, plots, evaluation and prediction outputs, explanation zips, CSV splits,
cross-validation files and the image cache are all written through here."""

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


def create_once(path: Path, text: str, *, mode: int = 0o666) -> bool:
    """Create `path` whole with `text` unless it exists; True when this call made it. Racing callers
    all end up reading one complete file (the first one linked). `mode` before the umask (0o600 for secrets)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        os.link(temporary, path)  # fails if another writer made it first: theirs wins
        return True
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
