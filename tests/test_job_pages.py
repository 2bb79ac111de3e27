"""The job pages of issue 20: a job's created/started/finished times and duration, a model's links to
the jobs started from it, cross-validation folds marked in the job list, evaluate and predict forms
opened from a job preset to its data folder, and the compare table's data folder and evaluate metrics."""

from __future__ import annotations

import json
import re
from datetime import datetime

import numpy as np
import pytest
from sqlalchemy import update

from core.engine.evaluation import clinical
from core.engine.evaluation.scores import confusion_matrix, sensitivity_specificity
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.records import CrossValidation, Job, utcnow
from core.service.settings import get_settings
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.test_retention import finished_job, row, train_in_process
from tests.web_helpers import TRAIN, login, synthetic_folder

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}


@pytest.fixture()
def admin(client):
    assert login(client, *WEB_ADMIN).status_code == 302
    return client


def set_times(job_id: int, **times: datetime) -> None:
    with get_sessionmaker().begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**times))


def fact(page: str, field: str) -> str:
    """The text of a job page's fact `<dd data-field="field">`."""
    match = re.search(rf'<dd data-field="{field}"[^>]*>([^<]*)</dd>', page)
    assert match, f"no {field} on the page"
    return match.group(1)


def test_a_job_page_shows_its_times_and_how_long_it_ran(admin, folder_path):
    ended = finished_job(folder_path)
    set_times(
        ended,
        created_at=datetime(2024, 5, 1, 11, 58, 0),
        started_at=datetime(2024, 5, 1, 12, 0, 0),
        finished_at=datetime(2024, 5, 1, 13, 2, 5),
    )
    page = admin.get(f"/jobs/{ended}").get_data(as_text=True)
    assert (fact(page, "created"), fact(page, "started"), fact(page, "finished"), fact(page, "duration")) == (
        "2024-05-01 11:58:00",
        "2024-05-01 12:00:00",
        "2024-05-01 13:02:05",
        "1h 02m",
    )

    with get_sessionmaker().begin() as session:
        running = jobs.create_job(session, jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": folder_path})).id
        jobs.claim_job(session, running, owner="w", host="h")
    set_times(running, started_at=utcnow().replace(microsecond=0) - (datetime(2024, 1, 1, 0, 1, 15) - datetime(2024, 1, 1)))
    page = admin.get(f"/jobs/{running}").get_data(as_text=True)
    assert fact(page, "finished") == "—" and fact(page, "duration") in ("1m 15s", "1m 16s", "1m 17s")  # to now

    with get_sessionmaker().begin() as session:  # a retried job waits again: its old start is not shown
        jobs.finish_job(session, running, "w", "failed", error="boom")
        jobs.retry_job(session, running, get_settings())
    page = admin.get(f"/jobs/{running}").get_data(as_text=True)
    assert (fact(page, "started"), fact(page, "finished"), fact(page, "duration")) == ("—", "—", "—")
    assert row(running).started_at is not None
    api = admin.get(f"/api/jobs/{ended}").json  # API clients read the same times
    assert (api["started_at"], api["finished_at"]) == ("2024-05-01T12:00:00Z", "2024-05-01T13:02:05Z")
    live = admin.get(f"/jobs/{ended}/live").get_data(as_text=True)  # what live.js swaps in keeps them current
    assert (fact(live, "started"), fact(live, "finished"), fact(live, "duration")) == (
        "2024-05-01 12:00:00",
        "2024-05-01 13:02:05",
        "1h 02m",
    )


def test_a_models_page_links_to_the_jobs_started_from_it(admin, folder_path):
    model = finished_job(folder_path)
    with get_sessionmaker().begin() as session:
        evaluation = jobs.create_job(
            session, jobs.JobRequest(kind="evaluate", params={"data_dir": folder_path, "csv": "test.csv"}, parent_id=model)
        ).id
        prediction = jobs.create_job(
            session, jobs.JobRequest(kind="predict", params={"data_dir": folder_path, "csv": "test.csv"}, parent_id=model)
        ).id
    other = finished_job(folder_path)
    page = admin.get(f"/jobs/{model}").get_data(as_text=True)
    children = page.split('id="children"')[1].split("</section>")[0]
    assert f'<a href="/jobs/{evaluation}">#{evaluation}</a></td><td>evaluate</td>' in children
    assert f'<a href="/jobs/{prediction}">#{prediction}</a></td><td>predict</td>' in children
    assert "<code>test.csv</code>" in children and children.count("badge-queued") == 2
    assert "None yet" in admin.get(f"/jobs/{other}").get_data(as_text=True).split('id="children"')[1].split("</section>")[0]
    assert 'id="children"' not in admin.get(f"/jobs/{evaluation}").get_data(as_text=True)  # not a model


def test_the_job_list_marks_cross_validation_folds_and_ensembles(admin, folder_path):
    fold, ensemble, plain = finished_job(folder_path), finished_job(folder_path), finished_job(folder_path)
    with get_sessionmaker().begin() as session:
        cv = CrossValidation(name="cv", data_dir=folder_path, scheme="2 folds", base_params={}, folds=[])
        session.add(cv)
        session.flush()
        session.execute(update(Job).where(Job.id == fold).values(cv_id=cv.id, cv_fold=1))
        session.execute(update(Job).where(Job.id == ensemble).values(cv_id=cv.id))
    page = admin.get("/").get_data(as_text=True)
    rows = {int(match.group(1)): match.group(0) for match in re.finditer(r'<tr data-job-id="(\d+)".*?</tr>', page, re.S)}
    link = f'<a class="chip cv-chip" data-cv="{cv.id}" href="/cross-validations/{cv.id}">CV {cv.id} · '
    assert link + "fold 1</a>" in rows[fold] and link + "ensemble</a>" in rows[ensemble]
    assert "cv-chip" not in rows[plain]


@pytest.mark.parametrize("kind", ["evaluate", "predict"])
def test_a_form_opened_from_a_job_is_preset_to_its_data_folder(admin, folder_path, kind, tmp_path):
    model = finished_job(folder_path)
    folder_id = admin.get("/api/data-folders").json["data_folders"][0]["id"]
    form = admin.get(f"/jobs/new/{kind}?parent={model}").get_data(as_text=True)
    assert f'<option value="{folder_id}" selected>' in select(form, "data_folder")
    assert f'<option value="{model}" selected>' in select(form, "parent_id")
    # With two folders (a lone one is chosen for any job: tests/test_tour.py) nothing else is preset.
    other = synthetic_folder(tmp_path / "data", "other")
    assert admin.post("/api/data-folders", json={"path": str(other)}, headers=AUTH).status_code == 201
    elsewhere = finished_job(str(tmp_path / "unregistered"))  # e.g. a CLI job's folder: nothing to preset
    assert " selected>" not in select(admin.get(f"/jobs/new/{kind}?parent={elsewhere}").get_data(as_text=True), "data_folder")
    assert " selected>" not in select(admin.get(f"/jobs/new/{kind}").get_data(as_text=True), "data_folder")


def select(page: str, name: str) -> str:
    """The options of a form's <select name=...>."""
    return page.split(f'<select name="{name}">')[1].split("</select>")[0]


def test_sensitivity_and_specificity_from_a_confusion_matrix_are_the_clinical_rates():
    rng = np.random.default_rng(7)
    truth, scores = rng.integers(0, 2, 200), rng.random(200)
    rates = clinical.rates_at(truth, scores, 0.5)
    assert sensitivity_specificity(confusion_matrix(truth, scores >= 0.5)) == pytest.approx(
        (rates["sensitivity"], rates["specificity"])
    )
    assert sensitivity_specificity([[3, 1], [0, 0]]) == (None, 0.75)  # no ALL cell: no sensitivity


def test_compare_shows_the_data_folder_and_an_evaluate_jobs_metrics(app, admin, folder_path):
    """A real tiny training run and a real evaluation of its model, both through the worker's code path."""
    from worker.tasks import run_next_job

    trained = train_in_process(folder_path, 1, None)
    with get_sessionmaker().begin() as session:
        evaluated = jobs.create_job(
            session,
            jobs.JobRequest(
                kind="evaluate", params={"data_dir": folder_path, "csv": "valid.csv", "device": "cpu"}, parent_id=trained
            ),
        ).id
    run_next_job(evaluated)
    assert row(evaluated).status == "succeeded", row(evaluated).error
    with get_sessionmaker().begin() as session:
        evaluation = json.loads(jobs.named_artifact_file(session, evaluated, "evaluation.json").read_text())
        last = jobs.epoch_metrics(session, trained)[-1]
    metrics = evaluation["clinical"]["metrics"]

    page = admin.get(f"/compare?ids={trained},{evaluated}").get_data(as_text=True)
    rows = {int(match.group(1)): match.group(0) for match in re.finditer(r'<tr data-job-id="(\d+)".*?</tr>', page, re.S)}
    measured = {job_id: dict(re.findall(r'<td data-measure="(\w+)">([^<]*)</td>', text)) for job_id, text in rows.items()}
    percent, number = (lambda v: "—" if v is None else f"{100 * v:.1f}%"), (lambda v: "—" if v is None else f"{v:.3g}")
    assert measured[evaluated] == {
        "accuracy": percent(evaluation["accuracy"]),
        "balanced_accuracy": percent(evaluation["balanced_accuracy"]),
        "weighted_f1": number(evaluation["weighted_f1"]),
        "sensitivity": percent(metrics["sensitivity"]["value"]),
        "specificity": percent(metrics["specificity"]["value"]),
        "roc_auc": number(metrics["roc_auc"]["value"]),
    }
    sensitivity, specificity = sensitivity_specificity(last.confusion)
    assert measured[trained] == {
        "accuracy": percent(last.valid_accuracy),
        "balanced_accuracy": percent(last.valid_balanced_accuracy),
        "weighted_f1": number(last.valid_f1),
        "sensitivity": percent(sensitivity),
        "specificity": percent(specificity),
        "roc_auc": number(last.valid_roc_auc),
    }
    assert measured[evaluated]["accuracy"] != "—"
    for job_id in (trained, evaluated):
        assert f'<td data-field="folder" title="{folder_path}">synth</td>' in rows[job_id]
    assert f"valid.csv at threshold {evaluation['threshold']['value']:.2f}" in rows[evaluated]
    assert "valid split, epoch 1" in rows[trained]
    assert f'model <a href="/jobs/{trained}">#{trained}</a> · batch 64' in rows[evaluated]
    assert "resnet18 · 1 epoch · batch 4 · adam · lr 0.001 · 32 px" in rows[trained]
