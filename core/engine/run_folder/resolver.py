"""Which run folder and which checkpoint: the one resolver every caller uses (the CLI with a path,
a finetune's source, a job's parent, a cross-validation's folds, the default download), and the
proof that a job's run folder is that job's. No torch here, so the web can use it.
`resolve_checkpoint(file or run folder, choice)` and `checkpoint_names` answer "which checkpoint";
core.service.jobs.job_checkpoint(session, job_id, choice) resolves a parent's or a fold's through it.

A run folder holds last.pt (the last completed epoch) and best.pt (the best by validation
accuracy; every epoch without a validation split), plus the metrics files and plots.

Job ids start at 1 again when the database is reset (a new SQLite file, a fresh PostgreSQL)
while ARTIFACTS_DIR stays. A job's run folder is therefore named by the job id *and* the row's
random `run_key` (`jobs/<id>-<run_key>`), so a reused id gets a fresh folder by construction, and
the key is stamped inside it (`.run_key`) when the run starts. Before anything resumes or writes a
run, `claim_run_folder` checks the stamp: a folder stamped by another job, or one holding files but
no stamp, is never resumed or overwritten; the job fails with one line instead. The one exception
is a job run before run keys (legacy): its folder `jobs/<id>` is known to be its own from where its
files were recorded, so it is stamped when that job runs again (a retry)."""

from __future__ import annotations

from pathlib import Path

from core.common.atomic import create_once
from core.common.errors import UserInputError
from core.engine.run_folder.layout import RUN_KEY_FILE

CHOICES = ("best", "last")


def claim_run_folder(run_folder: Path, run_key: str, *, legacy: bool = False) -> None:
    """Make run_folder this job's: stamp a new or empty folder with run_key (or a legacy job's own
    unstamped folder); refuse any other folder."""
    stamp = run_folder / RUN_KEY_FILE
    if stamp.is_file():
        found = stamp.read_text().strip()
        if found != run_key:
            raise UserInputError(
                f"run folder {run_folder} belongs to another job (run key {found[:8]}…, this job's {run_key[:8]}…); "
                "it is left untouched"
            )
        return
    if run_folder.is_dir() and any(run_folder.iterdir()) and not legacy:
        raise UserInputError(f"run folder {run_folder} holds files but no run key, so it is not this job's; it is left untouched")
    run_folder.mkdir(parents=True, exist_ok=True)
    create_once(stamp, run_key + "\n")  # two claimants racing both read one complete stamp
    found = stamp.read_text().strip()
    if found != run_key:
        raise UserInputError(f"run folder {run_folder} was claimed by another job (run key {found[:8]}…) at the same moment")


def checkpoint_names(choice: str = "best") -> list[str]:
    """A run folder's checkpoint files in order of preference: the chosen one, then the other."""
    if choice not in CHOICES:
        raise UserInputError(f"checkpoint_choice: {choice!r} is not one of {', '.join(CHOICES)}", field="checkpoint_choice")
    return [f"{name}.pt" for name in sorted(CHOICES, key=lambda name: name != choice)]


def resolve_checkpoint(path_or_run_folder: Path | str, choice: str = "best") -> Path:
    """The one answer to "which checkpoint": a .pt file itself, or a run folder's best.pt / last.pt
    as chosen (a choice that is missing is an error, never silently the other file)."""
    chosen = checkpoint_names(choice)[0]
    path = Path(path_or_run_folder)
    if path.is_dir():
        if not (path / chosen).is_file():
            raise UserInputError(f"checkpoint: run folder {path} has no {chosen}", field="checkpoint")
        return path / chosen
    if not path.is_file():
        raise UserInputError(f"checkpoint: {path}: no such file or run folder", field="checkpoint")
    return path
