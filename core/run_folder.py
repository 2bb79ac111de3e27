"""Which folder a job's run lives in, and the proof that it is that job's.

Job ids start at 1 again when the database is reset (a new SQLite file, a fresh PostgreSQL)
while ARTIFACTS_DIR stays. A run folder is therefore named by the job id *and* the row's random
`run_key` (`jobs/<id>-<run_key>`), so a reused id gets a fresh folder by construction, and the
key is stamped inside it (`.run_key`) when the run starts. Before anything resumes or writes a
run, `claim_run_dir` checks the stamp: a folder stamped by another job, or one holding files but
no stamp, is never resumed or overwritten; the job fails with one line instead."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from core.errors import UserInputError
from core.settings import get_settings

RUN_KEY_FILE = ".run_key"


def job_run_dir(job_id: int, run_key: str) -> Path:
    """The run folder of a job row: ARTIFACTS_DIR/jobs/<id>-<run_key>."""
    return get_settings().resolved_artifacts_dir / "jobs" / f"{job_id}-{run_key}"


def claim_run_dir(run_dir: Path, run_key: str) -> None:
    """Make run_dir this job's: stamp a new or empty folder with run_key; refuse any other folder."""
    stamp = run_dir / RUN_KEY_FILE
    if stamp.is_file():
        found = stamp.read_text().strip()
        if found != run_key:
            raise UserInputError(
                f"run folder {run_dir} belongs to another job (run key {found[:8]}…, this job's {run_key[:8]}…); "
                "it is left untouched"
            )
        return
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserInputError(f"run folder {run_dir} holds files but no run key, so it is not this job's; it is left untouched")
    run_dir.mkdir(parents=True, exist_ok=True)
    _create_once(stamp, run_key + "\n")


def _create_once(path: Path, text: str) -> None:
    """Write a whole file that must not exist yet: a temporary file linked into place (two claimants
    racing both see one complete stamp, and the loser's check above then compares keys)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    temporary.write_text(text)
    try:
        os.link(temporary, path)
    except FileExistsError:
        pass
    finally:
        temporary.unlink()
    found = path.read_text().strip()
    if found != text.strip():
        raise UserInputError(f"run folder {path.parent} was claimed by another job (run key {found[:8]}…) at the same moment")
