"""A submit-time option added as one JobOptions field (and its form input) travels the whole way: from the
submit form, `leukemia submit` and the API, onto the row (jobs.extra_options), to the job page, the API's
answer, `leukemia job`, and back through an edit. `reference` is that option: a link or id of what the run
belongs to (it was added in one commit touching the field and its form input only)."""

from __future__ import annotations

import html

import pytest
from click.testing import CliRunner

from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.records import Job
from tests.conftest import WEB_ADMIN, WEB_API_TOKEN
from tests.web_helpers import csrf_token, login

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
LINK = "https://notebook.example/page/42?run=a&b=1"


def stored(job_id: int) -> tuple[dict | None, str]:
    """The row's extra_options and the reference its options read back."""
    with get_sessionmaker().begin() as session:
        job = session.get(Job, job_id)
        return job.extra_options, jobs.options_of(session, job).reference


def job_page(browser, job_id: int) -> str:
    page = browser.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    return page.get_data(as_text=True)


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_a_reference_goes_from_form_cli_and_api_to_the_row_the_page_and_the_answer(app, client, folder_path):
    from leukemia.cli import main

    # The API: a field of the request's options, answered as a field of the job.
    response = client.post(
        "/api/jobs",
        headers=AUTH,
        json={"kind": "train", "params": {"data_dir": folder_path, "image_size": 32}, "options": {"reference": f"  {LINK} "}},
    )
    assert response.status_code == 201, response.json
    by_api = response.json["id"]
    assert response.json["reference"] == LINK
    assert stored(by_api) == ({"reference": LINK}, LINK)

    # The form: its input, named as the field.
    assert login(client, *WEB_ADMIN).status_code == 302
    token = csrf_token(client, "/jobs/new/train")
    assert 'name="reference"' in client.get("/jobs/new/train").get_data(as_text=True)
    response = client.post(
        "/jobs/new/train",
        data={
            "csrf_token": token,
            "data_folder": "1",
            "epochs": "1",
            "image_size": "32",
            "priority": "normal",
            "reference": "TICKET-17",
        },
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    by_form = int(response.headers["Location"].rsplit("/", 1)[1])
    assert stored(by_form) == ({"reference": "TICKET-17"}, "TICKET-17")

    # The CLI: an option generated from the field.
    result = CliRunner().invoke(
        main,
        [
            "submit",
            "train",
            "--data",
            folder_path,
            "--image-size",
            "32",
            "--queue",
            "nobody-serves-this",
            "--reference",
            "lab book p. 7",
        ],
    )
    assert result.exit_code == 0, result.output
    by_cli = int(result.output.split()[1])
    assert stored(by_cli) == ({"reference": "lab book p. 7"}, "lab book p. 7")

    # The job page lists it by name, a web address as a link (escaped), other text as text.
    page = job_page(client, by_api)
    assert f'<dt>reference</dt><dd><a href="{html.escape(LINK)}" rel="noopener noreferrer" target="_blank">' in page
    assert "<dt>reference</dt><dd>TICKET-17</dd>" in job_page(client, by_form)
    assert "<dt>reference</dt>" not in job_page(client, jobs_without_reference(client, folder_path))
    # The edit form shows it as stored.
    assert 'name="reference" value="TICKET-17"' in job_page(client, by_form)

    # The API's list and `leukemia job` carry it too.
    listed = {job["id"]: job["reference"] for job in client.get("/api/jobs", headers=AUTH).json["jobs"]}
    assert listed[by_api] == LINK and listed[by_form] == "TICKET-17" and listed[by_cli] == "lab book p. 7"
    shown = CliRunner().invoke(main, ["job", str(by_cli)])
    assert shown.exit_code == 0 and "reference: lab book p. 7" in shown.output, shown.output


def jobs_without_reference(client, folder_path: str) -> int:
    response = client.post("/api/jobs", headers=AUTH, json={"kind": "train", "params": {"data_dir": folder_path}})
    assert response.status_code == 201, response.json
    assert response.json["reference"] == "" and stored(response.json["id"]) == (None, "")
    return response.json["id"]


def test_a_reference_is_edited_and_checked_like_every_option(app, client, folder_path):
    from leukemia.cli import main

    job_id = client.post(
        "/api/jobs",
        headers=AUTH,
        json={"kind": "train", "params": {"data_dir": folder_path}, "options": {"reference": "TICKET-1"}},
    ).json["id"]
    response = client.patch(f"/api/jobs/{job_id}", headers=AUTH, json={"reference": "TICKET-2"})
    assert response.status_code == 200 and response.json["reference"] == "TICKET-2", response.json
    assert client.patch(f"/api/jobs/{job_id}", headers=AUTH, json={"priority": "high"}).json["reference"] == "TICKET-2"
    result = CliRunner().invoke(main, ["edit", str(job_id), "--reference", "TICKET-3"])
    assert result.exit_code == 0 and result.output.strip() == f"job {job_id} edited: reference TICKET-3", result.output
    result = CliRunner().invoke(main, ["edit", str(job_id), "--reference", ""])
    assert result.exit_code == 0 and stored(job_id) == (None, ""), result.output

    # One line, at most 500 characters: a 400 (or exit 2) naming the field, and nothing stored.
    for body, field in (
        ({"options": {"reference": "two\nlines"}}, "options"),
        ({"options": {"reference": "x" * 501}}, "options"),
    ):
        response = client.post("/api/jobs", headers=AUTH, json={"kind": "train", "params": {"data_dir": folder_path}, **body})
        assert response.status_code == 400 and response.json["field"] == field, response.json
        assert "reference" in response.json["error"]
    response = client.patch(f"/api/jobs/{job_id}", headers=AUTH, json={"reference": "esc \x1b[31m"})
    assert response.status_code == 400 and response.json["field"] == "reference", response.json
    result = CliRunner().invoke(main, ["submit", "train", "--data", folder_path, "--reference", "a\tb"])
    assert result.exit_code == 2 and result.output.startswith("error: reference: contains a control character")
    assert client.get("/api/jobs", headers=AUTH).json["total"] == 1
    document = client.get("/api/openapi.json").json["components"]["schemas"]
    assert document["JobOptions"]["properties"]["reference"]["maxLength"] == 500
    assert "reference" in document["JobOptionsEdit"]["properties"] and "reference" in document["Job"]["properties"]
