"""The tour's pages in headless Chromium against `leukemia web` (issue 23): a cross-validation queued from its
form on a synthetic folder waits for a fold's first epoch before drawing axes, then draws epochs from 1 and
accuracy 0–100%; the CSV names offered beside the data folder follow the folder chosen and fill the CSV box; a
predict page shows its download button once the job has written predictions.csv, and the log box only when
there are lines. Screenshots go to $LEUKEMIA_SCREENSHOTS (else the test's tmp folder)."""

from __future__ import annotations

import pytest

from core.engine.progress import EpochRecord
from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.run_folders import job_run_folder
from tests.test_browser import browser  # noqa: F401  (the browser fixture)
from tests.web_helpers import (
    finished_train_job,
    logged_in_page,
    register_folder_page,
    screenshots_dir,
    shared_web_server,
)

pytestmark = pytest.mark.timeout(600)
ADMIN = ("admin", "tour-browser-pass")
CHART_RANGES = """() => { const a = document.getElementById('cv-accuracy'), l = document.getElementById('cv-loss');
    return {x: a.layout.xaxis.range, y: a.layout.yaxis.range, loss: l.layout.xaxis.range}; }"""


def synthetic(root, name: str):
    """A small synthetic folder with patients (4 ALL, 2 hem): enough subjects for three folds."""
    from core.engine.data.synth import write_synthetic_dataset

    return write_synthetic_dataset(root / name, train=40, valid=10, test=10, image_size=32, seed=2).out_dir


def test_cross_validation_charts_wait_for_a_folds_first_epoch(tmp_path, browser):  # noqa: F811
    shots = screenshots_dir(tmp_path)
    folder = synthetic(tmp_path / "data", "demo")
    settings = {"ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "DATA_ROOTS": str(tmp_path / "data")}
    with shared_web_server(tmp_path, settings) as base:
        page, errors = logged_in_page(browser, base, *ADMIN)
        try:
            register_folder_page(page, base, folder)
            page.goto(f"{base}/cross-validations/new")
            page.fill('input[name="epochs"]', "3")  # the lone folder is chosen already
            page.click("text=Queue cross-validation")
            page.wait_for_selector("text=3 subject-grouped folds (seed 0)")
            page.wait_for_timeout(2500)  # a poll or so: no fold has an epoch (no worker runs here)
            waiting = page.locator("[data-waiting]")
            assert waiting.count() == 2 and all(waiting.nth(i).is_visible() for i in range(2))
            assert page.locator("#cv-accuracy .main-svg, #cv-loss .main-svg").count() == 0  # no axes
            page.screenshot(path=str(shots / "cv-waiting.png"), full_page=True)

            with get_sessionmaker().begin() as session:
                fold_job = min(job.id for job in jobs.list_jobs(session, per_page=10)[0])
                jobs.claim_job(session, fold_job, owner="w", host="browser-test-host")
                for number in (1, 2):
                    jobs.record_epoch(
                        session,
                        fold_job,
                        EpochRecord(
                            epoch=number,
                            train_loss=0.6 / number,
                            train_accuracy=0.6,
                            valid_loss=0.7 / number,
                            valid_accuracy=0.5 + 0.2 * number,
                            valid_balanced_accuracy=0.6,
                            valid_f1=0.6,
                            confusion=[[2, 1], [1, 2]],
                            lr=0.001,
                            seconds=1.0,
                            images_per_s=10.0,
                        ),
                    )
            page.wait_for_selector("#cv-accuracy .main-svg", timeout=15_000)
            assert not waiting.first.is_visible()
            assert page.evaluate(CHART_RANGES) == {"x": [0.5, 2.5], "y": [0, 1.02], "loss": [0.5, 2.5]}
            page.screenshot(path=str(shots / "cv-first-epochs.png"), full_page=True)
            assert not errors, errors
        finally:
            page.close()


def test_csv_names_follow_the_folder_and_the_predict_page_offers_its_csv(tmp_path, browser):  # noqa: F811
    shots = screenshots_dir(tmp_path)
    first, second = synthetic(tmp_path / "data", "first"), synthetic(tmp_path / "data", "second")
    (second / "test.csv").rename(second / "final_test.csv")
    settings = {"ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "DATA_ROOTS": str(tmp_path / "data")}
    with shared_web_server(tmp_path, settings) as base:
        page, errors = logged_in_page(browser, base, *ADMIN)
        try:
            register_folder_page(page, base, first)
            register_folder_page(page, base, second)
            page.wait_for_selector("text=Data folder second registered and checked.")
            train_id = finished_train_job(str(first))
            page.goto(f"{base}/jobs/new/predict?parent={train_id}")  # the parent's folder is chosen
            box = page.locator('input[name="csv"]')
            assert box.input_value() == "test.csv"
            assert page.locator(".split-choices:visible button").all_inner_texts()[:2] == ["test.csv", "test"]
            page.select_option('select[name="data_folder"]', label=f"second ({second}) · 32 px images")
            assert box.input_value() == "final_test.csv"  # the preset follows the folder until someone picks
            assert page.locator(".split-choices:visible button").first.inner_text() == "final_test.csv"
            page.click(".split-choices:visible button:text-is('valid.csv')")
            assert box.input_value() == "valid.csv"
            page.select_option('select[name="data_folder"]', label=f"first ({first}) · 32 px images")
            assert box.input_value() == "valid.csv"  # a pick is kept
            page.screenshot(path=str(shots / "predict-form.png"), full_page=True)

            with get_sessionmaker().begin() as session:
                predict_id = jobs.create_job(
                    session,
                    jobs.JobRequest(kind="predict", params={"data_dir": str(first), "csv": "test.csv"}, parent_id=train_id),
                ).id
                jobs.claim_job(session, predict_id, owner="w", host="browser-test-host")
            page.goto(f"{base}/jobs/{predict_id}")
            assert page.locator("#download-predictions").is_hidden()
            assert page.locator('[data-field="log_tail"]').is_hidden()
            assert page.locator('[data-field="log_empty"]').is_visible()
            with get_sessionmaker().begin() as session:
                job = jobs.get_job(session, predict_id)
                path = job_run_folder(job) / "predictions.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("ID,label\n./new_dataset/test/0.bmp,1\n")
                jobs.add_artifact(session, predict_id, "predictions", path)
                jobs.heartbeat(session, predict_id, "w", log_tail="12:00:00 INFO job 2 predicted 1 image")
                jobs.finish_job(session, predict_id, "w", "succeeded")
            page.wait_for_selector("#download-predictions:visible", timeout=15_000)  # no reload: the page polls
            assert page.locator('[data-field="log_tail"]').inner_text() == "12:00:00 INFO job 2 predicted 1 image"
            assert page.locator('[data-field="log_empty"]').is_hidden()
            with page.expect_download() as download:
                page.click("#download-predictions")
            assert download.value.suggested_filename == "predictions.csv"
            assert open(download.value.path()).read() == "ID,label\n./new_dataset/test/0.bmp,1\n"
            page.screenshot(path=str(shots / "predict-page.png"), full_page=True)
            assert not errors, errors
        finally:
            page.close()
