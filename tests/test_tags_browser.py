"""Notes and tags in headless Chromium on `leukemia web`: edit a finished run's notes and tags from its
page, follow a tag to the filtered job list, and compare two runs with their tags and notes shown
(screenshots compare-tags.png and job-notes.png for review)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_browser import ADMIN, SCREENSHOTS, browser  # noqa: F401  (the browser fixture)
from tests.web_helpers import REPO, console_errors, finished_train_job, free_port, log_in_page, wait_until_healthy

pytestmark = pytest.mark.timeout(300)


@pytest.fixture()
def web(tmp_path, monkeypatch):
    """`leukemia web` alone on a free port; this process shares its LEUKEMIA_HOME to make finished runs."""
    from core.service.db import reset_engines
    from core.service.settings import get_settings

    env = {**os.environ, "LEUKEMIA_HOME": str(tmp_path / "home"), "DATA_ROOTS": str(tmp_path / "data"),
           "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "API_TOKEN": "browser-token", "PYTHONUNBUFFERED": "1"}
    for key in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR", "SECRET_KEY"):
        env.pop(key, None)
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("LEUKEMIA_HOME", env["LEUKEMIA_HOME"])
    port = free_port()
    with (tmp_path / "web.log").open("w") as log:
        process = subprocess.Popen([sys.executable, "-m", "leukemia.cli", "web", "--port", str(port)], cwd=REPO,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}/api/health", process)
            get_settings.cache_clear()
            reset_engines()
            yield {"url": f"http://127.0.0.1:{port}", "data": str(tmp_path / "data" / "synth")}
        finally:
            process.terminate()
            process.wait(timeout=20)
            reset_engines()
            get_settings.cache_clear()
            print("--- web log (tail) ---\n" + "\n".join((tmp_path / "web.log").read_text().splitlines()[-25:]))


def test_tags_and_notes_are_edited_on_the_job_page_filter_the_list_and_show_in_compare(web, browser):  # noqa: F811
    screenshots = Path(os.environ.get("LEUKEMIA_SCREENSHOTS") or SCREENSHOTS)
    screenshots.mkdir(parents=True, exist_ok=True)
    baseline = finished_train_job(web["data"], epochs=3, accuracy=0.78)
    variant = finished_train_job(web["data"], epochs=3, accuracy=0.86)
    base = web["url"]
    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors = console_errors(page)
    try:
        log_in_page(page, base, *ADMIN)
        for job_id, tags, notes in ((baseline, "baseline, resnet18", "The reference run.\nLab defaults, 3 epochs."),
                                    (variant, "candidate, lr-0.01", "Higher learning rate.\nBetter valid accuracy <check>.")):
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
