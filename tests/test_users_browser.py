"""In headless Chromium against `leukemia web` on a loopback port: an admin adds users on the admin
page (the generated password shown once), changes a role and disables a user; a viewer logs in with
the shown password, sees no admin or submit links, and makes an API token (shown once) that works and
stops working once revoked; the admin reads it all in the audit log. Screenshots go to
$LEUKEMIA_SCREENSHOTS (else the test's tmp folder)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.test_browser import browser  # noqa: F401  (the browser fixture)
from tests.web_helpers import log_in_page, logged_in_page, screenshots_dir, web_server

pytestmark = pytest.mark.timeout(300)
ADMIN = ("admin", "browser-admin-pass")


def api_me(base: str, token: str) -> int | dict:
    request = urllib.request.Request(f"{base}/api/me", headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as error:
        return error.code


def test_admin_page_viewer_token_and_audit_log(tmp_path, browser):  # noqa: F811
    settings = {"ADMIN_USERNAME": ADMIN[0], "ADMIN_PASSWORD": ADMIN[1], "API_TOKEN": "browser-token", "DATA_ROOTS": str(tmp_path)}
    with web_server(tmp_path, settings) as base:
        run_scenario(browser, base, screenshots_dir(tmp_path))


def run_scenario(chromium, base: str, shots: Path) -> None:
    admin, errors = logged_in_page(chromium, base, *ADMIN)
    assert admin.locator("#who").inner_text() == "admin · admin"
    admin.click("header nav >> text=Users")
    for name, role in (("bob", "member"), ("vera", "viewer"), ("old-account", "member")):
        admin.fill('#add-user input[name="username"]', name)
        admin.select_option('#add-user select[name="role"]', role)
        admin.click("text=Add user")
        admin.wait_for_selector(f'#shown-password h2:has-text("Password for {name}")')
        if name == "vera":
            vera_password = admin.locator("#shown-password .secret-value").inner_text()
    admin.select_option('tr[data-user="bob"] select[name="role"]', "admin")
    admin.click('tr[data-user="bob"] >> text=Set')
    admin.wait_for_selector(".flash:has-text('bob: role set to admin.')")
    admin.click('tr[data-user="old-account"] >> text=Disable')
    admin.wait_for_selector('tr[data-user="old-account"] .badge-cancelled:has-text("disabled")')
    admin.click('tr[data-user="bob"] >> text=Reset password')
    admin.wait_for_selector('#shown-password h2:has-text("Password for bob")')
    admin.fill('#add-user input[name="username"]', "bad name")  # the form posts to /admin/users from any page
    admin.click("text=Add user")
    admin.wait_for_selector(".field-error:has-text('username: use 1-150 letters')")
    admin.fill('#add-user input[name="username"]', "carol")
    admin.click("text=Add user")
    admin.wait_for_selector('#shown-password h2:has-text("Password for carol")')
    admin.screenshot(path=str(shots / "admin-users.png"), full_page=True)
    assert admin.locator("#users tbody tr").count() == 5

    viewer = chromium.new_page(viewport={"width": 1366, "height": 768})
    log_in_page(viewer, base, "vera", vera_password)
    nav = viewer.locator("header nav").inner_text()
    assert viewer.locator("#who").inner_text() == "vera · viewer"
    assert "Users" not in nav and "Audit log" not in nav and "Train" not in nav and "API tokens" in nav
    viewer.click("header nav >> text=API tokens")
    viewer.fill('#create-token input[name="name"]', "vera's notebook")
    viewer.click("text=Create token")
    token = viewer.locator("#new-token .secret-value").inner_text()
    assert token.startswith("lk_")
    assert api_me(base, token) == {"id": 3, "username": "vera", "role": "viewer"}
    viewer.screenshot(path=str(shots / "api-tokens.png"), full_page=True)
    viewer.click("#tokens >> text=Revoke")
    viewer.wait_for_selector("#tokens .badge-cancelled:has-text('revoked')")
    assert api_me(base, token) == 401
    viewer.goto(f"{base}/admin/users")
    assert "vera is a viewer: only admins may manage users" in viewer.locator("p.error").inner_text()

    admin.goto(f"{base}/admin/audit")
    actions = admin.locator("#audit tbody td:nth-child(3)").all_inner_texts()
    assert actions[:3] == ["token.revoke", "token.create", "user.add"], actions
    assert {"user.role", "user.disable", "user.reset_password"} <= set(actions)
    admin.screenshot(path=str(shots / "audit-log.png"), full_page=True)
    assert not [e for e in errors if "Content Security Policy" in e], errors
