"""The live job list, job and cross-validation pages in headless Chromium against `leukemia web` (issue 25): with no reload,
the page swaps in the regions GET .../live draws as the rows change (the test writes them, as a worker does),
keeps what a person is doing (focus on a button, text typed into the ensemble form) and the elements that did not
change (the progress bar slides, it is not redrawn; a job list's rows stay as a new job's row is added above them),
fetches the metrics for its charts only when an epoch is added, and stops asking once the job, every fold or every
job the list shows has finished."""

from __future__ import annotations

import pytest

from core.service import jobs
from core.service.db import get_sessionmaker
from tests.test_browser import browser  # noqa: F401  (the browser fixture)
from tests.test_cv_delete import EPOCH, finished_cv, requeue
from tests.web_helpers import logged_in_page, queued_job, screenshots_dir, shared_web_server, synthetic_folder

pytestmark = pytest.mark.timeout(300)
ADMIN = ("admin", "live-browser-pass")
POLL_S = 2  # web.views.POLL_INTERVAL_MS, the cross-validation page's POLL_INTERVAL_MS


def requests_to(page, ending: str) -> list[str]:
    """The URLs the page asks for that end with `ending`, from now on."""
    seen: list[str] = []
    page.on("request", lambda request: seen.append(request.url) if request.url.endswith(ending) else None)
    return seen


def asks_no_more(page, seen: list[str]) -> None:
    """Nothing more asked for over two polls' time."""
    before = len(seen)
    page.wait_for_timeout(2 * POLL_S * 1000 + 500)
    assert len(seen) == before, seen[before:]


