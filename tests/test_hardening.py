"""Issue 10 (hardening of runs): a run folder belongs to one job, limits come before work,
a diverged or late-cancelled run is not "succeeded", and odd CLI input is one line."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from core.common.errors import StateConflict, UserInputError
from core.engine.params import TrainParams
from core.service import jobs
from core.service.db import get_sessionmaker
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
    from core.engine.training.loop import train

    params = TrainParams(data_dir=str(synth_dir), epochs=2, class_weights="1e-300,1e300", **TINY)
    with pytest.raises(UserInputError, match=r"loss is not finite \(nan\) at epoch 1, batch 1") as failure:
        train(params, tmp_path / "run")
    assert "class_weights" in str(failure.value)
    assert not (tmp_path / "run" / "last.pt").exists()  # nothing of the diverged epoch is kept


def test_a_cancel_that_arrives_during_the_last_batch_ends_the_job_cancelled(service_backend) -> None:
    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(session, jobs.JobRequest(kind="train", params={"data_dir": "/data/lab", "epochs": 1})).id
        jobs.claim_job(session, job_id, owner="w", host="h")
    with get_sessionmaker().begin() as session:
        jobs.request_cancel(session, job_id)  # the worker is in its last batch: it polls no more
    with get_sessionmaker().begin() as session:
        assert jobs.finish_job(session, job_id, "w", "succeeded")
    with get_sessionmaker().begin() as session:
        job = jobs.get_job(session, job_id)
        assert job.status == "cancelled", job.status
        assert "cancel arrived after the last batch" in job.error
        with pytest.raises(StateConflict, match=f"job {job_id} is already cancelled; nothing to cancel"):
            jobs.request_cancel(session, job_id)


# ---------------------------------------------------------------- item 10: small ones


@pytest.mark.parametrize("command", ["job", "cancel", "retry", "download"])
def test_a_job_id_beyond_64_bits_is_one_line(service_backend, command: str) -> None:
    line = one_line_error([command, "99999999999999999999"])
    assert "99999999999999999999" in line


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
        [
            sys.executable,
            "-m",
            "leukemia.cli",
            "evaluate",
            "--checkpoint",
            str(evil),
            "--data",
            str(synth_dir),
            "--csv",
            "valid.csv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "this must never run" not in result.stdout
    assert result.stderr.splitlines() == [
        f"error: checkpoint {evil}: unreadable (corrupt, truncated, or not a weights-only PyTorch checkpoint)"
    ]


# ---------------------------------------------------------------- item 1: a run folder belongs to one job


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_databases(request, tmp_path, settings_override):
    """new_database(): point this process at a new, empty, upgraded database; ARTIFACTS_DIR stays."""
    import secrets

    import psycopg

    from core.service.db import upgrade_database

    settings_override(
        LEUKEMIA_HOME=str(tmp_path / "home"),
        ARTIFACTS_DIR=str(tmp_path / "artifacts"),
        HEARTBEAT_SECONDS="0.5",
        BROKER_URL=None,
        CACHE_DIR=None,
    )
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
        settings_override(DATABASE_URL=url)
        upgrade_database()

    yield new_database
    settings_override.undo()  # the engines let go of the databases before they are dropped
    databases = [name for name in made if not name.startswith(("sqlite", "postgresql"))]
    if databases:  # the sqlite run never connects to PostgreSQL: it is in the quick tier (tests/tiers.py)
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            for name in databases:
                admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def own_queue() -> str:
    """A queue name no other test's queued jobs share (the tests of a backend share its database)."""
    import secrets

    return f"in-process-{secrets.token_hex(3)}"


def run_in_process(kind: str, params: dict) -> int:
    """Commit a job and run it here, as a worker would (claim, run folder, core call, outcome). On a queue of
    its own: a message starts the best queued job of its queue, which on a shared queue may be another."""
    from worker.tasks import run_next_job

    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(session, jobs.JobRequest(kind=kind, params=params, queue=own_queue())).id
    run_next_job(job_id)
    return job_id


def sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_reset_database_never_adopts_an_old_run(fresh_databases, synth_dir: Path, tmp_path: Path) -> None:
    from core.engine.model.checkpoint import load_checkpoint

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
    from core.engine.run_folder.layout import RUN_KEY_FILE
    from core.engine.run_folder.resolver import claim_run_folder

    ours = tmp_path / "ours"
    claim_run_folder(ours, "a" * 32)
    claim_run_folder(ours, "a" * 32)  # our own folder: resumable
    with pytest.raises(UserInputError, match="belongs to another job"):
        claim_run_folder(ours, "b" * 32)
    unstamped = tmp_path / "unstamped"
    unstamped.mkdir()
    (unstamped / "last.pt").write_bytes(b"an old run")
    with pytest.raises(UserInputError, match="holds files but no run key"):
        claim_run_folder(unstamped, "a" * 32)
    assert not (unstamped / RUN_KEY_FILE).exists() and (unstamped / "last.pt").read_bytes() == b"an old run"


# ---------------------------------------------------------------- item 3: limits before work


def test_a_job_over_the_memory_cap_is_refused_at_submit_naming_batch_size(service_backend, settings_override) -> None:
    huge = {"data_dir": "/data/lab", "arch": "resnet152", "image_size": 1024, "batch_size": 4096, "epochs": 1000}
    with get_sessionmaker().begin() as session:
        with pytest.raises(
            UserInputError, match=r"batch_size: resnet152 at 1024 px with batch 4096 needs about 1\d{4}\.\d GiB"
        ) as refused:
            jobs.create_job(session, jobs.JobRequest(kind="train", params=huge))
        assert refused.value.field == "batch_size" and "MAX_JOB_MEMORY_GB" in str(refused.value)
        jobs.create_job(
            session, jobs.JobRequest(kind="train", params={"data_dir": "/data/lab", "image_size": 64, "batch_size": 16})
        )
    try:
        settings_override(MAX_JOB_MEMORY_GB="0.1")  # resnet18's weights and Adam state alone are 0.17 GiB
        with get_sessionmaker().begin() as session, pytest.raises(UserInputError, match="over the limit of 0.1 GiB"):
            jobs.create_job(
                session, jobs.JobRequest(kind="train", params={"data_dir": "/data/lab", "image_size": 64, "batch_size": 16})
            )
    finally:
        settings_override.undo()


def test_the_api_answers_400_naming_batch_size(client, tmp_path: Path) -> None:
    from tests.conftest import WEB_API_TOKEN
    from tests.web_helpers import synthetic_folder

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    folder = synthetic_folder(tmp_path / "data")
    assert client.post("/api/data-folders", headers=auth, json={"path": str(folder), "name": "synth"}).status_code == 201
    params = {"data_dir": str(folder), "arch": "resnet152", "image_size": 1024, "batch_size": 4096}
    response = client.post("/api/jobs", headers=auth, json={"kind": "train", "params": params})
    assert response.status_code == 400 and response.json["field"] == "batch_size", response.json
    grid = client.post("/api/sweeps", headers=auth, json={"kind": "train", "base_params": params, "grid": {"lr": [0.1, 0.01]}})
    assert grid.status_code == 400 and grid.json["field"] == "grid" and "batch_size" in grid.json["error"], grid.json


def test_a_job_too_big_for_the_workers_device_fails_with_one_line(service_backend, synth_dir: Path, settings_override) -> None:
    import torch

    from core.engine.model.limits import GIB, device_memory_bytes

    try:
        settings_override(MAX_JOB_MEMORY_GB="1000000")  # past the submit cap: the worker's device decides
        params = {
            "data_dir": str(synth_dir),
            "arch": "resnet152",
            "image_size": 1024,
            "batch_size": 4096,
            "epochs": 1,
            "device": "cpu",
        }
        job_id = run_in_process("train", params)
    finally:
        settings_override.undo()
    with get_sessionmaker().begin() as session:
        job = jobs.get_job(session, job_id)
    available = device_memory_bytes(torch.device("cpu")) / GIB
    assert job.status == "failed"
    assert job.error.startswith("batch_size: resnet152 at 1024 px with batch 4096 needs about ")
    assert f"more than the {available:.1f} GiB of this worker's device (cpu)" in job.error


