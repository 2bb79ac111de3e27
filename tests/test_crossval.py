"""Cross-validation on the C-NMC release tree (built from the real images): the fold plan, the CLI
run with its fold ensemble, and the queued kind on two real workers with its ensemble jobs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from core.common.errors import UserInputError
from core.engine.training.crossval import fold_table, mean_std, plan_folds
from leukemia.cli import main
from tests.release_helpers import build_release

TINY = ["--epochs", "1", "--image-size", "48", "--batch-size", "8", "--device", "cpu"]
FINAL_IDS = [f"C-NMC_Leukemia/testing_data/C-NMC_test_final_phase_data/{n}.bmp" for n in range(1, 19)]


def test_plan_uses_the_release_folds_when_subject_disjoint(release_dir: Path) -> None:
    plan = plan_folds(release_dir, None, 0)
    assert plan.scheme == "the release's 3 folds (subject-disjoint)"
    assert [(f.fold, f.split, f.valid_split) for f in plan.folds] == [
        (0, "folds:1,2", "fold:0"),
        (1, "folds:0,2", "fold:1"),
        (2, "folds:0,1", "fold:2"),
    ]
    plan = plan_folds(release_dir, 4, 7)
    assert plan.scheme == "4 subject-grouped folds (seed 7)"
    assert [(f.split, f.valid_split) for f in plan.folds][1] == ("kfold:4:0,2,3", "kfold:4:1")


def test_folds_sharing_a_subject_fall_back_or_are_refused(realdata_dir: Path, tmp_path: Path) -> None:
    build_release(realdata_dir, tmp_path / "r")
    moved = next((tmp_path / "r" / "training_data" / "fold_0" / "hem").iterdir())
    shutil.copyfile(moved, tmp_path / "r" / "training_data" / "fold_2" / "hem" / moved.name.replace("_hem", "_7_hem"))
    assert plan_folds(tmp_path / "r", None, 0).scheme == "3 subject-grouped folds (seed 0)"
    subject = moved.name.split("_")[1]
    with pytest.raises(UserInputError) as error:
        plan_folds(tmp_path / "r", None, 0, release_folds=True)
    assert str(error.value) == (
        f"folds: the release's folds are not subject-disjoint: subject {subject} is in fold_0 "
        "and fold_2 (1 such subject(s)); leave out --release-folds for subject-grouped folds"
    )


def test_fold_table_takes_each_folds_best_epoch() -> None:
    rows = [
        {"fold": 0, "epoch": 1, "valid_accuracy": 0.5, "valid_balanced_accuracy": 0.5, "valid_f1": 0.4},
        {"fold": 0, "epoch": 2, "valid_accuracy": 0.7, "valid_balanced_accuracy": 0.6, "valid_f1": 0.65},
        {"fold": 1, "epoch": 1, "valid_accuracy": 0.9, "valid_balanced_accuracy": 0.8, "valid_f1": 0.85},
    ]
    table = fold_table(rows)
    assert table[["fold", "epoch", "accuracy"]].values.tolist() == [[0, 2, 0.7], [1, 1, 0.9]]
    spread = mean_std(table)["accuracy"]
    assert spread["mean"] == pytest.approx(0.8) and spread["std"] == pytest.approx(0.1414213562)  # sample std (n-1)


@pytest.mark.usefixtures("isolated_home")
def test_cli_cross_validation_and_fold_ensemble(release_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cv"
    result = runner.invoke(main, ["cv", "--data", str(release_dir), *TINY, "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "3 folds: the release's 3 folds (subject-disjoint)" in lines
    assert sum(line.startswith("fold ") and ": best epoch 1: accuracy " in line for line in lines) == 3
    assert any(line.startswith("weighted_f1: ") and line.endswith(" (mean ± std over folds)") for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert [f["fold"] for f in summary["folds"]] == [0, 1, 2] and summary["out_of_fold"]["count"] == 44
    with (out / "oof.csv").open() as handle:
        oof = list(csv.DictReader(handle))
    assert len(oof) == 44 and len({row["ID"] for row in oof}) == 44  # each training image once, out of its fold

    folds = [arg for k in range(3) for arg in ("--checkpoint", str(out / f"fold_{k}"))]
    submission = tmp_path / "submission.csv"
    predicted = runner.invoke(
        main, ["predict", *folds, "--data", str(release_dir), "--split", "final", "--tta", "--out", str(submission)]
    )
    assert predicted.exit_code == 0, predicted.output
    with submission.open() as handle:
        assert [row["ID"] for row in csv.DictReader(handle)] == FINAL_IDS
    evaluated = runner.invoke(
        main, ["evaluate", *folds, "--data", str(release_dir), "--split", "prelim", "--out", str(tmp_path / "ensemble")]
    )
    assert evaluated.exit_code == 0, evaluated.output
    assert len(json.loads((tmp_path / "ensemble" / "evaluation.json").read_text())["checkpoints"]) == 3


@pytest.mark.parametrize("service_backend", ["redis+postgres"], indirect=True)
def test_queued_cross_validation_on_two_workers_and_its_ensembles(service_backend, release_dir: Path, tmp_path: Path) -> None:
    """`leukemia submit cv`: one job per fold, run in parallel by two real workers; the summary; the
    ensemble as a predict job (final, in file-number order) and an evaluate job (prelim, with TTA)."""
    import os
    import secrets

    from core.service import jobs
    from core.service.cv_jobs import cross_validation_summary
    from core.service.db import get_sessionmaker
    from tests.test_worker import WorkerProcess, cli, job_row, stop_workers, wait_finished

    queue = f"cv-{secrets.token_hex(3)}"
    env = {**os.environ, **service_backend["env"], "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    workers = [WorkerProcess(env, [queue], f"cv{n}", tmp_path) for n in range(2)]
    try:
        code, output = cli("submit", "cv", "--data", str(release_dir), *TINY, "--queue", queue, "--name", "release CV")
        assert code == 0, output
        cv_id = int(output.split()[1].rstrip(":"))
        fold_ids = [int(n) for n in output.split("(")[1].rstrip(")\n").split(", ")]
        assert len(fold_ids) == 3
        finished = [wait_finished(job_id, *workers, timeout=300) for job_id in fold_ids]
        assert [job.status for job in finished] == ["succeeded"] * 3, [job.error for job in finished]
        assert len({job.worker_host for job in finished}) == 2  # both workers took folds
        first, second = sorted(finished, key=lambda job: job.started_at)[:2]
        assert second.started_at < first.finished_at  # two folds ran at the same time

        with get_sessionmaker().begin() as session:
            summary = cross_validation_summary(session, cv_id)
        assert summary["finished"] and summary["scheme"] == "the release's 3 folds (subject-disjoint)"
        assert [(f["fold"], f["valid_split"], f["best"]["epoch"]) for f in summary["folds"]] == [
            (0, "fold:0", 1),
            (1, "fold:1", 1),
            (2, "fold:2", 1),
        ]
        assert summary["mean_std"]["weighted_f1"]["std"] is not None and summary["out_of_fold"]["count"] == 44
        code, output = cli("cv-summary", str(cv_id), "--oof", str(tmp_path / "oof.csv"))
        assert code == 0 and output.startswith(f"cross-validation {cv_id}: release CV (the release's 3 folds"), output
        assert "weighted_f1: " in output and "out of fold (44 images)" in output
        assert output.endswith(f"wrote {tmp_path / 'oof.csv'} (44 out-of-fold predictions)\n")
        with (tmp_path / "oof.csv").open() as handle:
            oof = list(csv.DictReader(handle))
        assert [row["fold"] for row in oof] == sorted(row["fold"] for row in oof) and len({row["ID"] for row in oof}) == 44

        code, output = cli(
            "submit", "evaluate", "--parent", str(fold_ids[0]), "--data", str(release_dir), "--split", "prelim", "--queue", queue
        )
        assert code == 0, output
        single = wait_finished(int(output.split()[1]), *workers)
        assert single.status == "succeeded", single.error
        with get_sessionmaker().begin() as session:
            assert "subjects.csv" in {a.name for a in jobs.artifacts(session, single.id)}  # per-subject metrics

        code, output = cli("submit", "ensemble", "--cv", str(cv_id), "--kind", "evaluate", "--split", "final", "--queue", queue)
        assert (
            code == 2 and output == "error: csv: final has no labels; evaluate needs a labelled split (e.g. prelim, valid.csv)\n"
        )
        code, output = cli("submit", "ensemble", "--cv", str(cv_id), "--split", "final", "--queue", queue)
        assert code == 0, output
        predict_id = int(output.split()[1])
        code, output = cli(
            "submit", "ensemble", "--cv", str(cv_id), "--kind", "evaluate", "--split", "prelim", "--tta", "--queue", queue
        )
        assert code == 0, output
        evaluate_id = int(output.split()[1])
        assert wait_finished(predict_id, *workers).status == "succeeded", job_row(predict_id).error
        assert wait_finished(evaluate_id, *workers).status == "succeeded", job_row(evaluate_id).error
        assert len(job_row(predict_id).params["checkpoints"]) == 3

        download = tmp_path / "predictions.csv"
        code, output = cli("download", str(predict_id), "predictions.csv", "--out", str(download))
        assert code == 0, output
        with download.open() as handle:
            rows = list(csv.DictReader(handle))
        assert [row["ID"] for row in rows] == FINAL_IDS and {row["label"] for row in rows} <= {"0", "1"}
        with get_sessionmaker().begin() as session:
            ensembles = cross_validation_summary(session, cv_id)["ensembles"]
        assert [(e["job_id"], e["kind"], e["split"], e["tta"]) for e in ensembles] == [
            (predict_id, "predict", "final", False),
            (evaluate_id, "evaluate", "prelim", True),
        ]
    finally:
        stop_workers(*workers)


@pytest.fixture()
def registered_release(client, tmp_path, realdata_dir) -> str:
    """A release tree under the app's data root, registered over the API."""
    from tests.conftest import WEB_API_TOKEN

    build_release(realdata_dir, tmp_path / "data" / "C-NMC_Leukemia")
    response = client.post(
        "/api/data-folders",
        json={"path": str(tmp_path / "data" / "C-NMC_Leukemia"), "name": "cnmc"},
        headers={"Authorization": f"Bearer {WEB_API_TOKEN}"},
    )
    assert response.status_code == 201, response.json
    report = response.json["report"]
    assert report["layout"] == "release" and report["folds_subject_disjoint"] is True and report["image_size"] == 450
    return response.json["path"]


