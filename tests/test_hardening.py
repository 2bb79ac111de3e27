"""Issue 10 (hardening of runs): a run folder belongs to one job, limits come before work,
a diverged or late-cancelled run is not "succeeded", and odd CLI input is one line."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from core import jobs
from core.db import get_sessionmaker
from core.errors import UserInputError
from core.params import TrainParams
from leukemia.cli import main as leukemia_cli

TINY = {"image_size": 32, "batch_size": 8, "device": "cpu", "seed": 0, "num_workers": 0}


def one_line_error(args: list[str]) -> str:
    """Run the CLI; it must exit 2 with exactly one `error: ...` line and no traceback."""
    result = CliRunner().invoke(leukemia_cli, args)
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), (args, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.stderr)
    return lines[0]


# ---------------------------------------------------------------- item 8: divergence, late cancel


def test_a_non_finite_loss_fails_the_run_naming_epoch_and_batch(synth_dir: Path, isolated_home, tmp_path: Path) -> None:
    from core.training import train

    params = TrainParams(data_dir=str(synth_dir), epochs=2, class_weights="1e-300,1e300", **TINY)
    with pytest.raises(UserInputError, match=r"loss is not finite \(nan\) at epoch 1, batch 1") as failure:
        train(params, tmp_path / "run")
    assert "class_weights" in str(failure.value)
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing of the diverged epoch is kept


@pytest.mark.services
def test_a_cancel_that_arrives_during_the_last_batch_ends_the_job_cancelled(service_backend) -> None:
    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(session, "train", {"data_dir": "/data/lab", "epochs": 1}).id
        jobs.claim_job(session, job_id, owner="w", host="h")
    with get_sessionmaker().begin() as session:
        jobs.request_cancel(session, job_id)  # the worker is in its last batch: it polls no more
    with get_sessionmaker().begin() as session:
        assert jobs.finish_job(session, job_id, "w", "succeeded")
    with get_sessionmaker().begin() as session:
        job = jobs.get_job(session, job_id)
        assert job.status == "cancelled", job.status
        assert "cancel arrived after the last batch" in job.error
        with pytest.raises(UserInputError, match=f"job {job_id} is already cancelled; nothing to cancel"):
            jobs.request_cancel(session, job_id)


# ---------------------------------------------------------------- item 10: small ones


@pytest.mark.services
@pytest.mark.parametrize("command", ["job", "cancel", "retry", "download"])
def test_a_job_id_beyond_64_bits_is_one_line(service_backend, command: str) -> None:
    line = one_line_error([command, "99999999999999999999"])
    assert "99999999999999999999" in line


@pytest.mark.services
def test_the_service_refuses_an_id_beyond_64_bits(service_backend) -> None:
    with get_sessionmaker().begin() as session:
        with pytest.raises(UserInputError, match="job 99999999999999999999 not found"):
            jobs.get_job(session, 99999999999999999999)


def test_a_pickle_checkpoint_is_refused_in_exactly_one_line(isolated_home, synth_dir: Path, tmp_path: Path) -> None:
    class Payload:
        def __reduce__(self):  # what a malicious checkpoint does: call a function when unpickled
            return (print, ("this must never run",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"model": Payload()}, protocol=4))  # protocol 4 makes torch warn
    # A real process: pytest would capture the warnings that a user's terminal shows.
    result = subprocess.run(
        [sys.executable, "-m", "leukemia.cli", "evaluate", "--checkpoint", str(evil), "--data", str(synth_dir),
         "--csv", "valid.csv"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2 and "this must never run" not in result.stdout
    assert result.stderr.splitlines() == [f"error: checkpoint {evil}: unreadable (corrupt, truncated, or not a weights-only PyTorch checkpoint)"]