def test_a_sweep_over_its_job_or_gpu_hour_cap_is_refused(service_backend, synth_dir: Path, settings_override) -> None:
    base = {"data_dir": str(synth_dir), "image_size": 64, "epochs": 100}
    try:
        settings_override(MAX_SWEEP_JOBS="3")
        with (
            get_sessionmaker().begin() as session,
            pytest.raises(UserInputError, match=r"grid: 4 jobs; at most 3 per sweep \(MAX_SWEEP_JOBS\)"),
        ):
            jobs.create_sweep(
                session, jobs.SweepRequest(kind="train", base_params=base, grid={"lr": [0.1, 0.01], "seed": [0, 1]})
            )
        # 96 training images x 100 epochs at 64 px, 3 x forward FLOPs: resnet152 5.4e13 FLOPs, resnet18 8.5e12,
        # resnet50 1.9e13; at 1 GFLOP/s that is 15.0, 2.4 and 5.3 hours.
        settings_override(MAX_SWEEP_JOBS="1000", GPU_TRAIN_TFLOPS="0.001", MAX_SWEEP_GPU_HOURS="10")
        with get_sessionmaker().begin() as session:
            jobs.create_sweep(
                session, jobs.SweepRequest(kind="train", base_params=base, grid={"arch": ["resnet18", "resnet50"]})
            )  # 7.7 GPU-hours
            with pytest.raises(
                UserInputError, match=r"grid: about 30\.1 GPU-hours in all .* over the limit of 10 \(MAX_SWEEP_GPU_HOURS\)"
            ) as refused:
                jobs.create_sweep(
                    session, jobs.SweepRequest(kind="train", base_params=base, grid={"arch": ["resnet152"], "seed": [0, 1]})
                )
            assert refused.value.field == "grid"
    finally:
        settings_override.undo()


# --- a full disk: for real on a small tmpfs (needs root), and by the MIN_FREE_DISK_MB threshold anywhere


@pytest.fixture()
def small_disk(tmp_path):
    """mount(size) → a folder on a tmpfs of that many bytes (skipped where this process cannot mount)."""
    mounted = []

    def mount(size: int) -> Path:
        point = tmp_path / f"disk-{len(mounted)}"
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)], capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the MIN_FREE_DISK_MB test covers the check")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=True)


