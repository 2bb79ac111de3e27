"""Early stopping in headless Chromium on `leukemia web`: a job page open while its run stops early
turns to "succeeded (stopped early at epoch 2)" with the reason, by polling alone; a sweep's job list
names its median rule and why each point stopped (screenshots job-stopped-early.png, sweep-median-rule.png)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_browser import ADMIN, SCREENSHOTS, browser  # noqa: F401  (the browser fixture)
from tests.test_early_stopping import record
from tests.test_tags_browser import web  # noqa: F401  (`leukemia web` sharing this process's LEUKEMIA_HOME)
from tests.web_helpers import console_errors, log_in_page

pytestmark = pytest.mark.timeout(300)


def test_a_run_stopping_early_shows_on_its_page_and_in_its_sweep(web, browser):  # noqa: F811
    from core.service import jobs
    from core.service.db import get_sessionmaker
    from core.service.sweep_stopping import MedianStopRule

    screenshots = Path(os.environ.get("LEUKEMIA_SCREENSHOTS") or SCREENSHOTS)
    screenshots.mkdir(parents=True, exist_ok=True)
    base_params = {"data_dir": web["data"], "epochs": 6, "image_size": 32}
    with get_sessionmaker().begin() as session:
        sweep, points = jobs.create_sweep(
            session,
            jobs.SweepRequest(
                kind="train",
                base_params=base_params,
                grid={"lr": [0.001, 0.0003]},
                early_stopping=MedianStopRule(metric="valid_accuracy"),
            ),
        )
        running, other = points[0].id, points[1].id
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, running, owner="test-worker", host="test-host")
        jobs.record_epoch(session, running, record(1, 0.6, 0.7))
        jobs.heartbeat(session, running, "test-worker", progress=1 / 6, epoch=1, epochs_total=6)
    reason = "stopped by the sweep's median rule at epoch 2: valid_accuracy 0.55 < median 0.8 of 2 finished points"

    page = browser.new_page(viewport={"width": 1366, "height": 900})
    errors = console_errors(page)
    try:
        log_in_page(page, web["url"], *ADMIN)
        page.goto(f"{web['url']}/jobs/{running}")
        assert page.locator("[data-field=status]").first.inner_text() == "running"
        assert page.locator("[data-field=stopped]").is_hidden() and page.locator("[data-field=stop_reason]").is_hidden()
        with get_sessionmaker().begin() as session:  # what the worker writes when the rule stops the point
            jobs.record_epoch(session, running, record(2, 0.55, 0.69))
            jobs.heartbeat(session, running, "test-worker", progress=1.0, epoch=2, epochs_total=2, eta_s=0.0)
            jobs.record_early_stop(session, running, "test-worker", 2, reason)
            jobs.finish_job(session, running, "test-worker", "succeeded")
        page.wait_for_selector("[data-field=stopped]:has-text('(stopped early at epoch 2)')", timeout=30_000)
        assert page.locator("[data-field=status]").first.inner_text() == "succeeded"
        assert page.locator("[data-field=stopped]").get_attribute("title") == reason
        assert page.locator("p[data-field=stop_reason]").inner_text() == reason
        assert page.locator("[data-field=epoch]").first.inner_text() == "2/2"  # no unrun epochs promised
        page.screenshot(path=str(screenshots / "job-stopped-early.png"), full_page=True)

        page.goto(f"{web['url']}/?sweep={sweep.id}")
        assert page.locator("#sweep-rule").inner_text() == (
            "median stopping rule on valid_accuracy: acts from epoch 2 once 2 point(s) have finished"
        )
        row = page.locator(f'tr[data-job-id="{running}"]')
        assert "(stopped early at epoch 2)" in row.inner_text() and reason in row.inner_text()
        assert page.locator(f'tr[data-job-id="{other}"] [data-field=stopped]').is_hidden()
        page.screenshot(path=str(screenshots / "sweep-median-rule.png"), full_page=True)
        # Scripts ran without an error (the one 404 in the console is Chromium's /favicon.ico).
        assert not [e for e in errors if not e.startswith("Failed to load resource")], errors
    finally:
        page.close()
