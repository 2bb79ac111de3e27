"""The cross-validation page in headless Chromium, on a real worker and `leukemia web`: register the
C-NMC release tree (built from the real images), queue a 3-fold cross-validation from the form,
watch the folds finish on the page as it updates itself (no reload: what was typed into the ensemble
form stays), see the fold table, mean ± std and the per-fold curves, the folds marked in the job
list, queue the ensemble, then delete the cross-validation from its page."""

from __future__ import annotations

import pytest

from tests.release_helpers import build_release
from tests.test_browser import ADMIN, SCREENSHOTS, browser  # noqa: F401  (the browser fixture)
from tests.web_helpers import (
    console_errors,
    log_in_page,
    register_folder_page,
    web_and_worker,
)

pytestmark = pytest.mark.timeout(600)


def test_cross_validation_page(tmp_path, realdata_dir, browser) -> None:  # noqa: F811
    data_root = tmp_path / "data"
    build_release(realdata_dir, data_root / "C-NMC_Leukemia")
    settings = {
        "DATA_ROOTS": str(data_root),
        "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1],
        "API_TOKEN": "browser-token",
    }
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with web_and_worker(tmp_path, settings) as base:
        page = browser.new_page(viewport={"width": 1366, "height": 900}, accept_downloads=True)
        errors = console_errors(page)
        try:
            log_in_page(page, base, *ADMIN)
            register_folder_page(page, base, data_root / "C-NMC_Leukemia")

            page.click("nav >> text=Cross-validation")
            page.click("text=New cross-validation…")
            page.select_option('select[name="data_folder"]', index=1)
            page.fill('input[name="name"]', "C-NMC release, 3 folds")
            page.fill('input[name="epochs"]', "2")
            page.fill('input[name="batch_size"]', "8")
            page.fill('input[name="image_size"]', "48")
            page.select_option('select[name="device"]', "cpu")
            page.click("text=Queue cross-validation")
            page.wait_for_url("**/cross-validations/*")
            page.wait_for_selector("text=the release's 3 folds (subject-disjoint)")
            cv_url = page.url
            # The page swaps in its live regions (live.js) while folds run: no reload, so a person's
            # half-filled ensemble form and this marker both survive.
            page.evaluate("window.notReloaded = true")
            page.select_option('#ensemble select[name="kind"]', "predict")
            page.fill('#ensemble input[name="split"]', "typed while the folds run")
            assert page.locator("#ensemble-submit").is_disabled()
            page.wait_for_selector("#fold-table tbody tr:nth-child(1) .badge-succeeded", timeout=480_000)
            if page.locator("#fold-table tbody .badge-succeeded").count() < 3:  # caught during the run
                page.wait_for_selector("#cv-accuracy .scatterlayer .trace")
                page.screenshot(path=str(SCREENSHOTS / "cross-validation-running.png"), full_page=True)
            page.wait_for_selector("#fold-table tbody tr:nth-child(3) .badge-succeeded", timeout=480_000)
            page.wait_for_selector("#fold-table tbody tr:nth-child(2) .badge-succeeded")
            page.wait_for_selector("#out-of-fold")
            page.wait_for_selector("#ensemble-submit:not([disabled])")
            assert page.evaluate("window.notReloaded") is True and page.url == cv_url
            assert page.locator('#ensemble input[name="split"]').input_value() == "typed while the folds run"
            assert page.locator('#ensemble select[name="kind"]').input_value() == "predict"
            assert page.locator("#ensemble-wait").is_hidden() and page.locator("#oof-subjects tbody tr").count() > 0
            page.wait_for_selector("#cv-accuracy .main-svg")
            page.wait_for_selector("#cv-loss .main-svg")
            assert page.locator("#cv-accuracy .scatterlayer .trace").count() == 3  # one curve per fold
            assert " ± " in page.locator("#mean-std").inner_text()
            with page.expect_download() as download_info:
                page.click("#oof-download")
            assert len(open(download_info.value.path()).read().splitlines()) == 45  # header + 44 training images

            page.fill('#ensemble input[name="split"]', "final")
            page.check('#ensemble input[name="tta"]')
            page.click("text=Queue ensemble")
            page.wait_for_selector("text=with the 3 fold models on final")
            page.wait_for_selector("#ensemble li:has-text('predict on final with TTA')")
            page.wait_for_selector("#cv-accuracy .main-svg")
            page.screenshot(path=str(SCREENSHOTS / "cross-validation.png"), full_page=True)
            page.wait_for_selector("#ensemble-jobs .badge-succeeded", timeout=240_000)  # the list updates too

            cv_id = cv_url.rsplit("/", 1)[1]
            page.goto(f"{base}/")
            assert page.locator(f'a.cv-chip[href="/cross-validations/{cv_id}"]').count() == 4  # 3 folds, 1 ensemble
            page.wait_for_selector(f"a.cv-chip:has-text('CV {cv_id} · fold 2')")
            page.goto(cv_url)
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#delete-cv")
            page.wait_for_url("**/cross-validations")
            page.wait_for_selector(f".flash:has-text('Deleted cross-validation {cv_id} (4 jobs):')")
            assert page.locator(".flash-error").count() == 0
            assert not [e for e in errors if "Content Security Policy" in e], errors
        finally:
            page.close()
            for name in ("web", "worker"):
                print(f"--- {name} log (tail) ---\n" + "\n".join((tmp_path / f"{name}.log").read_text().splitlines()[-25:]))
