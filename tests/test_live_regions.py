"""The live routes of issue 25: GET /jobs/live (the job list, with its query), /jobs/<id>/live and
/cross-validations/<id>/live draw a page's live regions ([data-live]) alone, from the page's own context, so the
page and its updates write each field once; as jobs run they follow them, and they answer as the page does: a
viewer sees them, a stranger is sent to log in, an unknown id is the page's one-line 404, a bad query argument
the page's one-line 400."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from core.service import jobs
from core.service.db import get_sessionmaker
from tests.conftest import WEB_ADMIN
from tests.test_cv_delete import EPOCH, finished_cv, requeue
from tests.test_retention import add_user, finished_job
from tests.web_helpers import login, queued_job

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class LiveRegions(HTMLParser):
    """Each [data-live] element of a page by name: its tags, attributes and text in order (a form's csrf_token
    left out: it is signed anew on every request)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.regions: dict[str, list[tuple]] = {}
        self.open: list[tuple[str, int]] = []  # (region, depth at its start)
        self.depth = 0
        self.feed(page)

    def _add(self, event: tuple) -> None:
        for name, _ in self.open:
            self.regions[name].append(event)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        shown = dict(attrs)
        if shown.get("name") == "csrf_token":
            shown.pop("value")
        if "data-live" in shown:
            self.regions[shown["data-live"]] = []
            self.open.append((shown["data-live"], self.depth))
        self._add(("start", tag, sorted(shown.items())))
        if tag not in VOID:
            self.depth += 1

    def handle_endtag(self, tag: str) -> None:
        self.depth -= 1
        self._add(("end", tag))
        if self.open and self.open[-1][1] == self.depth:
            self.open.pop()

    def handle_data(self, data: str) -> None:
        self._add(("text", data))


def regions(page: str) -> dict[str, list[tuple]]:
    return LiveRegions(page).regions


def text(region: list[tuple]) -> str:
    return " ".join(" ".join(event[1] for event in region if event[0] == "text").split())


@pytest.fixture()
def admin(client):
    assert login(client, *WEB_ADMIN).status_code == 302
    return client


def live(client, url: str) -> tuple[dict[str, list[tuple]], str]:
    response = client.get(url)
    assert response.status_code == 200 and response.mimetype == "text/html"
    body = response.get_data(as_text=True)
    return regions(body), re.search(r'<div data-finished="(\w+)"', body).group(1)


def test_a_running_jobs_live_regions_follow_it_and_match_its_page(admin, folder_path):
    job_id = queued_job(folder_path)
    shown, finished = live(admin, f"/jobs/{job_id}/live")
    assert set(shown) == {"state", "actions", "status", "metrics", "files", "log"} and finished == "false"
    assert text(shown["state"]) == "queued" and "Cancel" in text(shown["actions"])
    assert text(shown["metrics"]) == "No finished epoch yet." and "No log lines yet" in text(shown["log"])

    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, job_id, owner="w", host="live-host")
        jobs.record_epoch(session, job_id, EPOCH)
        jobs.heartbeat(session, job_id, "w", progress=0.5, epoch=1, epochs_total=2, log_tail="12:00:00 INFO epoch 1 done")
    shown, finished = live(admin, f"/jobs/{job_id}/live")
    assert finished == "false" and text(shown["state"]) == "running"
    status = text(shown["status"])
    assert status.startswith("50% Epoch 1/2") and "Worker live-host" in status and "Attempts 1/" in status
    assert text(shown["metrics"]).startswith("1 0.5 50.0% 0.6 75.0% 70.0% 72.0%")
    assert text(shown["log"]) == "Log tail 12:00:00 INFO epoch 1 done"

    with get_sessionmaker().begin() as session:
        jobs.finish_job(session, job_id, "w", "succeeded")
    shown, finished = live(admin, f"/jobs/{job_id}/live")
    assert finished == "true" and text(shown["state"]) == "succeeded"
    assert "Cancel" not in text(shown["actions"]) and {"Delete", "Predict…"} <= set(text(shown["actions"]).split())
    page = regions(admin.get(f"/jobs/{job_id}").get_data(as_text=True))
    assert page == shown  # one template draws both: a field added there shows in both

    ended = finished_job(folder_path)  # an ended job's files, as the page lists them
    shown, _ = live(admin, f"/jobs/{ended}/live")
    assert "best.pt" in text(shown["files"]) and shown == regions(admin.get(f"/jobs/{ended}").get_data(as_text=True))


def test_the_live_routes_answer_as_their_pages_do(app, client, folder_path):
    job_id = queued_job(folder_path)
    cv_id, _ = finished_cv(folder_path, ensemble=False)
    for url in (f"/jobs/{job_id}/live", f"/cross-validations/{cv_id}/live"):  # logged out: to the login page
        response = client.get(url)
        assert response.status_code == 302 and response.location == f"/login?next={url}"

    add_user("vera", role="viewer")
    assert login(client, "vera", "vera-password").status_code == 302
    shown, _ = live(client, f"/jobs/{job_id}/live")  # a viewer follows a job, with no button to change it
    assert text(shown["state"]) == "queued" and text(shown["actions"]) == ""
    assert live(client, f"/cross-validations/{cv_id}/live")[1] == "true"

    for page in ("/jobs/987654", "/cross-validations/987654"):  # an unknown id: the page's one line, a 404
        answers = [client.get(url) for url in (page, f"{page}/live")]
        lines = [re.findall(r'<p class="error" role="alert">([^<]*)</p>', a.get_data(as_text=True)) for a in answers]
        assert [a.status_code for a in answers] == [404, 404] and lines[0] == lines[1] and len(lines[0]) == 1
        assert "987654" in lines[0][0]


