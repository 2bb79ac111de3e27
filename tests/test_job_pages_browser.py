"""Issue 20's job pages in headless Chromium, on a real worker and `leukemia web`: a running job's times
and duration kept current without a reload, the Evaluate… form opened from the job preset to its data
folder, the model's page linking to the evaluation, and compare with a train and an evaluate job
(screenshots job-times-children.png, compare-train-evaluate.png)."""

from __future__ import annotations

import pytest

from tests.test_browser import ADMIN, SCREENSHOTS, browser, service, submit_train, wait_for_status  # noqa: F401
from tests.web_helpers import console_errors, log_in_page, register_folder_page

pytestmark = pytest.mark.timeout(420)


def fact(page, field: str) -> str:
    return page.locator(f'.status-card [data-field="{field}"]').inner_text()


def test_job_times_children_and_compare_with_an_evaluation(service, browser):  # noqa: F811
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = service["url"]
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors = console_errors(page)
    try:
        log_in_page(page, base, *ADMIN)
        register_folder_page(page, base, service["data"])
        model = submit_train(page, base, epochs=3)
        assert fact(page, "finished") == "—"  # the page was drawn before the job ended
        page.evaluate("window.notReloaded = true")
        wait_for_status(page, "succeeded", 240)
        page.wait_for_selector('.status-card [data-field="finished"]:not(:has-text("—"))')
        assert page.evaluate("window.notReloaded") is True  # the facts changed in place (live.js), no reload
        created, started, finished = (fact(page, name) for name in ("created", "started", "finished"))
        assert created <= started <= finished and len(finished) == len("2024-05-01 12:00:00")
        assert fact(page, "duration")[-1] == "s"  # "12s" or "1m 05s": the duration filter's format

        page.click("text=Evaluate…")
        page.wait_for_url("**/jobs/new/evaluate?parent=*")
        folder = page.locator('select[name="data_folder"]')
        assert folder.input_value() != "" and "synth" in folder.locator("option:checked").inner_text()
        page.fill('input[name="csv"]', "valid.csv")
        page.select_option('select[name="device"]', "cpu")
        page.click("text=Queue evaluate job")
        page.wait_for_url("**/jobs/*")
        evaluation = int(page.url.rsplit("/", 1)[1])
        wait_for_status(page, "succeeded", 180)

        page.goto(f"{base}/jobs/{model}")
        page.wait_for_selector(f'#children a[href="/jobs/{evaluation}"]')
        assert "valid.csv" in page.locator("#children").inner_text()
        page.wait_for_selector("#loss-chart .main-svg")
        page.screenshot(path=str(SCREENSHOTS / "job-times-children.png"), full_page=True)

        page.goto(f"{base}/compare?ids={model}&ids={evaluation}")
        page.wait_for_selector("#compare-roc .main-svg")
        rows = page.locator("#compare-table tbody tr")
        assert rows.count() == 2
        for index in range(2):
            assert rows.nth(index).locator('[data-field="folder"]').inner_text() == "synth"
            assert rows.nth(index).locator('[data-measure="accuracy"]').inner_text().endswith("%")
        page.screenshot(path=str(SCREENSHOTS / "compare-train-evaluate.png"), full_page=True)
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        page.close()
        for name in ("web", "worker"):
            print(f"--- {name} log (tail) ---\n" + "\n".join((service["logs"] / f"{name}.log").read_text().splitlines()[-25:]))
