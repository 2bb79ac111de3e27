"""In headless Chromium against `leukemia web` on a loopback port: a finished job's page shows its disk
use and retention; its Delete button asks first (dismissed: nothing happens), then deletes the job and
its files and flashes the space freed; the job list shows the disk column and the volume's free space.
Screenshots go to $LEUKEMIA_SCREENSHOTS (else the test's tmp folder)."""

from __future__ import annotations

import pytest

from tests.test_browser import browser  # noqa: F401  (the browser fixture)
from tests.test_retention import FILES, finished_job, row
from tests.web_helpers import (
    logged_in_page,
    screenshots_dir,
    shared_web_server,
    synthetic_folder,
)

pytestmark = pytest.mark.timeout(300)
ADMIN = ("admin", "browser-admin-pass")


def test_delete_button_confirms_deletes_and_flashes_the_space_freed(tmp_path, browser):  # noqa: F811
    from core.service.run_folders import job_run_folder

    shots = screenshots_dir(tmp_path)
    settings = {
        "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1],
        "API_TOKEN": "browser-token",
        "DATA_ROOTS": str(tmp_path / "data"),
    }
    with shared_web_server(tmp_path, settings) as base:  # `leukemia web` has migrated the database
        job_id = finished_job(str(synthetic_folder(tmp_path / "data")))
        run_folder = job_run_folder(row(job_id))
        page, errors = logged_in_page(browser, base, *ADMIN, height=800)
        try:
            page.goto(f"{base}/jobs/{job_id}")
            # It ended without a size; the job list's total measured its run folder.
            assert page.locator('.status-card [data-field="disk"]').inner_text() == "8.9 kB"
            assert "retention all (global)" in page.locator(".status-card").inner_text()
            page.screenshot(path=str(shots / "retention-job-page.png"), full_page=True)

            questions: list[str] = []
            page.once("dialog", lambda dialog: (questions.append(dialog.message), dialog.dismiss()))
            page.click("#delete")
            page.wait_for_timeout(300)
            assert questions == [f"Delete job {job_id} and its files? This cannot be undone."]
            assert row(job_id) is not None and run_folder.is_dir()

            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#delete")
            page.wait_for_selector(f"text=Deleted job {job_id}: 8.9 kB freed.")
            assert row(job_id) is None and not run_folder.exists()
            assert sum(FILES.values()) + 33 == 8930
            header = page.locator("#disk-use").inner_text()
            assert header.startswith("Disk: 0 B in run folders") and "free of" in header
            assert page.locator("table#jobs th", has_text="Disk").count() == 1
            page.screenshot(path=str(shots / "retention-job-list-after-delete.png"), full_page=True)
            assert not [e for e in errors if "Content Security Policy" in e], errors  # confirm.js is allowed
        finally:
            page.close()
