"""In headless Chromium against `leukemia web` on a loopback port: a finished job's page shows its disk
use and retention; its Delete button asks first (dismissed: nothing happens), then deletes the job and
its files and flashes the space freed; the job list shows the disk column and the volume's free space.
Screenshots go to $LEUKEMIA_SCREENSHOTS (else the test's tmp folder)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS
from tests.test_retention import FILES, finished_job, row
from tests.web_helpers import console_errors, free_port, log_in_page, synthetic_folder, wait_until_healthy

pytestmark = pytest.mark.timeout(300)
ADMIN = ("admin", "browser-admin-pass")


def test_delete_button_confirms_deletes_and_flashes_the_space_freed(tmp_path, monkeypatch):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    from core.service.db import reset_engines
    from core.service.run_dirs import job_run_dir
    from core.service.settings import get_settings

    shots = Path(os.environ.get("LEUKEMIA_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "LEUKEMIA_HOME": str(tmp_path / "home"), "ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1],
           "API_TOKEN": "browser-token", "DATA_ROOTS": str(tmp_path / "data"), "PYTHONUNBUFFERED": "1"}
    for key in ("DATABASE_URL", "BROKER_URL", "ARTIFACTS_DIR", "CACHE_DIR", "SECRET_KEY", "RETENTION"):
        env.pop(key, None)
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("LEUKEMIA_HOME", env["LEUKEMIA_HOME"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with (tmp_path / "web.log").open("w") as log:
        web = subprocess.Popen([sys.executable, "-m", "leukemia.cli", "web", "--port", str(port)], cwd=REPO, env=env,
                               stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_healthy(f"{base}/api/health", web)  # `leukemia web` has migrated the database
            get_settings.cache_clear()
            reset_engines()
            job_id = finished_job(str(synthetic_folder(tmp_path / "data")))
            run_dir = job_run_dir(row(job_id))
            with sync_playwright() as playwright:
                chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = chromium.new_page(viewport={"width": 1366, "height": 800})
                    errors = console_errors(page)
                    log_in_page(page, base, *ADMIN)
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
                    assert row(job_id) is not None and run_dir.is_dir()

                    page.once("dialog", lambda dialog: dialog.accept())
                    page.click("#delete")
                    page.wait_for_selector(f"text=Deleted job {job_id}: 8.9 kB freed.")
                    assert row(job_id) is None and not run_dir.exists()
                    assert sum(FILES.values()) + 33 == 8930
                    header = page.locator("#disk-use").inner_text()
                    assert header.startswith("Disk: 0 B in run folders") and "free of" in header
                    assert page.locator("table#jobs th", has_text="Disk").count() == 1
                    page.screenshot(path=str(shots / "retention-job-list-after-delete.png"), full_page=True)
                    assert not [e for e in errors if "Content Security Policy" in e], errors  # confirm.js is allowed
                finally:
                    chromium.close()
        finally:
            web.terminate()
            web.wait(timeout=20)
            reset_engines()
            get_settings.cache_clear()
            print("--- web log (tail) ---\n" + "\n".join((tmp_path / "web.log").read_text().splitlines()[-25:]))