def test_a_cross_validations_live_regions_follow_its_folds_and_match_its_page(admin, folder_path):
    cv_id, ids = finished_cv(folder_path, ensemble=False, failed=(1,))
    requeue(ids[1])  # fold 1 queued again: the cross-validation runs
    shown, finished = live(admin, f"/cross-validations/{cv_id}/live")
    assert set(shown) == {"folds", "ensemble-submit", "ensembles", "subjects"} and finished == "false"
    folds = text(shown["folds"])
    assert "succeeded" in folds and "queued" in folds and "Out of fold" not in folds
    assert (
        "start",
        "button",
        [("disabled", None), ("id", "ensemble-submit"), ("title", "every fold must succeed first"), ("type", "submit")],
    ) in shown["ensemble-submit"]

    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, ids[1], owner="w", host="h")
        jobs.record_epoch(session, ids[1], EPOCH.model_copy(update={"valid_accuracy": 0.5}))
        jobs.finish_job(session, ids[1], "w", "succeeded")
    shown, finished = live(admin, f"/cross-validations/{cv_id}/live")
    assert finished == "true" and text(shown["folds"]).count("succeeded") == 2
    assert "75.0% 50.0%" not in text(shown["folds"]) and "62.5% ± 17.7%" in text(shown["folds"])  # mean ± sample std
    assert ("start", "button", [("id", "ensemble-submit"), ("type", "submit")]) in shown["ensemble-submit"]
    assert shown == regions(admin.get(f"/cross-validations/{cv_id}").get_data(as_text=True))


def same_regions(page: dict[str, list[tuple]], shown: dict[str, list[tuple]]) -> bool:
    """The page's regions are the live route's, the artifacts volume's free space aside (other processes write)."""
    rest = [{name: events for name, events in regions.items() if name != "disk"} for regions in (page, shown)]
    return rest[0] == rest[1] and text(page["disk"]).split("·")[0] == text(shown["disk"]).split("·")[0]


def row_ids(shown: dict[str, list[tuple]]) -> list[str]:
    return [dict(event[2])["data-job-id"] for event in shown["rows"] if event[:2] == ("start", "tr") and event[2]]


def test_the_job_lists_live_regions_follow_its_query_and_match_its_page(admin, folder_path):
    ended = finished_job(folder_path)
    shown, finished = live(admin, "/jobs/live")
    assert set(shown) == {"total", "disk", "lost-workers", "rows", "pager"} and finished == "true"  # nothing can change
    assert row_ids(shown) == [str(ended)] and text(shown["total"]) == "(1)" and "page 1 of 1" in text(shown["pager"])

    running = queued_job(folder_path)
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, running, owner="w", host="h")
        jobs.heartbeat(session, running, "w", progress=0.5, epoch=1, epochs_total=2)
    shown, finished = live(admin, "/jobs/live")
    assert finished == "false" and row_ids(shown) == [str(running), str(ended)] and text(shown["total"]) == "(2)"
    assert "running" in text(shown["rows"]) and "50% 1/2" in text(shown["rows"])
    assert same_regions(regions(admin.get("/").get_data(as_text=True)), shown)  # one template draws both

    query = "?status=succeeded&kind=train&tag=&page=1"  # the page's own arguments, filtered as the page filters
    shown, finished = live(admin, f"/jobs/live{query}")
    assert finished == "true" and row_ids(shown) == [str(ended)]
    page = admin.get(f"/{query}").get_data(as_text=True)
    assert same_regions(regions(page), shown)
    live_url = re.search(r'data-live-url="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert live_url == "/jobs/live?status=succeeded&kind=train&page=1"  # the page follows its own query

    with get_sessionmaker().begin() as session:
        jobs.finish_job(session, running, "w", "succeeded")
    shown, finished = live(admin, "/jobs/live?page=1")
    assert finished == "true" and "running" not in text(shown["rows"])


def test_the_job_lists_live_route_answers_as_the_page_does(app, client, folder_path):
    job_id = queued_job(folder_path)
    response = client.get("/jobs/live?kind=train")  # logged out: to the login page, and back to the same query
    assert response.status_code == 302 and response.location == "/login?next=/jobs/live?kind%3Dtrain"

    add_user("vera", role="viewer")
    assert login(client, "vera", "vera-password").status_code == 302
    shown, finished = live(client, "/jobs/live")  # a viewer follows the list
    assert finished == "false" and row_ids(shown) == [str(job_id)] and "queued" in text(shown["rows"])

    for query in ("?page=0", "?status=lost", "?kind=x", "?sweep=two", "?tag=a%20b"):  # the page's one-line 400
        answers = [client.get(f"{url}{query}") for url in ("/", "/jobs/live")]
        lines = [re.findall(r'<p class="error" role="alert">([^<]*)</p>', a.get_data(as_text=True)) for a in answers]
        assert [a.status_code for a in answers] == [400, 400] and lines[0] == lines[1] and len(lines[0]) == 1, query
