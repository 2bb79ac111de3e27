"""The README's ten-minute tour on the demo folder that `leukemia serve` writes, page by page through Flask's
test client (issue 23): the data-folder page says what the folder has, the forms preselect a lone folder and
offer its CSV files and named splits, their defaults read true, a cross-validation by subject is accepted,
and the job pages show no Python literals, no empty log box, and a download button for the prediction CSV."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.records import DataFolder
from core.service.run_folders import job_run_folder
from tests.conftest import WEB_ADMIN
from tests.web_helpers import csrf_token, finished_train_job, login, synthetic_folder


@pytest.fixture()
def demo(client, tmp_path) -> dict:
    """The demo folder as `leukemia serve` writes it (200/50/50 images of 64 px, seed 0) under the app's data
    root, registered through the page; a logged-in client."""
    from leukemia.commands.serve import demo_data_folder

    folder = demo_data_folder(tmp_path)  # tmp_path/data/demo: the app's data root is tmp_path/data
    assert login(client, *WEB_ADMIN).status_code == 302
    response = client.post("/data-folders", data={"path": str(folder), "csrf_token": csrf_token(client, "/data-folders")})
    assert response.status_code == 302, response.get_data(as_text=True)
    with get_sessionmaker().begin() as session:
        folder_id = session.scalar(select(DataFolder.id))
    return {"path": folder, "id": folder_id, "client": client}


def selected_option(page: str, name: str) -> str:
    """The value of the selected option of a select (the first when none is marked, as a browser shows it)."""
    select_html = re.search(rf'<select name="{name}"[^>]*>(.*?)</select>', page, re.S).group(1)
    options = re.findall(r'<option value="([^"]*)"( selected)?', select_html)
    return next((value for value, selected in options if selected), options[0][0])


def input_value(page: str, name: str) -> str:
    return html.unescape(re.search(rf'<input name="{name}" value="([^"]*)"', page).group(1))


def test_the_data_folder_page_shows_what_the_demo_folder_has(demo) -> None:
    page = demo["client"].get("/data-folders").get_data(as_text=True)
    facts = dict(re.findall(r'data-fact="([\w-]+)">(.*?)</dd>', page, re.S))
    assert facts["images"] == "300" and facts["patients"] == "25" and facts["image-size"] == "64 px"
    assert facts["classes"].startswith("80 / 170") and "50 unlabelled" in facts["classes"]  # hem / ALL, as the table
    patients = re.findall(r"<tr><td>(train|valid|test)</td>.*?<td>([^<]*)</td></tr>", page, re.S)
    assert patients == [("train", "20"), ("valid", "5"), ("test", "—")]  # test.csv, as the lab's, names no patient
    names = re.search(r'id="split-names-\d+">(.*?)</p>', page, re.S).group(1)
    assert re.findall(r"<code>([^<]+)</code>", names) == [
        "test_labels.csv",
        "train.csv",
        "valid.csv",
        "train",
        "valid",
        "train_all",
        "test.csv",
        "test",
    ]


def test_forms_preselect_a_lone_data_folder_and_only_a_lone_one(demo, tmp_path) -> None:
    client = demo["client"]
    urls = ("/jobs/new/train", "/jobs/new/evaluate", "/jobs/new/predict", "/sweeps/new", "/cross-validations/new")
    for url in urls:
        assert selected_option(client.get(url).get_data(as_text=True), "data_folder") == str(demo["id"]), url
    other = synthetic_folder(tmp_path / "data", "other")
    client.post("/data-folders", data={"path": str(other), "csrf_token": csrf_token(client, "/data-folders")})
    for url in urls:
        assert selected_option(client.get(url).get_data(as_text=True), "data_folder") == "", url  # "— choose —"


def test_optional_choices_say_what_blank_means_for_the_job_at_hand(demo) -> None:
    client = demo["client"]
    train = client.get("/jobs/new/train").get_data(as_text=True)
    blank = re.search(r'<select name="early_stopping_metric">\s*<option value="">([^<]+)</option>', train).group(1)
    assert blank == "(off: every epoch runs)"  # a new model has no checkpoint to take it from
    finetune = client.get("/jobs/new/finetune").get_data(as_text=True)
    assert re.search(r'<select name="arch">\s*<option value="">\(from the checkpoint\)</option>', finetune)
    assert "(from the checkpoint)" not in client.get("/cross-validations/new").get_data(as_text=True)


def test_evaluate_and_predict_forms_offer_the_folders_csv_files_and_named_splits(demo) -> None:
    client = demo["client"]
    job_id = finished_train_job(str(demo["path"]))
    evaluate = client.get(f"/jobs/new/evaluate?parent={job_id}").get_data(as_text=True)
    offered = re.findall(rf'data-folder="{demo["id"]}".*?</div>', evaluate, re.S)[0]
    assert re.findall(r'data-value="([^"]+)"', offered) == [
        "test_labels.csv",
        "train.csv",
        "valid.csv",
        "train",
        "valid",
        "train_all",
    ]  # labelled: evaluate needs labels
    assert input_value(evaluate, "csv") == "valid.csv"  # the schema's default, which this folder has
    assert input_value(evaluate, "explain") == "8"  # the heat maps the tour promises
    predict = client.get(f"/jobs/new/predict?parent={job_id}").get_data(as_text=True)
    offered = re.findall(rf'data-folder="{demo["id"]}".*?</div>', predict, re.S)[0]
    assert re.findall(r'data-value="([^"]+)"', offered)[:2] == ["test.csv", "test"]
    assert input_value(predict, "csv") == "test.csv" and input_value(predict, "explain") == "8"


def test_a_cross_validation_by_subject_of_the_demo_folder_is_accepted(demo) -> None:
    client = demo["client"]
    response = client.post(
        "/cross-validations/new",
        data={"csrf_token": csrf_token(client, "/cross-validations/new"), "data_folder": str(demo["id"]), "epochs": "3"},
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    page = client.get(response.location).get_data(as_text=True)
    assert "3 subject-grouped folds (seed 0)" in page and page.count("badge-queued") == 3
    ensemble = page.split('id="ensemble"')[1].split("</form>")[0]  # its split: the folder's names to pick from
    assert re.findall(r'data-value="([^"]+)"', ensemble) == [
        "test_labels.csv",
        "train.csv",
        "valid.csv",
        "train",
        "valid",
        "train_all",
        "test.csv",
        "test",
    ]


def test_a_folder_without_patients_is_refused_beside_the_data_folder_field(demo) -> None:
    from tests.web_helpers import add_patients

    add_patients(demo["path"], None)
    client = demo["client"]
    response = client.post(
        "/cross-validations/new",
        data={"csrf_token": csrf_token(client, "/cross-validations/new"), "data_folder": str(demo["id"]), "epochs": "3"},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    field = re.search(r'<div class="field has-error">\s*<label>Data folder.*?</div>', page, re.S).group(0)
    assert "no subject for ./new_dataset/train/0.bmp" in html.unescape(field)


def test_job_pages_show_no_python_literals_no_empty_log_and_a_prediction_download(demo) -> None:
    client = demo["client"]
    train_id = finished_train_job(str(demo["path"]))
    with get_sessionmaker().begin() as session:
        predict_id = jobs.create_job(
            session,
            jobs.JobRequest(kind="predict", params={"data_dir": str(demo["path"]), "csv": "test.csv"}, parent_id=train_id),
        ).id
        jobs.claim_job(session, predict_id, owner="test-worker", host="test-host")
        path = job_run_folder(jobs.get_job(session, predict_id)) / "predictions.csv"
        path.parent.mkdir(parents=True)
        path.write_text("ID,label\n./new_dataset/test/0.bmp,1\n")
        jobs.add_artifact(session, predict_id, "predictions", path)
        jobs.finish_job(session, predict_id, "test-worker", "succeeded")
        artifact_id = jobs.artifacts(session, predict_id)[0].id
    for job_id in (train_id, predict_id):
        page = client.get(f"/jobs/{job_id}").get_data(as_text=True)
        cells = re.findall(r"<tr><th>[\w ]+</th><td>(.*?)</td></tr>", page.split("<h2>Parameters</h2>")[1], re.S)
        assert cells and not {"None", "[]", "True", "False", ""} & {cell.strip() for cell in cells}, cells
        assert 'data-field="log_tail"' not in page and "No log lines yet" in page  # neither job row has a log tail
    link = re.search(r'<a class="button" id="download-predictions"[^>]* href="([^"]+)"', page).group(1)
    assert link == f"/jobs/{predict_id}/artifacts/{artifact_id}"
    assert client.get(link).get_data(as_text=True).startswith("ID,label")


def test_the_demo_folder_of_an_older_serve_gains_its_patients(tmp_path) -> None:
    """A demo folder written before the synthetic patients (no patient column) is written again at the next start;
    the images are the same bytes."""
    from core.engine.data.synth import write_synthetic_dataset
    from leukemia.commands.serve import DEMO_IMAGE_SIZE, demo_data_folder

    folder = tmp_path / "data" / "demo"
    write_synthetic_dataset(folder, train=200, valid=50, test=50, image_size=DEMO_IMAGE_SIZE, seed=0)
    image = (folder / "new_dataset" / "train" / "7.bmp").read_bytes()
    for name in ("train.csv", "valid.csv", "test_labels.csv"):
        rows = [line.rsplit(",", 1)[0] for line in (folder / name).read_text().splitlines()]
        (folder / name).write_text("\n".join(rows) + "\n")
    assert demo_data_folder(tmp_path) == folder
    assert (folder / "train.csv").read_text().splitlines()[0] == "Path,label,patient"
    assert (folder / "new_dataset" / "train" / "7.bmp").read_bytes() == image
    assert Path(folder / "test.csv").read_text().splitlines()[0] == "Path"


def test_evaluate_and_predict_jobs_log_what_they_read_and_found(app, folder_path) -> None:
    """The job page's log box of an evaluate or predict job holds its lines (the engine logs none of its own)."""
    from tests.test_retention import train_in_process
    from worker.tasks import run_next_job

    trained = train_in_process(folder_path, 1, None)
    with get_sessionmaker().begin() as session:
        evaluated = jobs.create_job(
            session,
            jobs.JobRequest(
                kind="evaluate", params={"data_dir": folder_path, "csv": "test_labels.csv", "device": "cpu"}, parent_id=trained
            ),
        ).id
        predicted = jobs.create_job(
            session,
            jobs.JobRequest(
                kind="predict", params={"data_dir": folder_path, "csv": "test.csv", "device": "cpu"}, parent_id=trained
            ),
        ).id
    run_next_job(evaluated)
    run_next_job(predicted)
    with get_sessionmaker().begin() as session:
        evaluate_row, predict_row = jobs.get_job(session, evaluated), jobs.get_job(session, predicted)
        evaluate_log, predict_log = evaluate_row.log_tail, predict_row.log_tail
        assert (evaluate_row.status, predict_row.status) == ("succeeded", "succeeded")
    lines = [line.split(" INFO ", 1)[1] for line in evaluate_log.splitlines()]
    assert lines[0] == f"job {evaluated} evaluate: best.pt of job {trained} on test_labels.csv of {folder_path}"
    assert re.fullmatch(
        rf"job {evaluated} evaluated 4 images at threshold 0\.5 \(default\): accuracy [\d.]+%, "
        r"balanced accuracy [\d.]+%, weighted F1 [\d.]+%",
        lines[-1],
    ), lines
    lines = [line.split(" INFO ", 1)[1] for line in predict_log.splitlines()]
    assert lines[0] == f"job {predicted} predict: best.pt of job {trained} on test.csv of {folder_path}"
    assert re.fullmatch(
        rf"job {predicted} predicted 4 images at threshold 0\.5 \(default\): \d ALL, \d hem; "
        r"predictions\.csv written",
        lines[-1],
    ), lines
