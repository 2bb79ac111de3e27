"""Notes and tags in headless Chromium on `leukemia web`: edit a finished run's notes and tags from its
page, follow a tag to the filtered job list, and compare two runs with their tags and notes shown
(screenshots compare-tags.png and job-notes.png for review)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_browser import ADMIN, SCREENSHOTS, browser  # noqa: F401  (the browser fixture)
from tests.web_helpers import finished_train_job, logged_in_page, shared_web_server

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def web(tmp_path):
    """`leukemia web` alone on a free port; this process shares its LEUKEMIA_HOME to make finished runs."""
    settings = {
        "DATA_ROOTS": str(tmp_path / "data"),
        "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1],
        "API_TOKEN": "browser-token",
    }
    (tmp_path / "data").mkdir()
    with shared_web_server(tmp_path, settings) as base:
        yield {"url": base, "data": str(tmp_path / "data" / "synth")}


def test_tags_and_notes_are_edited_on_the_job_page_filter_the_list_and_show_in_compare(web, browser):  # noqa: F811
    screenshots = Path(os.environ.get("LEUKEMIA_SCREENSHOTS") or SCREENSHOTS)
    screenshots.mkdir(parents=True, exist_ok=True)
    baseline = finished_train_job(web["data"], epochs=3, accuracy=0.78)
    variant = finished_train_job(web["data"], epochs=3, accuracy=0.86)
    base = web["url"]
    page, errors = logged_in_page(browser, base, *ADMIN)
    try:
        for job_id, tags, notes in (
            (baseline, "baseline, resnet18", "The reference run.\nLab defaults, 3 epochs."),
            (variant, "candidate, lr-0.01", "Higher learning rate.\nBetter valid accuracy <check>."),
        ):
            page.goto(f"{base}/jobs/{job_id}")
            page.click("#edit-options summary")
            page.fill('#edit-options input[name="tags"]', tags)
            page.fill('#edit-options textarea[name="description"]', notes)
            page.click("#save-options")
            page.wait_for_selector(f"text=Job {job_id} edited")
            # As text (escaped), its line break kept by white-space: pre-wrap.
            assert page.locator("#notes").evaluate("e => [e.textContent, getComputedStyle(e).whiteSpace]") == [notes, "pre-wrap"]
        page.screenshot(path=str(screenshots / "job-notes.png"), full_page=True)

        page.click("#tags >> text=lr-0.01")  # a tag is a link to the job list filtered by it
        page.wait_for_selector("h1:has-text('Jobs')")
        assert page.locator("table#jobs tbody tr").count() == 1
        assert page.locator(f'tr[data-job-id="{variant}"]').count() == 1
        assert page.input_value('input[name="tag"]') == "lr-0.01"

        page.goto(f"{base}/compare?ids={baseline},{variant}")
        page.wait_for_selector("#compare-accuracy .main-svg")
        rows = page.locator("#compare tbody tr")
        assert rows.nth(0).locator("td.tags").inner_text().split() == ["baseline", "resnet18"]
        assert rows.nth(1).locator("td.notes-text").text_content() == "Higher learning rate.\nBetter valid accuracy <check>."
        legend = page.locator("#compare-accuracy .legendtext").all_text_contents()
        assert legend == [f"#{baseline} [baseline, resnet18]", f"#{variant} [candidate, lr-0.01]"]
        page.screenshot(path=str(screenshots / "compare-tags.png"), full_page=True)
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        page.close()
