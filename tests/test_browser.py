"""End to end in headless Chromium: a real `leukemia worker` on the embedded broker and
`leukemia web` on a loopback port. Log in, register a synthetic folder, train, watch it live,
predict and download the CSV, cancel a running job, compare two runs; screenshots for review."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.web_helpers import (
    console_errors,
    log_in_page,
    register_folder_page,
    web_and_worker,
)

pytestmark = pytest.mark.timeout(420)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = REPO / "test-output" / "screenshots"
ADMIN = ("admin", "browser-test-pass")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    """`leukemia web` and `leukemia worker` subprocesses sharing a temporary LEUKEMIA_HOME."""
    from core.engine.data.synth import write_synthetic_dataset

    root = tmp_path_factory.mktemp("browser")
    data_root = root / "data"
    write_synthetic_dataset(data_root / "synth", train=16, valid=8, test=8, image_size=32, seed=3)
    settings = {
        "DATA_ROOTS": str(data_root),
        "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1],
        "API_TOKEN": "browser-token",
    }
    with web_and_worker(root, settings) as url:
        yield {"url": url, "data": data_root / "synth", "logs": root}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def wait_for_status(page, status: str, seconds: float) -> None:
    """The badge changes on its own (the page polls the API); no reload."""
    page.wait_for_selector(f'.page-head [data-field="status"].badge-{status}', timeout=seconds * 1000)


def submit_train(page, base: str, epochs: int) -> int:
    page.goto(f"{base}/jobs/new/train")
    page.select_option('select[name="data_folder"]', label=page.locator('select[name="data_folder"] option').nth(1).inner_text())
    page.fill('input[name="epochs"]', str(epochs))
    page.fill('input[name="batch_size"]', "4")
    page.fill('input[name="image_size"]', "32")
    page.select_option('select[name="device"]', "cpu")
    page.click("text=Queue train job")
    page.wait_for_url("**/jobs/*")
    return int(page.url.rsplit("/", 1)[1])


def test_dashboard_end_to_end(service, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = service["url"]
    page = browser.new_page(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    errors = console_errors(page)
    try:
        log_in_page(page, base, *ADMIN)
        register_folder_page(page, base, service["data"])

        first = submit_train(page, base, epochs=2)
        wait_for_status(page, "succeeded", 180)
        # (the page's CSP forbids eval, so waits use selectors, not wait_for_function)
        page.wait_for_selector("#metrics-body tr:nth-child(2)")
        assert page.locator("#metrics-body tr").count() == 2
        page.wait_for_selector("#loss-chart .main-svg")
        page.wait_for_selector("#confusion-chart .main-svg")
        page.wait_for_selector("#artifacts a:has-text('best.pt')")
        assert page.locator('[data-field="progress-text"]').inner_text() == "100%"
        page.screenshot(path=str(SCREENSHOTS / "job-detail.png"), full_page=True)

        page.click("text=Predict…")
        page.select_option('select[name="data_folder"]', index=1)
        page.fill('input[name="csv"]', "test.csv")
        page.select_option('select[name="device"]', "cpu")
        page.click("text=Queue predict job")
        page.wait_for_url("**/jobs/*")
        wait_for_status(page, "succeeded", 120)
        with page.expect_download() as download_info:
            page.click("#artifacts a:has-text('predictions.csv')")
        predictions = list(csv.DictReader(io.StringIO(Path(download_info.value.path()).read_text())))
        tests = list(csv.DictReader((service["data"] / "test.csv").open()))
        assert len(predictions) == len(tests) == 8
        assert [p["ID"] for p in predictions] == [row["Path"] for row in tests]  # the submission's ID is the CSV's Path
        assert {p["label"] for p in predictions} <= {"0", "1"}

        second = submit_train(page, base, epochs=40)
        wait_for_status(page, "running", 120)
        page.wait_for_selector('.status-card [data-field="epoch"]:has-text("/40")', timeout=120_000)
        page.click("#cancel")
        wait_for_status(page, "cancelled", 120)
        assert page.locator("#retry").is_visible()

        page.goto(f"{base}/compare?ids={first}&ids={second}")
        page.wait_for_selector("#compare-loss .main-svg")
        page.wait_for_selector("#compare-accuracy .main-svg")
        page.screenshot(path=str(SCREENSHOTS / "compare.png"), full_page=True)

        page.goto(f"{base}/")
        page.wait_for_selector(f'tr[data-job-id="{second}"] .badge-cancelled')
        page.screenshot(path=str(SCREENSHOTS / "job-list.png"), full_page=True)
        page.goto(f"{base}/jobs/new/train")
        page.screenshot(path=str(SCREENSHOTS / "train-form.png"), full_page=True)
        page.goto(f"{base}/data-folders")
        page.screenshot(path=str(SCREENSHOTS / "data-folders.png"), full_page=True)
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        page.close()
        for name in ("web", "worker"):
            print(f"--- {name} log (tail) ---\n" + "\n".join((service["logs"] / f"{name}.log").read_text().splitlines()[-25:]))
