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


# ---------------------------------------------------------------- item 1: a run folder belongs to one job


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_databases(request, tmp_path, monkeypatch):
    """new_database(): point this process at a new, empty, upgraded database; ARTIFACTS_DIR stays."""
    import secrets

    import psycopg

    from core.db import reset_engines, upgrade_database
    from core.settings import get_settings

    monkeypatch.setenv("LEUKEMIA_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ARTIFACTS_DIR", str(tmp_path / "artifacts"))
    monkeypatch.setenv("HEARTBEAT_SECONDS", "0.5")
    for key in ("BROKER_URL", "CACHE_DIR"):
        monkeypatch.delenv(key, raising=False)
    made: list[str] = []

    def new_database() -> None:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path / f'leukemia-{len(made)}.db'}"
        else:
            name = f"leukemia_test_{secrets.token_hex(4)}"
            with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
                admin.execute(f"CREATE DATABASE {name}")
            made.append(name)
            url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        made.append(url)
        monkeypatch.setenv("DATABASE_URL", url)
        get_settings.cache_clear()
        reset_engines()
        upgrade_database()

    yield new_database
    reset_engines()
    get_settings.cache_clear()
    with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
        for name in made:
            if not name.startswith(("sqlite", "postgresql")):
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def run_in_process(kind: str, params: dict) -> int:
    """Commit a job and run it here, as a worker would (claim, run folder, core call, outcome)."""
    from worker.tasks import run_job

    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(session, kind, params).id
    run_job(job_id)
    return job_id


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.services
def test_a_reset_database_never_adopts_an_old_run(fresh_databases, synth_dir: Path, tmp_path: Path) -> None:
    from core.checkpoint import load_checkpoint

    fresh_databases()
    old_id = run_in_process("train", {"data_dir": str(synth_dir), "epochs": 1, "lr": 0.001, **TINY})
    (old_dir,) = (tmp_path / "artifacts" / "jobs").iterdir()
    old_last = sha256(old_dir / "last.pt")

    fresh_databases()  # the database is reset; the artifacts folder is kept
    new_id = run_in_process("train", {"data_dir": str(synth_dir), "epochs": 2, "lr": 0.01, **TINY})
    assert new_id == old_id == 1
    with get_sessionmaker().begin() as session:
        job = jobs.get_job(session, new_id)
        assert (job.status, job.error) == ("succeeded", None)
        assert [m.epoch for m in jobs.epoch_metrics(session, new_id)] == [1, 2]  # trained, not adopted
        recorded = {a.name: a.path for a in jobs.artifacts(session, new_id)}
    new_last = tmp_path / "artifacts" / recorded["last.pt"]
    assert new_last.parent != old_dir
    checkpoint = load_checkpoint(new_last)
    assert checkpoint["epoch"] == 2 and checkpoint["params"]["lr"] == 0.01
    assert sha256(old_dir / "last.pt") == old_last  # the old run is untouched


def test_a_run_folder_of_another_job_is_never_taken(tmp_path: Path) -> None:
    from core.run_folder import RUN_KEY_FILE, claim_run_dir

    ours = tmp_path / "ours"
    claim_run_dir(ours, "a" * 32)
    claim_run_dir(ours, "a" * 32)  # our own folder: resumable
    with pytest.raises(UserInputError, match="belongs to another job"):
        claim_run_dir(ours, "b" * 32)
    unstamped = tmp_path / "unstamped"
    unstamped.mkdir()
    (unstamped / "last.pt").write_bytes(b"an old run")
    with pytest.raises(UserInputError, match="holds files but no run key"):
        claim_run_dir(unstamped, "a" * 32)
    assert not (unstamped / RUN_KEY_FILE).exists() and (unstamped / "last.pt").read_bytes() == b"an old run"