def test_a_disk_that_fills_during_a_checkpoint_write_is_one_line_and_keeps_the_previous_file(small_disk, isolated_home) -> None:
    import shutil

    import torch

    from core.common.errors import NoSpaceLeft
    from core.engine.model.checkpoint import save_checkpoint

    disk = small_disk(2 * 2**20)
    save_checkpoint({"w": torch.ones(1000)}, disk / "last.pt")
    # Free space passes the check (the tensor's bytes) but not the file's own overhead: ENOSPC mid-write.
    free = shutil.disk_usage(disk).free
    with pytest.raises(NoSpaceLeft, match=f"^no space left on device: {disk / 'last.pt'}$"):
        save_checkpoint({"w": torch.zeros((free - 200) // 4)}, disk / "last.pt")
    assert torch.equal(torch.load(disk / "last.pt", weights_only=True)["w"], torch.ones(1000))
    assert [p.name for p in disk.iterdir()] == ["last.pt"]  # no temporary file left behind


def test_a_full_disk_is_one_line_in_the_cli_and_fails_a_job(small_disk, synth_dir: Path, isolated_home, monkeypatch) -> None:
    disk = small_disk(16 * 2**20)  # resnet18's checkpoint with Adam state is about 128 MiB
    line = one_line_error(
        [
            "train",
            "--data",
            str(synth_dir),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(disk / "run"),
        ]
    )
    assert line.startswith(f"error: no space left on device: {disk / 'run' / 'last.pt'} (")


def test_a_full_artifacts_disk_fails_the_job_with_one_line(
    service_backend, small_disk, synth_dir: Path, settings_override
) -> None:
    from core.service.settings import get_settings

    settings_override(ARTIFACTS_DIR=str(small_disk(16 * 2**20)))
    try:
        job_id = run_in_process("train", {"data_dir": str(synth_dir), "epochs": 1, **TINY})
        with get_sessionmaker().begin() as session:
            job = jobs.get_job(session, job_id)
        assert job.status == "failed" and job.error.startswith("no space left on device: "), job.error
        assert job.error.split(": ", 1)[1].startswith(str(get_settings().resolved_artifacts_dir / "jobs"))
    finally:
        settings_override.undo()


def test_the_free_space_threshold_refuses_a_checkpoint_write(
    synth_dir: Path, isolated_home, settings_override, tmp_path: Path
) -> None:
    settings_override(MIN_FREE_DISK_MB=str(10**12))  # more than any disk here has free
    line = one_line_error(
        [
            "train",
            "--data",
            str(synth_dir),
            "--epochs",
            "1",
            "--image-size",
            "32",
            "--batch-size",
            "8",
            "--device",
            "cpu",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert line.startswith(f"error: no space left on device: {tmp_path / 'run' / 'last.pt'} (")


# ---------------------------------------------------------------- item 10: a symlink out of DATA_ROOTS


def linked_out_folder(root: Path, outside: Path) -> tuple[Path, Path]:
    """A lab folder under root whose first training image is a symlink to a file outside root."""
    import shutil

    from core.engine.data.synth import write_synthetic_dataset

    folder = root / "lab"
    write_synthetic_dataset(folder, train=16, valid=8, test=4, image_size=32, seed=0)
    image = folder / "new_dataset" / "train" / "0.bmp"  # the first training row of train.csv
    outside.mkdir(parents=True, exist_ok=True)
    secret = outside / "secret.bmp"
    shutil.move(image, secret)
    image.symlink_to(secret)
    return folder, image


def test_check_notes_an_image_linked_out_of_the_data_roots(tmp_path: Path, settings_override) -> None:
    from core.engine.data.check import check_folder

    folder, link = linked_out_folder(tmp_path / "data", tmp_path / "elsewhere")
    settings_override(DATA_ROOTS=str(tmp_path / "data"))
    report = check_folder(folder)
    assert any(
        f"{link} is a symlink to {tmp_path / 'elsewhere' / 'secret.bmp'}, outside DATA_ROOTS" in w for w in report.warnings
    ), report.warnings
    result = CliRunner().invoke(leukemia_cli, ["check", str(folder)])
    assert "outside DATA_ROOTS" in result.output, result.output


def test_a_web_job_refuses_an_image_linked_out_of_the_data_roots(service_backend, tmp_path: Path, settings_override) -> None:
    from worker.tasks import run_next_job

    folder, link = linked_out_folder(tmp_path / "data", tmp_path / "elsewhere")
    settings_override(DATA_ROOTS=str(tmp_path / "data"))
    try:
        with get_sessionmaker().begin() as session:
            web_id = jobs.create_job(
                session,
                jobs.JobRequest(kind="train", params={"data_dir": str(folder), "epochs": 1, **TINY}, queue=own_queue()),
                origin=jobs.Origin.FORM,
            ).id
        run_next_job(web_id)
        with get_sessionmaker().begin() as session:
            job = jobs.get_job(session, web_id)
        assert job.status == "failed"
        assert job.error == (
            f"data_dir: {link} is a symlink to {tmp_path / 'elsewhere' / 'secret.bmp'}, outside "
            "DATA_ROOTS; jobs submitted from the web read only files inside the data roots"
        )
        cli_id = run_in_process("train", {"data_dir": str(folder), "epochs": 1, **TINY})  # the CLI user owns the machine
        with get_sessionmaker().begin() as session:
            assert jobs.get_job(session, cli_id).status == "succeeded"
    finally:
        settings_override.undo()


def test_registration_reads_no_file_through_a_link_out_of_the_data_roots(client, tmp_path: Path) -> None:
    """A folder whose image leads out of DATA_ROOTS, directly or inside a folder that a link within the roots
    leads to, is refused before the check decodes anything: one line naming the file, field path."""
    import shutil

    from tests.conftest import WEB_API_TOKEN

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    data, outside = tmp_path / "data", tmp_path / "elsewhere"
    folder, link = linked_out_folder(data, outside)
    response = client.post("/api/data-folders", headers=auth, json={"path": str(folder), "name": "lab"})
    assert (response.status_code, response.json) == (
        400,
        {
            "field": "path",
            "error": (
                f"path: {link} is a symlink to {outside / 'secret.bmp'}, outside DATA_ROOTS; jobs submitted from the web "
                "read only files inside the data roots"
            ),
        },
    )

    # Through a folder inside the roots: lab2/new_dataset -> data/shared, whose first image links out.
    lab2 = data / "lab2"
    shutil.copytree(folder, lab2, symlinks=True, ignore=shutil.ignore_patterns("new_dataset"))
    shutil.move(folder / "new_dataset", data / "shared")
    (lab2 / "new_dataset").symlink_to(data / "shared")
    response = client.post("/api/data-folders", headers=auth, json={"path": str(lab2), "name": "lab2"})
    assert response.status_code == 400 and response.json["error"] == (
        f"path: {lab2 / 'new_dataset' / 'train' / '0.bmp'} is a symlink to {outside / 'secret.bmp'}, outside "
        "DATA_ROOTS; jobs submitted from the web read only files inside the data roots"
    ), response.json
    with get_sessionmaker().begin() as session:
        from core.service.records import DataFolder

        assert session.scalars(select(DataFolder)).all() == []


def test_every_web_submission_is_recorded_as_from_the_web(client, tmp_path: Path) -> None:
    from core.service.records import Job
    from tests.conftest import WEB_API_TOKEN
    from tests.web_helpers import add_patients, synthetic_folder

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    folder = str(synthetic_folder(tmp_path / "data"))
    add_patients(Path(folder), {0: ["H1", "H2"], 1: ["A1", "A2"]})  # a cross-validation groups its folds by subject
    assert client.post("/api/data-folders", headers=auth, json={"path": folder, "name": "synth"}).status_code == 201
    params = {"data_dir": folder, "epochs": 1, "image_size": 32}
    submits = [
        ("/api/jobs", {"kind": "train", "params": params}),
        ("/api/sweeps", {"kind": "train", "base_params": params, "grid": {"lr": [0.1, 0.01]}}),
        ("/api/cross-validations", {"params": params, "folds": 2}),
    ]
    for url, body in submits:
        response = client.post(url, headers=auth, json=body)
        assert response.status_code == 201, (url, response.json)
    with get_sessionmaker().begin() as session:
        origins = session.scalars(select(Job.origin)).all()
    assert len(origins) == 5 and set(origins) == {"web"}, origins


# ---------------------------------------------------------------- issue 23: what an attack run found


OUT_OF_FOLDER = ("../../../etc/x.csv", "/etc/x.csv", "sub/../../x.csv")


def out_of_folder(field: str, value: str) -> str:
    return f"{field}: {value!r} leads outside the data folder; name a CSV file inside it (a relative path without ..)"


@pytest.mark.parametrize("field", ["split", "valid_split"])
def test_a_split_leading_out_of_the_data_folder_is_refused_at_submit(client, folder_path, field) -> None:
    """Refused when submitted, as one line naming the field (the worker refused it only when the job ran)."""
    from tests.conftest import WEB_API_TOKEN

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    for value in OUT_OF_FOLDER:
        response = client.post(
            "/api/jobs", headers=auth, json={"kind": "train", "params": {"data_dir": folder_path, field: value}}
        )
        assert (response.status_code, response.json) == (400, {"field": field, "error": out_of_folder(field, value)})
        line = one_line_error(["submit", "train", "--data", folder_path, f"--{field.replace('_', '-')}", value])
        assert line == f"error: {out_of_folder(field, value)}"
    with get_sessionmaker().begin() as session:
        assert jobs.list_jobs(session)[1] == 0
    assert TrainParams(data_dir="/d", split="sub/folds.v2/x..csv").split == "sub/folds.v2/x..csv"  # inside the folder


def test_a_csv_leading_out_of_the_data_folder_is_refused_at_submit(client, folder_path) -> None:
    """The CLI may name any file, but a CSV of the data folder is in it: refused when submitted, naming csv."""
    from tests.web_helpers import finished_train_job

    parent = finished_train_job(folder_path)
    for kind in ("evaluate", "predict"):
        for value in OUT_OF_FOLDER:
            line = one_line_error(["submit", kind, "--data", folder_path, "--csv", value, "--parent", str(parent)])
            assert line == f"error: {out_of_folder('csv', value)}"
    with get_sessionmaker().begin() as session:
        assert jobs.list_jobs(session)[1] == 1  # the parent alone


def chunked_post(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """POST body with Transfer-Encoding: chunked (no Content-Length), 64 KiB a chunk; the status and JSON answer."""
    import http.client
    import json
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        chunks = (body[start : start + 65536] for start in range(0, len(body), 65536))
        connection.request(
            "POST", path, body=chunks, headers={**headers, "Content-Type": "application/json"}, encode_chunked=True
        )
        answer = connection.getresponse()
        return answer.status, json.loads(answer.read() or b"{}")
    finally:
        connection.close()


def test_an_oversized_chunked_body_is_413_as_a_sized_one_is(app, folder_path) -> None:
    """A body sent without Content-Length (chunked) over MAX_CONTENT_LENGTH is a 413, not a 400 for the JSON that
    the server's limit cut short; one under it is read whole. Against a real HTTP server in a thread."""
    import json
    import threading

    from werkzeug.serving import make_server

    from tests.conftest import WEB_API_TOKEN

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url, auth = f"http://127.0.0.1:{server.server_port}", {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    try:
        limit = app.config["MAX_CONTENT_LENGTH"]
        padding = {"description": "x" * (limit + 100_000)}  # about 1.1 MB of JSON
        big = json.dumps({"kind": "train", "params": {"data_dir": folder_path}, "options": padding}).encode()
        status, answer = chunked_post(url, "/api/jobs", big, auth)
        assert (status, set(answer)) == (413, {"error"}), (status, answer)
        small = json.dumps(
            {"kind": "train", "params": {"data_dir": folder_path, "epochs": 1}, "options": {"description": "y" * (limit - 1000)}}
        ).encode()
        status, answer = chunked_post(url, "/api/jobs", small, auth)
        assert status == 400 and answer["field"] == "options", answer  # read whole: notes over 10 000 characters
        status, answer = chunked_post(
            url,
            "/api/jobs",
            json.dumps({"kind": "train", "params": {"data_dir": folder_path, "epochs": 1, "image_size": 32}}).encode(),
            auth,
        )
        assert status == 201, answer
    finally:
        server.shutdown()
        thread.join()


def test_a_repeated_cancel_of_a_running_job_is_audited_once(client, folder_path) -> None:
    """The second cancel of a running job changes nothing (its worker was already asked to stop): it answers as
    the first did and writes no second audit row; a queued job's second cancel is refused (409) as before."""
    from core.service.records import AuditEntry
    from tests.conftest import WEB_API_TOKEN
    from tests.web_helpers import queued_job

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    running = queued_job(folder_path)
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, running, owner="w", host="h")
    answers = [client.post(f"/api/jobs/{running}/cancel", headers=auth) for _ in range(3)]
    assert [(a.status_code, a.json["status"], a.json["cancel_requested"]) for a in answers] == [(200, "running", True)] * 3
    assert CliRunner().invoke(leukemia_cli, ["cancel", str(running)]).exit_code == 0
    queued = queued_job(folder_path)
    assert client.post(f"/api/jobs/{queued}/cancel", headers=auth).status_code == 200
    assert client.post(f"/api/jobs/{queued}/cancel", headers=auth).status_code == 409
    with get_sessionmaker().begin() as session:
        audited = session.scalars(select(AuditEntry.target_id).where(AuditEntry.action == "job.cancel")).all()
    assert sorted(audited) == sorted([str(running), str(queued)])


def test_a_thumbnail_is_never_read_through_a_link_out_of_the_data_roots(client, folder_path, tmp_path: Path) -> None:
    """An image of a registered folder replaced by a symlink to a file outside DATA_ROOTS (after registration,
    which would have refused it) is not read for a thumbnail: the same containment check as registration's, a 404
    that names no path outside. An image inside the roots, through a link or not, still gives its thumbnail."""
    import shutil

    from tests.conftest import WEB_API_TOKEN
    from tests.test_recorded_files import evaluate_job_with

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    folder, outside = Path(folder_path), tmp_path / "elsewhere"
    outside.mkdir()
    secret = outside / "secret.bmp"
    shutil.move(folder / "new_dataset" / "train" / "0.bmp", secret)
    (folder / "new_dataset" / "train" / "0.bmp").symlink_to(secret)
    shutil.move(folder / "new_dataset" / "train" / "1.bmp", folder / "kept.bmp")
    (folder / "new_dataset" / "train" / "1.bmp").symlink_to(folder / "kept.bmp")  # a link that stays inside
    job_id = evaluate_job_with(
        folder_path, {"per_image.csv": "ID\nnew_dataset/train/0.bmp\nnew_dataset/train/1.bmp\nnew_dataset/train/2.bmp\n"}
    )
    refused = client.get(f"/api/jobs/{job_id}/images/1/thumbnail", headers=auth)
    assert refused.status_code == 404 and refused.is_json, refused.status_code
    assert refused.json["error"] == f"image 1 of job {job_id} is not a file of its data folder under the data roots"
    for index in (2, 3):
        shown = client.get(f"/api/jobs/{job_id}/images/{index}/thumbnail", headers=auth)
        assert shown.status_code == 200 and shown.data.startswith(b"\x89PNG"), index


@pytest.mark.parametrize("app", ["postgresql"], indirect=True)
def test_duplicate_writes_in_parallel_answer_409_or_change_nothing(app, folder_path) -> None:
    """The same user name 20 times at once, the same tag on a job or a sweep 5 times at once, the same data folder
    registered 5 times at once, each request in a transaction of its own on PostgreSQL (SQLite writes one at a
    time): a name is added once and the rest are 409, a tag is added once and the rest change nothing, never a
    500 (issue 23: 14 × 500 and 5 × 500)."""
    import threading

    from core.service.records import AuditEntry, DataFolder, User
    from tests.conftest import WEB_API_TOKEN

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}

    def at_once(count: int, method: str, url: str, body: dict) -> list[int]:
        start, statuses = threading.Barrier(count), [0] * count

        def send(i: int) -> None:
            client = app.test_client()
            start.wait(timeout=30)
            statuses[i] = getattr(client, method)(url, json=body, headers=auth).status_code

        threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        return sorted(statuses)

    client = app.test_client()
    job = client.post("/api/jobs", headers=auth, json={"kind": "train", "params": {"data_dir": folder_path}}).json["id"]
    sweep = client.post(
        "/api/sweeps", headers=auth, json={"kind": "train", "base_params": {"data_dir": folder_path}, "grid": {"lr": [0.1, 0.01]}}
    ).json["id"]
    answered = {
        "users": at_once(20, "post", "/api/users", {"username": "dup", "role": "member", "password": "correct-horse-9"}),
        "job tags": at_once(5, "patch", f"/api/jobs/{job}", {"add_tags": ["x"]}),
        "sweep tags": at_once(5, "patch", f"/api/sweeps/{sweep}", {"add_tags": ["x"]}),
        "data folders": at_once(5, "post", "/api/data-folders", {"path": folder_path, "name": "twice"}),
    }
    registered = answered.pop("data folders")
    assert answered == {"users": [201] + [409] * 19, "job tags": [200] * 5, "sweep tags": [200] * 5}
    assert 201 in registered and set(registered) <= {201, 409}, registered
    assert client.get(f"/api/jobs/{job}", headers=auth).json["tags"] == ["x"]
    assert client.get(f"/api/sweeps/{sweep}", headers=auth).json["tags"] == ["x"]
    with get_sessionmaker().begin() as session:
        assert session.scalars(select(User.username).where(User.username == "dup")).all() == ["dup"]
        assert len(session.scalars(select(DataFolder).where(DataFolder.name == "twice")).all()) == 1
        edits = session.scalars(select(AuditEntry.action).where(AuditEntry.action.in_(["job.edit", "sweep.edit"]))).all()
    assert sorted(edits) == ["job.edit", "sweep.edit"]  # one change each; the others changed nothing


def test_a_deleted_jobs_id_and_a_removed_webhooks_delivery_ids_are_never_given_again(client, folder_path) -> None:
    """On the embedded SQLite database: bob's deleted job 2 is not alice's next job, and a webhook added after one
    was removed with its deliveries sends new delivery ids (X-Leukemia-Delivery), so the audit log never names two
    jobs by one id and a receiver dropping repeats loses nothing (issue 23)."""
    from core.service import webhooks
    from core.service.access import cli_actor
    from core.service.records import AuditEntry
    from core.service.settings import get_settings
    from tests.conftest import WEB_API_TOKEN
    from tests.web_helpers import finished_train_job

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    kept, highest = finished_train_job(folder_path), finished_train_job(folder_path)
    assert client.delete(f"/api/jobs/{highest}", headers=auth).status_code == 200
    submitted = client.post("/api/jobs", headers=auth, json={"kind": "train", "params": {"data_dir": folder_path}})
    assert submitted.json["id"] not in (kept, highest) and submitted.json["id"] > highest
    with get_sessionmaker().begin() as session:
        hook = webhooks.add(session, cli_actor(), "https://hooks.example.org/a", ["job.failed"], settings=get_settings()).id
        first = webhooks.send_test(session, cli_actor(), hook).id
    with get_sessionmaker().begin() as session:
        webhooks.remove(session, cli_actor(), hook)
    with get_sessionmaker().begin() as session:
        second = webhooks.send_test(
            session,
            cli_actor(),
            webhooks.add(session, cli_actor(), "https://hooks.example.org/b", ["job.failed"], settings=get_settings()).id,
        ).id
        targets = session.execute(select(AuditEntry.action, AuditEntry.target_id).where(AuditEntry.target_type == "job")).all()
    assert second > first
    assert ("job.delete", str(highest)) in targets and ("job.submit", str(submitted.json["id"])) in targets
