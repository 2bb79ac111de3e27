"""Early stopping: patience on a validation metric that plateaus by construction (each validation
image is there twice, once per label, so any model scores exactly 0.5 accuracy), best.pt from the
best epoch by that metric, the counter kept across a resume; the one-line field errors."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.common.errors import UserInputError
from core.engine.model.checkpoint import load_checkpoint
from core.engine.params import parse_params
from core.engine.progress import EpochRecord, RunStopped, TrainingObserver
from core.engine.training.loop import train
from core.engine.training.run_state import RunLog

SIZE = 32


def write_plateau_folder(folder: Path) -> Path:
    """A small synthetic folder whose valid.csv holds every validation image twice, as two files with
    opposite labels: a model gives both copies the same class, so exactly one of each pair is right and
    valid_accuracy is 0.5 at every epoch, whatever the weights (a plateau by construction)."""
    from core.engine.data.synth import write_synthetic_dataset

    write_synthetic_dataset(folder, train=16, valid=4, test=2, image_size=SIZE, seed=1)
    rows = list(csv.DictReader((folder / "valid.csv").open()))
    twins = []
    for row in rows:
        source = folder / row["Path"]
        twin = source.with_name(f"{source.stem}_twin{source.suffix}")
        shutil.copyfile(source, twin)
        twins.append({"Path": row["Path"].replace(source.name, twin.name), "label": str(1 - int(row["label"]))})
    with (folder / "valid.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Path", "label"], extrasaction="ignore")  # no patient: twins have none
        writer.writeheader()
        writer.writerows(rows + twins)
    return folder


@pytest.fixture(scope="module")
def plateau_dir(tmp_path_factory) -> Path:
    return write_plateau_folder(tmp_path_factory.mktemp("plateau") / "data")


def plateau_options(data_dir: Path, **overrides) -> dict:
    return {
        "data_dir": str(data_dir),
        "epochs": 6,
        "image_size": SIZE,
        "batch_size": 16,
        "device": "cpu",
        "seed": 2,
        "early_stopping_metric": "valid_accuracy",
        "early_stopping_patience": 2,
        **overrides,
    }


def test_cli_train_stops_after_patience_with_best_from_the_best_epoch(plateau_dir: Path, isolated_home, tmp_path: Path) -> None:
    from leukemia.cli import main

    run_folder = tmp_path / "run"
    outcome = CliRunner().invoke(
        main,
        [
            "train",
            "--data",
            str(plateau_dir),
            "--epochs",
            "6",
            "--image-size",
            str(SIZE),
            "--batch-size",
            "16",
            "--device",
            "cpu",
            "--seed",
            "2",
            "--early-stopping-metric",
            "valid_accuracy",
            "--early-stopping-patience",
            "2",
            "--out",
            str(run_folder),
        ],
    )
    assert outcome.exit_code == 0, outcome.output
    reason = "stopped early at epoch 3: valid_accuracy did not improve for 2 epochs (best 0.5 at epoch 1)"
    assert reason in outcome.output.splitlines()
    assert "epoch 4/6" not in outcome.output and "3 epoch(s) in" in outcome.output

    summary = json.loads((run_folder / "metrics.json").read_text())
    assert [row["valid_accuracy"] for row in summary["history"]] == [0.5, 0.5, 0.5]  # the plateau, exactly
    assert summary["stopped_epoch"] == 3 and summary["stop_reason"] == reason
    assert summary["best_epoch"] == 1 and summary["best_metric"] == "valid_accuracy"
    best, last = load_checkpoint(run_folder / "best.pt"), load_checkpoint(run_folder / "last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 3
    assert last["early_stopping"]["stopped_epoch"] == 3 and last["early_stopping"]["bad_epochs"] == 2
    # The weights did change after epoch 1 (lr 1e-3): best.pt really is epoch 1's model, not the last one.
    assert any((best["model"][k].float() != last["model"][k].float()).any() for k in best["model"] if "weight" in k)

    # Resuming a run that stopped early trains nothing more.
    again = train(parse_params("train", plateau_options(plateau_dir)), run_folder, resume=True)
    assert again.epochs_done == 3 and again.stopped_epoch == 3 and again.stop_reason == reason


class StopAfter(TrainingObserver):
    """Asks the run to stop (as a worker shutting down would) once `epochs` epochs are reported."""

    def __init__(self, epochs: int | None = None) -> None:
        self.epochs: list[int] = []
        self.limit = epochs
        self.stopped: tuple[int, str] | None = None

    def on_epoch(self, record: EpochRecord) -> None:
        self.epochs.append(record.epoch)

    def should_stop(self) -> bool:
        return self.limit is not None and len(self.epochs) >= self.limit

    def on_stopped_early(self, epoch: int, reason: str) -> None:
        self.stopped = (epoch, reason)


def test_patience_counts_on_across_a_resume(plateau_dir: Path, isolated_home, tmp_path: Path) -> None:
    run_folder = tmp_path / "run"
    params = parse_params("train", plateau_options(plateau_dir, early_stopping_patience=2))
    with pytest.raises(RunStopped):
        train(params, run_folder, observer=StopAfter(2))
    assert load_checkpoint(run_folder / "last.pt")["early_stopping"]["bad_epochs"] == 1  # epoch 2 did not improve
    resumed = StopAfter()
    result = train(params, run_folder, resume=True, observer=resumed)
    # Counted on from last.pt: epoch 3 is the second without improvement. A counter reset by the
    # resume would have taken epoch 3 as a new best and stopped at epoch 5.
    assert result.stopped_epoch == 3 and resumed.epochs == [1, 2, 3] and resumed.stopped is not None
    assert resumed.stopped[0] == 3 and "did not improve for 2 epochs (best 0.5 at epoch 1)" in resumed.stopped[1]
    assert load_checkpoint(run_folder / "best.pt")["epoch"] == 1


def record(epoch: int, accuracy: float | None, loss: float | None) -> EpochRecord:
    return EpochRecord(
        epoch=epoch,
        train_loss=1.0,
        train_accuracy=0.5,
        valid_loss=loss,
        valid_accuracy=accuracy,
        valid_balanced_accuracy=accuracy,
        valid_f1=accuracy,
        confusion=None,
        lr=1e-3,
        seconds=1.0,
        images_per_s=1.0,
    )


def test_best_follows_the_chosen_metric_and_min_delta() -> None:
    base = {"data_dir": "unused", "epochs": 10}
    by_loss = RunLog.for_params(
        parse_params("train", {**base, "early_stopping_metric": "valid_loss", "early_stopping_patience": 2})
    )
    for epoch, (accuracy, loss) in enumerate([(0.6, 0.9), (0.8, 0.7), (0.9, 0.75), (0.7, 0.5), (0.95, 0.6)], 1):
        by_loss.add(record(epoch, accuracy, loss))
    assert by_loss.best_epoch == 4 and by_loss.best_value == 0.5 and by_loss.best_accuracy == 0.7
    assert by_loss.stopped_epoch is None and by_loss.bad_epochs == 1
    by_loss.add(record(6, 0.99, 0.51))
    assert by_loss.stopped_epoch == 6 and by_loss.stop_reason == (
        "stopped early at epoch 6: valid_loss did not improve for 2 epochs (best 0.5 at epoch 4)"
    )

    # An improvement must exceed min_delta; without early stopping, best is valid_accuracy and the run never stops.
    with_delta = RunLog.for_params(
        parse_params("train", {**base, "early_stopping_metric": "valid_f1", "early_stopping_min_delta": 0.05})
    )
    for epoch, f1 in enumerate([0.5, 0.54, 0.56, 0.57], 1):
        with_delta.add(record(epoch, f1, 1.0))
    assert with_delta.best_epoch == 3 and with_delta.bad_epochs == 1 and with_delta.patience == 3
    plain = RunLog.for_params(parse_params("train", base))
    for epoch in range(1, 10):
        plain.add(record(epoch, 0.5, 1.0))
    assert plain.best_epoch == 1 and plain.stopped_epoch is None
    # Patience running out at the last planned epoch is not an early stop.
    last = RunLog.for_params(
        parse_params("train", {**base, "epochs": 2, "early_stopping_metric": "valid_f1", "early_stopping_patience": 1})
    )
    last.add(record(1, 0.5, 1.0))
    last.add(record(2, 0.5, 1.0))
    assert last.bad_epochs == 1 and last.stopped_epoch is None


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        ({"early_stopping_patience": 2}, "early_stopping_patience", "only applies with early_stopping_metric"),
        ({"early_stopping_min_delta": 0.1}, "early_stopping_min_delta", "only applies with early_stopping_metric"),
        ({"early_stopping_metric": "valid_f1", "valid_split": "none"}, "early_stopping_metric", "needs a validation split"),
        ({"early_stopping_metric": "accuracy"}, "early_stopping_metric", "Input should be 'valid_accuracy'"),
        ({"early_stopping_metric": "valid_f1", "early_stopping_patience": 0}, "early_stopping_patience", ">= 1|greater than"),
        ({"early_stopping_metric": "valid_f1", "early_stopping_min_delta": -1}, "early_stopping_min_delta", "greater than"),
    ],
)
def test_bad_early_stopping_options_are_one_line_naming_the_field(values: dict, field: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as caught:
        parse_params("train", {"data_dir": "unused", **values})
    assert caught.value.field == field and "\n" not in str(caught.value) and str(caught.value).startswith(field)
    with pytest.raises(UserInputError, match="needs a validation split; set valid_split"):
        parse_params("finetune", {"data_dir": "unused", "early_stopping_metric": "valid_f1"})  # train_all has none


def test_a_folder_without_validation_is_refused_before_training(tmp_path: Path, isolated_home) -> None:
    from core.engine.data.synth import write_synthetic_dataset

    folder = tmp_path / "data"
    write_synthetic_dataset(folder, train=8, valid=2, test=2, image_size=SIZE, seed=1)
    (folder / "valid.csv").unlink()
    params = parse_params(
        "train", {"data_dir": str(folder), "image_size": SIZE, "device": "cpu", "early_stopping_metric": "valid_f1"}
    )
    with pytest.raises(UserInputError, match="early_stopping_metric: valid_f1 needs a validation split") as caught:
        train(params, tmp_path / "run")
    assert caught.value.field == "early_stopping_metric" and not (tmp_path / "run" / "last.pt").exists()


# ---------------------------------------------------------------- the sweep's median stopping rule


def finish_point(session, job_id: int, accuracies: list[float], status: str = "succeeded") -> None:
    """A sweep point taken through the job service as a worker would: claimed, epochs recorded, ended."""
    from core.service import jobs

    jobs.claim_job(session, job_id, owner="test-worker", host="test-host")
    for epoch, accuracy in enumerate(accuracies, 1):
        jobs.record_epoch(session, job_id, record(epoch, accuracy, 1.0 - accuracy))
    jobs.finish_job(session, job_id, "test-worker", status, None if status == "succeeded" else "boom")


def test_median_rule_over_epoch_rows(service_backend) -> None:
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.sweep_stopping import MedianStopRule, median_stop_reason

    base = {"data_dir": "/data/lab", "epochs": 4, "image_size": SIZE}
    rule = MedianStopRule(metric="valid_accuracy", min_finished=3, grace_epochs=1)
    with get_sessionmaker().begin() as session:
        sweep, points = jobs.create_sweep(
            session, jobs.SweepRequest(kind="train", base_params=base, grid={"seed": [0, 1, 2, 3, 4, 5]}, early_stopping=rule)
        )
        ids = [job.id for job in points]
        plain = jobs.create_job(session, jobs.JobRequest(kind="train", params=base)).id
        assert sweep.early_stopping == {"rule": "median", "metric": "valid_accuracy", "min_finished": 3, "grace_epochs": 1}
    with get_sessionmaker().begin() as session:
        finish_point(session, ids[0], [0.6, 0.9, 0.9])
        finish_point(session, ids[1], [0.6, 0.8])
        finish_point(session, ids[2], [0.6, 0.7, 0.95], status="failed")  # not finished: a failed point
        jobs.claim_job(session, ids[3], owner="other", host="h")  # not finished: still running, with a row
        jobs.record_epoch(session, ids[3], record(2, 0.1, 0.9))

    def reason(job_id: int, epoch: int, accuracy: float, loss: float = 0.5) -> str | None:
        with get_sessionmaker().begin() as session:
            return median_stop_reason(session, job_id, record(epoch, accuracy, loss))

    assert reason(ids[4], 2, 0.5) is None  # 2 finished points, 3 needed
    with get_sessionmaker().begin() as session:
        finish_point(session, ids[5], [0.6, 0.6, 0.6])
    assert reason(ids[4], 1, 0.1) is None  # epoch 1 is the grace epoch
    assert reason(ids[4], 2, 0.8) is None  # the median of 0.9, 0.8, 0.6 is 0.8: not worse
    assert reason(ids[4], 2, 0.71) == (
        "stopped by the sweep's median rule at epoch 2: valid_accuracy 0.71 < median 0.8 of 3 finished points"
    )
    assert reason(ids[4], 3, 0.1) is None  # only 2 finished points have an epoch-3 row
    assert reason(plain, 2, 0.1) is None  # not a sweep point

    with get_sessionmaker().begin() as session:  # valid_loss: lower is better
        loss_sweep, loss_points = jobs.create_sweep(
            session,
            jobs.SweepRequest(
                kind="train", base_params=base, grid={"seed": [0, 1, 2]}, early_stopping=MedianStopRule(metric="valid_loss")
            ),
        )
        loss_ids = [job.id for job in loss_points]
        finish_point(session, loss_ids[0], [0.6, 0.9])  # valid_loss 0.4, 0.1
        finish_point(session, loss_ids[1], [0.6, 0.7])  # valid_loss 0.4, 0.3
    assert reason(loss_ids[2], 2, 0.0, loss=0.2) is None
    assert reason(loss_ids[2], 2, 0.0, loss=0.25) == (
        "stopped by the sweep's median rule at epoch 2: valid_loss 0.25 > median 0.2 of 2 finished points"
    )


def test_median_rule_input_is_one_line_naming_the_field(service_backend) -> None:
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.sweep_stopping import MedianStopRule, median_rule_from_options, parse_median_rule

    for values, message in [
        ({"metric": "accuracy"}, "early_stopping.metric: Input should be 'valid_accuracy'"),
        ({"metric": "valid_f1", "min_finished": 0}, "early_stopping.min_finished: Input should be greater than or equal to 1"),
        ({"metric": "valid_f1", "grace_epochs": -1}, "early_stopping.grace_epochs: Input should be greater"),
        ({"rule": "mean", "metric": "valid_f1"}, "early_stopping.rule: Input should be 'median'"),
        ({"metric": "valid_f1", "patience": 2}, "early_stopping.patience: Extra inputs are not permitted"),
        ({}, "early_stopping.metric: Field required"),
    ]:
        with pytest.raises(UserInputError, match=message) as caught:
            parse_median_rule(values)
        assert caught.value.field == "early_stopping" and "\n" not in str(caught.value)
    assert median_rule_from_options("valid_f1", "3", None) == MedianStopRule(metric="valid_f1", min_finished=3)
    with pytest.raises(UserInputError, match="early_stopping.grace_epochs: 'soon' is not a whole number"):
        median_rule_from_options("valid_f1", None, "soon")
    with pytest.raises(UserInputError, match="early_stopping: min_finished and grace_epochs need the median rule's metric"):
        median_rule_from_options(None, 2, None)
    with (
        get_sessionmaker().begin() as session,
        pytest.raises(UserInputError, match="early_stopping: evaluate sweeps have no epochs"),
    ):
        jobs.create_sweep(
            session,
            jobs.SweepRequest(
                kind="evaluate",
                base_params={"data_dir": "/data/lab"},
                grid={"batch_size": [8, 16]},
                early_stopping=MedianStopRule(metric="valid_f1"),
            ),
        )


# ---------------------------------------------------------------- API, dashboard


def stopped_job(data_dir: str, epochs: int = 3, sweep_id: int | None = None) -> tuple[int, str]:
    """A train job taken through the job service as the worker does for a run that stopped early."""
    from core.engine.training.early_stopping import patience_reason
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.records import Job

    reason = patience_reason("valid_f1", 2, epochs, 0.912, epochs - 2)
    with get_sessionmaker().begin() as session:
        job_id = jobs.create_job(
            session,
            jobs.JobRequest(
                kind="train",
                params={
                    "data_dir": data_dir,
                    "epochs": 10,
                    "image_size": SIZE,
                    "early_stopping_metric": "valid_f1",
                    "early_stopping_patience": 2,
                },
            ),
        )
        if sweep_id is not None:
            session.get(Job, job_id.id).sweep_id = sweep_id
        job_id = job_id.id
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, job_id, owner="test-worker", host="test-host")
        for epoch in range(1, epochs + 1):
            jobs.record_epoch(session, job_id, record(epoch, 0.5, 0.7))
        assert jobs.record_early_stop(session, job_id, "test-worker", epochs, reason)
        jobs.finish_job(session, job_id, "test-worker", "succeeded")
    return job_id, reason


def test_api_and_pages_show_the_stop_and_the_sweeps_rule(client, folder_path) -> None:
    from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
    from tests.web_helpers import csrf_token, login

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    body = {
        "kind": "train",
        "base_params": {"data_dir": folder_path, "epochs": 3, "image_size": SIZE},
        "grid": {"seed": [0, 1]},
        "early_stopping": {"metric": "valid_f1", "min_finished": 1},
    }
    response = client.post("/api/sweeps", json=body, headers=auth)
    assert response.status_code == 201, response.json
    rule = {"rule": "median", "metric": "valid_f1", "min_finished": 1, "grace_epochs": 1}
    sweep_id = response.json["id"]
    assert (
        response.json["early_stopping"] == rule
        and client.get(f"/api/sweeps/{sweep_id}", headers=auth).json["early_stopping"] == rule
    )
    for bad, message in [
        ({"metric": "f1"}, "early_stopping.metric: Input should be"),
        ({"metric": "valid_f1", "grace_epochs": "1"}, "early_stopping.grace_epochs: Input should be a valid integer"),
        ({"metric": "valid_f1", "min_finished": 0}, "early_stopping.min_finished"),
    ]:
        response = client.post("/api/sweeps", json={**body, "early_stopping": bad}, headers=auth)
        assert response.status_code == 400 and response.json["error"].startswith(message), response.json
        assert response.json["field"].startswith("early_stopping")
    response = client.post(
        "/api/jobs", json={"kind": "train", "params": {"data_dir": folder_path, "early_stopping_patience": 2}}, headers=auth
    )
    assert response.status_code == 400 and response.json["field"] == "early_stopping_patience"
    assert (
        response.json["error"]
        == "early_stopping_patience: only applies with early_stopping_metric (the validation metric to watch)"
    )

    job_id, reason = stopped_job(folder_path, sweep_id=sweep_id)
    answer = client.get(f"/api/jobs/{job_id}", headers=auth).json
    assert (answer["status"], answer["stopped_epoch"], answer["stop_reason"]) == ("succeeded", 3, reason)
    assert reason == "stopped early at epoch 3: valid_f1 did not improve for 2 epochs (best 0.912 at epoch 1)"

    assert login(client, *WEB_ADMIN).status_code == 302
    page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
    assert '>succeeded</span> <span class="muted small stopped" data-field="stopped"' in page
    assert "(stopped early at epoch 3)</span></span></h1>" in page and f'data-field="stop_reason">{reason}</p>' in page
    listed = client.get(f"/?sweep={sweep_id}").get_data(as_text=True)
    assert "(stopped early at epoch 3)" in listed and reason in listed
    assert 'id="sweep-rule">median stopping rule on valid_f1: acts from epoch 2 once 1 point(s) have finished<' in listed

    # The sweep form: the rule's fields, one error naming it, and a sweep queued with it.
    form = client.get("/sweeps/new").get_data(as_text=True)
    assert 'name="median_metric"' in form and 'name="median_min_finished"' in form and 'name="median_grace"' in form
    folder_id = client.get("/api/data-folders", headers=auth).json["data_folders"][0]["id"]
    base = {
        "csrf_token": csrf_token(client, "/sweeps/new"),
        "data_folder": str(folder_id),
        "epochs": "2",
        "image_size": str(SIZE),
        "grid_seed": "0, 1",
    }
    page = client.post("/sweeps/new", data={**base, "median_min_finished": "2"})
    assert page.status_code == 400 and 'id="error-early_stopping">min_finished and grace_epochs need' in page.get_data(
        as_text=True
    )
    response = client.post("/sweeps/new", data={**base, "median_metric": "valid_loss", "median_grace": "2"})
    assert response.status_code == 302, response.get_data(as_text=True)
    new_id = int(response.location.rpartition("sweep=")[2])
    assert client.get(f"/api/sweeps/{new_id}", headers=auth).json["early_stopping"] == {
        "rule": "median",
        "metric": "valid_loss",
        "min_finished": 2,
        "grace_epochs": 2,
    }


def test_cli_submits_a_sweep_with_the_median_rule(service_backend, plateau_dir: Path) -> None:
    import secrets

    from core.service.db import get_sessionmaker
    from core.service.records import Sweep
    from leukemia.cli import main

    queue = f"nobody-{secrets.token_hex(3)}"
    common = [
        "submit",
        "sweep",
        "--data",
        str(plateau_dir),
        "--image-size",
        str(SIZE),
        "--grid",
        "lr=0.001,0.0003",
        "--queue",
        queue,
    ]
    try:
        outcome = CliRunner().invoke(main, [*common, "--median-stop", "valid_f1", "--median-min-finished", "3"])
        assert outcome.exit_code == 0 and "2 jobs queued" in outcome.output, outcome.output
        sweep_id = int(outcome.output.split()[1].rstrip(":"))
        with get_sessionmaker().begin() as session:
            assert session.get(Sweep, sweep_id).early_stopping == {
                "rule": "median",
                "metric": "valid_f1",
                "min_finished": 3,
                "grace_epochs": 1,
            }
        listed = CliRunner().invoke(main, ["jobs", "--sweep", str(sweep_id)])
        assert listed.output.startswith(f"sweep {sweep_id}: median stopping rule on valid_f1: acts from epoch 2 once 3")
        refused = CliRunner().invoke(main, [*common, "--median-grace", "2"])
        assert refused.exit_code == 2 and refused.output == (
            "error: early_stopping: min_finished and grace_epochs need the median rule's metric\n"
        )
    finally:
        if service_backend["name"] == "redis+postgres":  # drop the messages nobody consumed
            import redis

            redis.Redis.from_url(service_backend["env"]["BROKER_URL"]).delete(queue)
