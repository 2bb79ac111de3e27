"""The webhooks pages in headless Chromium against a real `leukemia web` and `leukemia worker`: an admin
adds two webhooks, sends tests, and the delivery history shows a retry after a 500 that was then
delivered, and a refused receiver failed after its last attempt; screenshots for review."""

from __future__ import annotations

import time

import pytest

from tests.test_browser import ADMIN, SCREENSHOTS, browser  # noqa: F401  (the browser fixture)
from tests.test_webhooks import Receiver
from tests.web_helpers import console_errors, free_port, log_in_page, web_and_worker

pytestmark = pytest.mark.timeout(300)


def add_webhook_page(page, base: str, url: str, events: list[str]) -> str:
    """Add a webhook through the form; returns the secret the page shows once."""
    page.goto(f"{base}/admin/webhooks")
    page.fill('input[name="url"]', url)
    for box in page.locator('input[name="events"]').all():
        box.set_checked(box.get_attribute("value") in events)
    page.click("text=Add webhook")
    return page.locator("#new-webhook-secret .secret-value").inner_text()


def test_delivery_history_page(tmp_path, browser) -> None:  # noqa: F811
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    receiver = Receiver(codes=(500,))
    settings = {
        "ADMIN_USERNAME": ADMIN[0],
        "ADMIN_PASSWORD": ADMIN[1],
        "API_TOKEN": "browser-token",
        "DATA_ROOTS": str(tmp_path),
        "WEBHOOK_RETRY_SECONDS": "1",
        "WEBHOOK_MAX_ATTEMPTS": "2",
        "WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1",
    }  # the receivers listen on loopback
    try:
        with web_and_worker(tmp_path, settings) as base:
            page = browser.new_page(viewport={"width": 1366, "height": 768})
            errors = console_errors(page)
            log_in_page(page, base, *ADMIN)
            receiver.secret = add_webhook_page(page, base, receiver.url, ["job.failed", "worker.lost"])
            add_webhook_page(page, base, f"http://127.0.0.1:{free_port()}/nobody", ["job.succeeded"])
            page.fill('input[name="url"]', "ftp://example.org/hook")
            page.click("text=Add webhook")
            assert (
                "url: 'ftp://example.org/hook' is not an http:// or https:// address" in page.locator("#error-url").inner_text()
            )

            rows = page.locator("#webhooks tbody tr")
            assert rows.count() == 2
            for index in (1, 0):  # the refused one, then the receiver (whose history page is shown last)
                page.goto(f"{base}/admin/webhooks")
                page.locator("#webhooks tbody tr").nth(index).locator("text=Send test").click()
                page.wait_for_selector("h2:has-text('Deliveries')")
            history = page.url
            deadline = time.monotonic() + 60
            while "delivered" not in page.locator("#deliveries tbody tr").first.inner_text():
                assert time.monotonic() < deadline, page.locator("#deliveries").inner_text()
                time.sleep(1)
                page.goto(history)
            row = page.locator("#deliveries tbody tr").first
            assert row.locator('[data-field="attempts"]').inner_text() == "2"  # the 500, then a 200
            assert row.locator('[data-field="response_code"]').inner_text() == "200"
            assert [r["verified"] for r in receiver.of("webhook.test")] == [True, True]

            page.click("text=Redeliver")
            page.wait_for_selector("text=queued again as delivery")
            assert page.locator("#deliveries tbody tr").count() == 2
            page.screenshot(path=str(SCREENSHOTS / "webhook-deliveries.png"), full_page=True)

            page.goto(f"{base}/admin/webhooks")
            refused = page.locator("#webhooks tbody tr").nth(1)
            refused.locator("a").first.click()
            deadline = time.monotonic() + 30
            while "failed" not in page.locator("#deliveries tbody tr").first.inner_text():
                assert time.monotonic() < deadline, page.locator("#deliveries").inner_text()
                time.sleep(1)
                page.reload()
            assert "refused" in page.locator("#deliveries tbody tr").first.inner_text().lower()
            page.screenshot(path=str(SCREENSHOTS / "webhook-deliveries-failed.png"), full_page=True)
            page.goto(f"{base}/admin/webhooks")
            page.screenshot(path=str(SCREENSHOTS / "webhooks.png"), full_page=True)
            assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        receiver.close()
