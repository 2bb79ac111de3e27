"""Issue 20's dashboard findings in headless Chromium against `leukemia web` (and a real worker for the
evaluate page): the job page draws its charts with the partial plotly bundle, waits for the first epoch
without nonsense axes, then draws epochs from 1 and accuracy 0–100%; file sizes in decimal units after the
live refresh; an evaluate page's per-subject table and the note beside coarse heat maps.
Screenshots go to $LEUKEMIA_SCREENSHOTS (else the test's tmp folder)."""

from __future__ import annotations

import pytest

from core.engine.progress import EpochRecord
from core.service import jobs
from core.service.db import get_sessionmaker
from tests.test_browser import browser  # noqa: F401  (the browser fixture)
from tests.test_formats import BIG, big_artifact
from tests.test_results_browser import api, finished, submit
from tests.web_helpers import (
    add_patients,
    logged_in_page,
    queued_job,
    screenshots_dir,
    shared_web_server,
    synthetic_folder,
    web_and_worker,
)

pytestmark = pytest.mark.timeout(600)
ADMIN = ("admin", "dashboard-browser-pass")
TOKEN = "results-token"  # what tests.test_results_browser.api sends


def epoch(number: int) -> EpochRecord:
    return EpochRecord(
        epoch=number,
        train_loss=0.7 / number,
        train_accuracy=0.55 + 0.1 * number,
        valid_loss=0.8 / number,
        valid_accuracy=0.5 + 0.1 * number,
        valid_balanced_accuracy=0.5 + 0.08 * number,
        valid_f1=0.6,
        confusion=[[3, 1], [1, 3]],
        lr=0.001,
        seconds=2.0,
        images_per_s=20.0,
    )