def test_api_and_pages_of_a_queued_cross_validation(client, registered_release) -> None:
    """Queued through the API (no worker here): the parent, its three fold jobs, the page; bad input is one line with its field."""
    from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
    from tests.web_helpers import csrf_token, login

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    params = {"data_dir": registered_release, "epochs": 1, "image_size": 48, "device": "cpu"}
    for body, field in (
        ({"params": {**params, "split": "fold:0"}}, "split"),
        ({"params": params, "folds": 1}, "folds"),
        ({"params": {**params, "data_dir": "/elsewhere"}}, "data_dir"),
    ):
        response = client.post("/api/cross-validations", json=body, headers=auth)
        assert response.status_code == 400 and response.json["field"] == field, response.json
    response = client.post("/api/cross-validations", json={"params": params, "name": "api CV"}, headers=auth)
    assert response.status_code == 201, response.json
    cv = response.json
    assert cv["scheme"] == "the release's 3 folds (subject-disjoint)" and cv["finished"] is False
    assert [(f["fold"], f["status"], f["valid_split"], f["best"]) for f in cv["folds"]] == [
        (0, "queued", "fold:0", None),
        (1, "queued", "fold:1", None),
        (2, "queued", "fold:2", None),
    ]
    job = client.get(f"/api/jobs/{cv['folds'][1]['job_id']}", headers=auth).json
    assert (job["cv_id"], job["cv_fold"], job["params"]["split"]) == (cv["id"], 1, "folds:0,2")
    response = client.post(
        f"/api/cross-validations/{cv['id']}/ensemble", json={"kind": "predict", "split": "final"}, headers=auth
    )
    assert response.status_code == 409 and response.json["field"] == "cv_id"
    assert "is not finished: fold 0 (queued), fold 1 (queued), fold 2 (queued)" in response.json["error"]
    assert client.get("/api/cross-validations/999", headers=auth).status_code == 404
    document = client.get("/api/openapi.json").json
    assert {"/api/cross-validations", "/api/cross-validations/{cv_id}", "/api/cross-validations/{cv_id}/ensemble"} <= set(
        document["paths"]
    )

    assert login(client, *WEB_ADMIN).status_code == 302
    page = client.get(f"/cross-validations/{cv['id']}").get_data(as_text=True)
    assert "Cross-validation #%d" % cv["id"] in page and page.count("badge-queued") == 3
    assert "<code>folds:1,2</code>" in page and "Available once every fold job has succeeded." in page
    assert "api CV" in client.get("/cross-validations").get_data(as_text=True)
    token = csrf_token(client, f"/cross-validations/{cv['id']}")
    refused = client.post(
        f"/cross-validations/{cv['id']}/ensemble", data={"csrf_token": token, "kind": "predict", "split": "final"}
    )
    assert refused.status_code == 409 and "is not finished" in refused.get_data(as_text=True)

    form = client.get("/cross-validations/new").get_data(as_text=True)
    assert 'name="valid_split"' not in form and "cnmc (" in form and "450 px images" in form
    folder_id = form.split('<option value="')[2].split('"')[0]
    response = client.post(
        "/cross-validations/new",
        data={"csrf_token": token, "data_folder": folder_id, "folds": "4", "epochs": "1", "image_size": "48"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    second = client.get(response.location).get_data(as_text=True)
    assert "4 subject-grouped folds (seed 0)" in second and second.count("badge-queued") == 4


def test_a_cross_validation_the_folder_cannot_split_is_refused_at_submit(client, folder_path) -> None:
    """Every fold job would fail: refused at submit in one line naming the field, and nothing is queued."""
    from tests.conftest import WEB_API_TOKEN
    from tests.web_helpers import add_patients

    auth = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
    params = {"data_dir": folder_path, "epochs": 1, "image_size": 32, "device": "cpu"}

    def submit(folds: int):
        return client.post("/api/cross-validations", json={"params": params, "folds": folds}, headers=auth)

    add_patients(Path(folder_path), None)  # a lab folder without a patient column
    first = next(csv.DictReader((Path(folder_path) / "train.csv").open()))["Path"]
    assert submit(20).json == {
        "field": "data_dir",
        "error": (  # and its file names name no patient
            f"data_dir: train.csv row 1: no subject for {first} (subject-grouped folds needs the patient of every "
            "image: a patient column, or C-NMC file names)"
        ),
    }
    add_patients(Path(folder_path), {1: ["A", "B", "C"], 0: ["H1"]})
    assert submit(20).json == {"field": "folds", "error": "folds: 4 subjects are too few for 20 subject-grouped folds"}
    # Four subjects, and yet the one normal subject shares fold 0: fold 3 would be empty.
    response = submit(4)
    assert (response.status_code, response.json) == (
        400,
        {"field": "folds", "error": "folds: the 4 subjects leave fold 3 of 4 subject-grouped folds empty; ask for fewer folds"},
    )
    assert client.get("/api/jobs", headers=auth).json["total"] == 0
    assert submit(2).status_code == 201
    assert client.get("/api/jobs", headers=auth).json["total"] == 2
