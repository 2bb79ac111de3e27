"""One pagination helper (web.paging) and one pager macro for every paged list (issue 19 item 3): the
job list keeps its filters across pages, the audit log pages the same way, a page past the end links
back to the last one, and no template draws a pager of its own."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import login, queued_job
from web.paging import Pager

TEMPLATES = Path(__file__).resolve().parents[1] / "web" / "templates"


def test_pager_links() -> None:
    assert (Pager(1, 2, 0).pages, Pager(1, 2, 0).newer, Pager(1, 2, 0).older) == (1, None, None)
    assert (Pager(1, 2, 5).pages, Pager(1, 2, 5).newer, Pager(1, 2, 5).older) == (3, None, 2)
    assert (Pager(3, 2, 5).newer, Pager(3, 2, 5).older) == (2, None)
    assert (Pager(9, 2, 5).newer, Pager(9, 2, 5).older) == (3, None)  # past the end: back to the last page


def links(page: str) -> dict[str, str]:
    nav = re.search(r'<nav class="pager">(.*?)</nav>', page, re.DOTALL)
    assert nav, "no pager"
    return {text: href.replace("&amp;", "&") for href, text in re.findall(r'<a href="([^"]+)">([^<]+)</a>', nav.group(1))}


def test_job_list_and_audit_log_page_through_the_one_pager(app, client, tmp_path, monkeypatch) -> None:
    from web import users_views, views

    monkeypatch.setattr(views, "JOBS_PER_PAGE", 2)
    for _ in range(5):
        queued_job(str(tmp_path / "data"))
    assert login(client, *WEB_ADMIN).status_code == 302
    first = client.get("/?kind=train").get_data(as_text=True)
    assert links(first) == {"older →": "/?page=2&kind=train"} and "page 1 of 3" in first
    middle = client.get("/?kind=train&page=2").get_data(as_text=True)
    assert links(middle) == {"← newer": "/?page=1&kind=train", "older →": "/?page=3&kind=train"}
    beyond = client.get("/?kind=train&page=9").get_data(as_text=True)
    assert links(beyond) == {"← newer": "/?page=3&kind=train"} and "page 9 of 3" in beyond
    assert client.get("/?page=0").status_code == 400

    monkeypatch.setattr(users_views, "AUDIT_PER_PAGE", 1)
    for name in ("a",):  # one audited write, after migrate's user.add of the admin: two rows
        assert (
            client.patch(
                "/api/jobs/1", json={"description": name}, headers={"Authorization": f"Bearer {WEB_API_TOKEN}"}
            ).status_code
            == 200
        )
    audit = client.get("/admin/audit").get_data(as_text=True)
    assert links(audit) == {"older →": "/admin/audit?page=2"} and "page 1 of 2" in audit
    assert links(client.get("/admin/audit?page=5").get_data(as_text=True)) == {"← newer": "/admin/audit?page=2"}


def test_no_template_draws_its_own_pager() -> None:
    sources = {path.name: path.read_text() for path in TEMPLATES.glob("*.html")}
    assert [name for name, text in sources.items() if '<nav class="pager">' in text] == ["_macros.html"]
    assert {name for name, text in sources.items() if re.search(r"\{\{ pager\(paged, ", text)} == {
        "_job_list_live.html",  # the job list's pager, a live region of jobs.html
        "audit.html",
        "webhook.html",
    }