def test_a_running_jobs_page_follows_it_keeps_focus_and_stops_when_it_ends(tmp_path, browser):  # noqa: F811
    shots = screenshots_dir(tmp_path)
    settings = {"ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "DATA_ROOTS": str(tmp_path / "data")}
    with shared_web_server(tmp_path, settings) as base:
        job_id = queued_job(str(synthetic_folder(tmp_path / "data")))
        page, errors = logged_in_page(browser, base, *ADMIN)
        try:
            live, metrics = requests_to(page, f"/jobs/{job_id}/live"), requests_to(page, f"/api/jobs/{job_id}/metrics")
            page.goto(f"{base}/jobs/{job_id}")
            assert page.locator('.page-head [data-field="status"]').inner_text() == "queued"
            page.evaluate("window.notReloaded = true; window.bar = document.querySelector('[data-field=progress-fill]')")
            page.focus("#cancel")
            page.wait_for_timeout(POLL_S * 1000 + 500)
            assert len(live) >= 1 and len(metrics) == 1  # the charts' first draw; nothing new since

            with get_sessionmaker().begin() as session:
                jobs.claim_job(session, job_id, owner="w", host="live-browser-host")
                jobs.heartbeat(session, job_id, "w", progress=0.25, log_tail="12:00:00 INFO started")
            page.wait_for_selector('.page-head [data-field="status"].badge-running', timeout=10_000)
            page.wait_for_selector('.status-card [data-field="worker"]:has-text("live-browser-host")')
            assert page.locator('.status-card [data-field="progress-text"]').inner_text() == "25%"
            assert page.locator('[data-field="log_tail"]').inner_text() == "12:00:00 INFO started"
            assert len(metrics) == 1  # no epoch yet: the charts were not fetched again

            with get_sessionmaker().begin() as session:
                jobs.record_epoch(session, job_id, EPOCH)
                jobs.heartbeat(session, job_id, "w", progress=0.5, epoch=1, epochs_total=2)
            page.wait_for_selector('.status-card [data-field="epoch"]:has-text("1/2")', timeout=10_000)
            page.wait_for_selector("#metrics-body tr td:text-is('75.0%')")
            page.wait_for_selector("#accuracy-chart .main-svg")
            assert len(metrics) == 2  # the new epoch, once
            # The swaps changed what differed: the same bar, slid to 50%, and the focused button kept its focus.
            assert page.evaluate("window.bar === document.querySelector('[data-field=progress-fill]')")
            assert page.evaluate("window.bar.style.width") == "50%"
            assert page.evaluate("document.activeElement.id") == "cancel"
            page.screenshot(path=str(shots / "live-job-running.png"), full_page=True)

            with get_sessionmaker().begin() as session:
                jobs.finish_job(session, job_id, "w", "succeeded")
            page.wait_for_selector('.page-head [data-field="status"].badge-succeeded', timeout=10_000)
            page.wait_for_selector("#delete")
            assert page.locator("#cancel").count() == 0 and page.locator(".actions a:has-text('Predict…')").is_visible()
            assert page.locator('.status-card [data-field="finished"]').inner_text() != "—"
            asks_no_more(page, live)
            assert page.evaluate("window.notReloaded") is True
            assert not errors, errors
        finally:
            page.close()


def test_a_cross_validations_page_follows_its_folds_keeps_the_form_and_stops(tmp_path, browser):  # noqa: F811
    settings = {"ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "DATA_ROOTS": str(tmp_path / "data")}
    with shared_web_server(tmp_path, settings) as base:
        (tmp_path / "data").mkdir()
        cv_id, ids = finished_cv(str(tmp_path / "data"), ensemble=False, failed=(1,))
        requeue(ids[1])  # fold 1 queued again
        page, errors = logged_in_page(browser, base, *ADMIN)
        try:
            live = requests_to(page, f"/cross-validations/{cv_id}/live")
            page.goto(f"{base}/cross-validations/{cv_id}")
            assert page.locator("#ensemble-submit").is_disabled() and page.locator("#ensemble-wait").is_visible()
            page.evaluate("window.notReloaded = true")
            page.fill('#ensemble input[name="split"]', "typed while fold 1 runs")
            page.wait_for_timeout(POLL_S * 1000 + 500)
            assert len(live) >= 1

            with get_sessionmaker().begin() as session:
                jobs.claim_job(session, ids[1], owner="w", host="h")
                jobs.record_epoch(session, ids[1], EPOCH)
                jobs.finish_job(session, ids[1], "w", "succeeded")
            page.wait_for_selector("#fold-table tbody tr:nth-child(2) .badge-succeeded", timeout=10_000)
            page.wait_for_selector("#ensemble-submit:not([disabled])")
            assert page.locator("#ensemble-wait").count() == 0
            assert page.locator("#cv-accuracy .scatterlayer .trace").count() == 2  # both folds' curves
            assert page.locator('#ensemble input[name="split"]').input_value() == "typed while fold 1 runs"
            assert page.evaluate("document.activeElement.name") == "split"
            asks_no_more(page, live)
            assert page.evaluate("window.notReloaded") is True
            assert not errors, errors
        finally:
            page.close()


def test_the_job_list_follows_its_rows_adds_new_jobs_keeps_the_filter_and_stops(tmp_path, browser):  # noqa: F811
    settings = {"ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "DATA_ROOTS": str(tmp_path / "data")}
    with shared_web_server(tmp_path, settings) as base:
        folder = str(synthetic_folder(tmp_path / "data"))
        first = queued_job(folder)
        page, errors = logged_in_page(browser, base, *ADMIN, height=240)  # short: the list scrolls
        try:
            live, api = requests_to(page, "/jobs/live?kind=train&page=1"), requests_to(page, "/api/jobs")
            page.goto(f"{base}/?kind=train")
            row = f"#job-row-{first}"
            assert page.locator(f"{row} [data-field=status]").inner_text() == "queued"
            page.evaluate(f"window.notReloaded = true; window.row = document.querySelector('{row}')")
            page.fill('.filters input[name="tag"]', "typed")  # a filter typed, not yet sent, keeps focus
            assert page.evaluate("window.scrollTo(0, 60); window.scrollY") == 60

            with get_sessionmaker().begin() as session:
                jobs.claim_job(session, first, owner="w", host="h")
                jobs.heartbeat(session, first, "w", progress=0.5, epoch=1, epochs_total=2)
            page.wait_for_selector(f"{row} [data-field=status].badge-running", timeout=10_000)
            assert page.locator(f"{row} [data-field=progress-text]").inner_text() == "50%"
            assert page.locator(f"{row} [data-field=epoch]").inner_text() == "1/2"
            assert abs(page.evaluate("window.scrollY") - 60) <= 10  # kept, as near as the row's new height allows

            second = queued_job(folder)  # a new job of the filter: its row comes on top, the first row stays itself
            page.wait_for_selector(f"#job-row-{second} [data-field=status].badge-queued", timeout=10_000)
            assert page.locator("table#jobs tbody tr").evaluate_all("rows => rows.map((r) => r.dataset.jobId)") == [
                str(second),
                str(first),
            ]
            assert page.locator("h1 [data-live=total]").inner_text() == "(2)"
            assert page.evaluate(f"window.row === document.querySelector('{row}')")
            assert page.evaluate("document.activeElement.name") == "tag"
            assert page.locator('.filters input[name="tag"]').input_value() == "typed"

            with get_sessionmaker().begin() as session:
                jobs.finish_job(session, first, "w", "succeeded")
                jobs.request_cancel(session, second)
            page.wait_for_selector(f"#job-row-{second} [data-field=status].badge-cancelled", timeout=10_000)
            page.wait_for_selector(f"{row} [data-field=status].badge-succeeded")
            asks_no_more(page, live)  # nothing shown can change: no more polls
            assert len(live) >= 3 and api == [] and page.evaluate("window.notReloaded") is True
            assert not errors, errors
        finally:
            page.close()