def test_job_page_waits_for_the_first_epoch_then_draws_with_the_partial_bundle(tmp_path, browser):  # noqa: F811
    shots = screenshots_dir(tmp_path)
    settings = {"ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "DATA_ROOTS": str(tmp_path / "data")}
    with shared_web_server(tmp_path, settings) as base:
        job_id = queued_job(str(synthetic_folder(tmp_path / "data")))
        with get_sessionmaker().begin() as session:
            jobs.claim_job(session, job_id, owner="w", host="browser-test-host")
        page, errors = logged_in_page(browser, base, *ADMIN)
        try:
            page.goto(f"{base}/jobs/{job_id}")
            page.wait_for_timeout(2500)  # a poll or so: still no epoch
            waiting = page.locator("[data-waiting]")
            assert waiting.count() == 2 and all(waiting.nth(i).is_visible() for i in range(2))
            assert "Waiting for the first epoch" in waiting.first.inner_text()
            assert page.locator("#loss-chart .main-svg, #accuracy-chart .main-svg").count() == 0  # no axes
            assert page.evaluate("Plotly.version").startswith("4.")
            assert page.evaluate("document.querySelector('script[src*=plotly]').src").endswith("/vendor/plotly-cartesian.min.js")
            page.screenshot(path=str(shots / "job-page-charts-empty.png"), full_page=True)

            with get_sessionmaker().begin() as session:
                for number in (1, 2, 3):
                    jobs.record_epoch(session, job_id, epoch(number))
            page.wait_for_selector("#accuracy-chart .main-svg", timeout=15_000)
            page.wait_for_selector("#confusion-chart .main-svg")
            assert not page.locator("[data-waiting]").first.is_visible()
            layout = page.evaluate("""() => { const a = document.getElementById('accuracy-chart');
                return {x: a.layout.xaxis.range, y: a.layout.yaxis.range, traces: a.data.length,
                        loss: document.getElementById('loss-chart').layout.xaxis.range,
                        heatmap: document.getElementById('confusion-chart').data[0].type}; }""")
            assert layout == {"x": [0.5, 3.5], "y": [0, 1.02], "traces": 3, "loss": [0.5, 3.5], "heatmap": "heatmap"}
            texts = "nodes => nodes.map((node) => node.textContent)"  # SVG text: no inner_text
            ticks = page.locator("#accuracy-chart .ytick text").evaluate_all(texts)
            assert ticks[0] == "0%" and ticks[-1] == "100%", ticks
            assert page.locator("#accuracy-chart .xtick text").evaluate_all(texts) == ["1", "2", "3"]
            assert page.locator("#metrics-body tr").first.locator("td").nth(6).inner_text() == "60.0%"  # F1

            big_artifact(job_id)
            with get_sessionmaker().begin() as session:
                jobs.finish_job(session, job_id, "w", "succeeded")
            page.wait_for_selector("#artifacts li:has-text('big.csv')", timeout=15_000)
            assert page.locator("#artifacts li", has_text="big.csv").inner_text() == "big.csv metrics · 131.1 MB"
            assert f"{BIG / 1024:.1f}" not in page.content()
            page.screenshot(path=str(shots / "job-page-charts-with-data.png"), full_page=True)
            assert not errors, errors
        finally:
            page.close()


def test_evaluate_page_shows_subjects_and_the_coarse_heat_map_note(tmp_path, browser):  # noqa: F811
    shots = screenshots_dir(tmp_path)
    data = synthetic_folder(tmp_path / "data")
    add_patients(data, {0: ["H1", "H2"], 1: ["7", "8"]})
    train_csv = data / "train.csv"  # other subjects in train: the split stays subject-disjoint
    train_csv.write_text(
        train_csv.read_text()
        .replace(",H1\n", ",H5\n")
        .replace(",H2\n", ",H6\n")
        .replace(",7\n", ",15\n")
        .replace(",8\n", ",16\n")
    )
    settings = {"DATA_ROOTS": str(tmp_path / "data"), "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "API_TOKEN": TOKEN}
    with web_and_worker(tmp_path, settings) as base:
        assert api(base, "POST", "/data-folders", {"path": str(data)})[0] == 201
        common = {"data_dir": str(data), "device": "cpu"}
        train_id = submit(base, "train", {**common, "epochs": 1, "image_size": 64, "batch_size": 4})
        trained = finished(base, train_id)
        assert trained["status"] == "succeeded", trained["error"]
        evaluate_id = submit(
            base, "evaluate", {**common, "csv": "valid.csv", "explain": "2", "threshold": 0.5}, parent_id=train_id
        )
        assert finished(base, evaluate_id)["status"] == "succeeded", (tmp_path / "worker.log").read_text()[-3000:]
        page, errors = logged_in_page(browser, base, *ADMIN)
        try:
            page.goto(f"{base}/jobs/{evaluate_id}")
            page.wait_for_selector("#subjects-card:not([hidden]) #subjects-table tbody tr")
            known = {line.rsplit(",", 1)[1] for line in (data / "valid.csv").read_text().splitlines()[1:]}
            rows = page.locator("#subjects-table tbody tr")
            assert page.locator("#subjects-count").inner_text() == f"{len(known)} subjects" and rows.count() == len(known)
            cells = [rows.nth(i).locator("td").all_inner_texts() for i in range(len(known))]
            assert {row[0] for row in cells} == known and len(known) >= 2
            assert all(row[1] == ("hem" if row[0].startswith("H") else "ALL") and row[3].endswith("%") for row in cells)
            accuracies = [float(row[3].rstrip("%")) for row in cells]
            assert accuracies == sorted(accuracies)  # worst first
            page.wait_for_selector("#gallery-card:not([hidden]) #gallery figure img")
            note = page.locator("#heatmap-note")
            assert note.is_visible() and note.inner_text() == (
                "At 64 px layer4 is 2×2 cells: the map can only say which quarter of the image pushes towards ALL, "
                "not which structure in the cell does."
            )
            page.locator("#subjects-card").scroll_into_view_if_needed()
            page.screenshot(path=str(shots / "evaluate-page-subjects-and-heatmap-note.png"), full_page=True)
            assert not errors, errors
        finally:
            page.close()
