"""Editing notes, tags, priority and retention of jobs and sweeps (issue 14 item 4): through the API,
the dashboard's forms and the CLI; who may; partial edits; the tag filter; the audit rows."""

from __future__ import annotations

from functools import partial

import pytest
from click.testing import CliRunner
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from core.service import jobs
from core.service.db import get_sessionmaker
from core.service.job_options import JobOptions
from core.service.records import PRIORITIES, AuditEntry, Job, User, utcnow
from core.service.settings import get_settings
from tests.conftest import WEB_API_TOKEN
from tests.web_helpers import TRAIN, csrf_token, login

AUTH = {"Authorization": f"Bearer {WEB_API_TOKEN}"}
PASSWORD = "correct-horse-7"


def add_user(username: str, role: str) -> int:
    with get_sessionmaker().begin() as session:
        user = User(username=username, password_hash=generate_password_hash(PASSWORD), created_at=utcnow(), role=role)
        session.add(user)
        session.flush()
        return user.id


def submitted_job(data_dir: str, owner: int | None = None, **options) -> int:
    with get_sessionmaker().begin() as session:
        return jobs.create_job(
            session,
            jobs.JobRequest(kind="train", params={**TRAIN, "data_dir": data_dir}, options=JobOptions(**options)),
            submitted_by=owner,
        ).id


def submitted_sweep(data_dir: str, owner: int | None = None, **options) -> tuple[int, list[int]]:
    with get_sessionmaker().begin() as session:
        sweep, swept = jobs.create_sweep(
            session,
            jobs.SweepRequest(
                kind="train",
                base_params={**TRAIN, "data_dir": data_dir},
                grid={"lr": ["0.001", "0.01", "0.1"]},
                options=JobOptions(**options),
            ),
            submitted_by=owner,
        )
        return sweep.id, [job.id for job in swept]


def audit_rows(action: str) -> list[AuditEntry]:
    with get_sessionmaker().begin() as session:
        rows = list(session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)))
        session.expunge_all()
        return rows


@pytest.fixture()
def data_dir(tmp_path) -> str:
    """A job's data folder: edits never read it."""
    return str(tmp_path / "data")


@pytest.mark.parametrize("app", ["sqlite", "postgresql"], indirect=True)
def test_api_patch_changes_only_the_fields_given_and_writes_the_audit_row(client, data_dir):
    job_id = submitted_job(data_dir, priority="low", description="first try", tags=["baseline", "lr"], retention="best")
    response = client.patch(f"/api/jobs/{job_id}", json={"add_tags": ["Keep"], "remove_tags": ["lr"]}, headers=AUTH)
    assert response.status_code == 200, response.json
    job = response.json
    assert job["tags"] == ["baseline", "keep"]
    assert (job["priority"], job["description"], job["retention"]) == ("low", "first try", "best")  # untouched

    notes = "line one\nline <two> & three"
    job = client.patch(f"/api/jobs/{job_id}", json={"description": notes, "priority": "high"}, headers=AUTH).json
    assert (job["description"], job["priority"], job["tags"]) == (notes, "high", ["baseline", "keep"])
    job = client.patch(f"/api/jobs/{job_id}", json={"retention": None, "tags": []}, headers=AUTH).json
    assert (job["retention"], job["tags"], job["description"]) == (None, [], notes)
    with get_sessionmaker().begin() as session:
        assert session.get(Job, job_id).priority == PRIORITIES["high"]  # stored as the number the queue orders by

    edits = audit_rows("job.edit")
    assert [row.detail["changed"] for row in edits] == [
        {"tags": ["baseline", "keep"]},
        {"priority": "high", "description": notes},
        {"tags": [], "retention": None},
    ]
    assert {(row.target_type, row.target_id, row.username) for row in edits} == {("job", str(job_id), "alice")}
    # An edit that changes nothing writes nothing.
    assert client.patch(f"/api/jobs/{job_id}", json={"priority": "high"}, headers=AUTH).status_code == 200
    assert len(audit_rows("job.edit")) == 3


def test_api_refuses_bad_edits_naming_the_field(client, data_dir):
    job_id = submitted_job(data_dir, tags=["a"])
    cases = [
        ({"tags": ["has space"]}, "tags"),
        ({"tags": ["x" * 65]}, "tags"),
        ({"add_tags": ["ok", "-dash-first"]}, "add_tags"),
        ({"tags": [f"t{i}" for i in range(21)]}, "tags"),
        ({"add_tags": [f"t{i}" for i in range(20)]}, "tags"),  # 21 with the one it has
        ({"tags": ["a"], "remove_tags": ["b"]}, "remove_tags"),
        ({"description": "bell \x07"}, "description"),
        ({"description": "x" * 10_001}, "description"),
        ({"priority": "urgent"}, "priority"),
        ({"retention": "forever"}, "retention"),
        ({"colour": "red"}, "colour"),
        ({"tags": "a,b"}, "tags"),
    ]
    for body, field in cases:
        response = client.patch(f"/api/jobs/{job_id}", json=body, headers=AUTH)
        assert response.status_code == 400, (body, response.json)
        assert response.json["field"] == field and "\n" not in response.json["error"], (body, response.json)
    assert client.patch(f"/api/jobs/{job_id}", data="[]", headers=AUTH).json["field"] == "body"
    assert client.patch("/api/jobs/999999", json={"tags": []}, headers=AUTH).status_code == 404
    assert client.patch("/api/sweeps/999999", json={"tags": []}, headers=AUTH).status_code == 404
    assert client.patch(f"/api/jobs/{job_id}", json={"tags": []}).status_code == 401  # writes need a token
    assert client.get(f"/api/jobs/{job_id}", headers=AUTH).json["tags"] == ["a"]
    assert audit_rows("job.edit") == []


def test_sweep_edit_reaches_its_queued_jobs_priority_but_keeps_notes_and_tags_on_the_sweep(client, data_dir):
    sweep_id, job_ids = submitted_sweep(data_dir, tags=["grid"], description="lr sweep")
    with get_sessionmaker().begin() as session:  # one point already runs: its priority no longer matters
        jobs.claim_job(session, job_ids[0], owner="w", host="h")
    response = client.patch(
        f"/api/sweeps/{sweep_id}",
        json={"priority": "high", "add_tags": ["night"], "description": "lr sweep, second look"},
        headers=AUTH,
    )
    assert response.status_code == 200, response.json
    sweep = response.json
    assert (sweep["priority"], sweep["tags"], sweep["description"]) == ("high", ["grid", "night"], "lr sweep, second look")
    listed = {job["id"]: job for job in client.get(f"/api/jobs?sweep_id={sweep_id}", headers=AUTH).json["jobs"]}
    assert {job_id: listed[job_id]["priority"] for job_id in job_ids} == {
        job_ids[0]: "normal",
        job_ids[1]: "high",
        job_ids[2]: "high",
    }
    assert all(listed[job_id]["tags"] == ["grid"] for job_id in job_ids)  # the jobs keep the tags they were given
    (row,) = audit_rows("sweep.edit")
    assert row.detail["changed"]["queued_jobs"] == job_ids[1:] and row.target_id == str(sweep_id)
    assert client.get("/api/sweeps?tag=night", headers=AUTH).json["total"] == 1
    assert client.get("/api/sweeps?tag=other", headers=AUTH).json["total"] == 0


def test_tag_filter_combines_with_the_other_filters_on_api_and_cli(client, data_dir):
    tagged = submitted_job(data_dir, tags=["baseline"])
    submitted_job(data_dir, tags=["other"])
    cancelled = submitted_job(data_dir, tags=["baseline", "x"])
    with get_sessionmaker().begin() as session:
        jobs.request_cancel(session, cancelled)
    page = client.get("/api/jobs?tag=BaseLine", headers=AUTH).json
    assert [job["id"] for job in page["jobs"]] == [cancelled, tagged] and page["total"] == 2
    assert [job["id"] for job in client.get("/api/jobs?tag=baseline&status=queued", headers=AUTH).json["jobs"]] == [tagged]
    assert client.get("/api/jobs?tag=baseline&kind=predict", headers=AUTH).json["total"] == 0
    response = client.get("/api/jobs?tag=no%20way", headers=AUTH)
    assert response.status_code == 400 and response.json["field"] == "tag"

    from leukemia.cli import main

    result = CliRunner().invoke(main, ["jobs", "--tag", "baseline"])
    assert result.exit_code == 0, result.output
    ids = [line.split()[0] for line in result.output.splitlines()[1:-1]]
    assert ids == [str(cancelled), str(tagged)] and "baseline,x" in result.output
    result = CliRunner().invoke(main, ["jobs", "--tag", "bad tag!"])
    assert result.exit_code == 2 and result.output.strip().startswith("error: tag:")


def test_cli_edit_job_and_sweep_and_show_notes_and_tags(app, data_dir):
    from leukemia.cli import main

    job_id = submitted_job(data_dir, tags=["a", "b"])
    run = CliRunner().invoke
    result = run(
        main,
        ["edit", str(job_id), "--note", "first line\nsecond line", "--add-tag", "c", "--remove-tag", "a", "--priority", "high"],
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"job {job_id} edited: priority high, notes changed, tags b, c"
    shown = run(main, ["job", str(job_id)]).output
    assert "priority high, retention global policy, tags b, c" in shown
    assert "notes:\n  first line\n  second line" in shown
    assert run(main, ["edit", str(job_id), "--retention", "last-3"]).exit_code == 0
    assert run(main, ["edit", str(job_id), "--no-tags"]).exit_code == 0
    with get_sessionmaker().begin() as session:
        options = jobs.options_of(session, session.get(Job, job_id))
    assert (options.retention, options.description, options.tags) == ("last-3", "first line\nsecond line", [])
    assert run(main, ["edit", str(job_id), "--priority", "high"]).output.strip() == f"job {job_id}: nothing changed"

    for args, field in (
        (["--tag", "no good"], "tags"),
        (["--note", "esc \x1b[31m"], "description"),
        (["--retention", "some"], "retention"),
        (["--tag", "a", "--add-tag", "b"], "add_tags"),
    ):
        result = run(main, ["edit", str(job_id), *args])
        assert result.exit_code == 2 and result.output.startswith(f"error: {field}:"), (args, result.output)
    assert run(main, ["edit", "999999", "--note", "x"]).exit_code == 2
    assert run(main, ["edit"]).exit_code == 2

    sweep_id, job_ids = submitted_sweep(data_dir)
    result = run(main, ["edit", "--sweep", str(sweep_id), "--priority", "low", "--tag", "grid"])
    assert result.exit_code == 0 and f"sweep {sweep_id} edited" in result.output and "3 queued job(s) now low" in result.output
    with get_sessionmaker().begin() as session:
        assert {session.get(Job, job_id).priority for job_id in job_ids} == {PRIORITIES["low"]}
    assert [row.username.startswith("cli:") for row in audit_rows("job.edit") + audit_rows("sweep.edit")] == [True] * 4


def test_only_the_owner_or_an_admin_may_edit(app, data_dir):
    from core.service import job_edits
    from core.service.access import Actor, PermissionDenied
    from core.service.job_options import JobOptionsEdit

    owner, other, viewer, admin = (
        Actor(add_user(name, role), name, role)
        for name, role in (("olga", "member"), ("mark", "member"), ("vera", "viewer"), ("ada", "admin"))
    )
    job_id = submitted_job(data_dir, owner.user_id)
    sweep_id, _ = submitted_sweep(data_dir, owner.user_id)
    change = JobOptionsEdit(add_tags=["checked"])
    for actor in (other, viewer):
        for edit, target in ((partial(job_edits.edit_job, settings=get_settings()), job_id), (job_edits.edit_sweep, sweep_id)):
            with pytest.raises(PermissionDenied), get_sessionmaker().begin() as session:
                edit(session, actor, target, change)
    with get_sessionmaker().begin() as session:
        assert job_edits.edit_job(session, owner, job_id, change, get_settings()) == {"tags": ["checked"]}
        assert job_edits.edit_sweep(session, owner, sweep_id, change) == {"tags": ["checked"]}
        assert job_edits.edit_job(session, admin, job_id, JobOptionsEdit(tags=["admin"]), get_settings()) == {"tags": ["admin"]}
    assert [row.username for row in audit_rows("job.edit")] == ["olga", "ada"]
    assert [row.username for row in audit_rows("sweep.edit")] == ["olga"]


def logged_in(app, username: str, password: str = PASSWORD):
    client = app.test_client()
    assert login(client, username, password).status_code == 302
    return client


def edit_form(client, url: str, **fields) -> dict[str, str]:
    return {"csrf_token": csrf_token(client, url), "priority": "normal", "tags": "", "retention": "", "description": "", **fields}


def test_dashboard_edit_form_for_the_owner_and_an_admin_only(app, data_dir):
    from tests.conftest import WEB_ADMIN

    owner_id = add_user("olga", "member")
    add_user("mark", "member")
    add_user("vera", "viewer")
    job_id = submitted_job(data_dir, owner_id, tags=["first"], description="kept")
    page = f"/jobs/{job_id}"
    for name, reason in (("mark", "only its owner or an admin"), ("vera", "vera is a viewer")):
        other = logged_in(app, name)
        shown = other.get(page).get_data(as_text=True)
        assert 'id="save-options"' not in shown and '<a class="tag" href="/?tag=first">first</a>' in shown
        response = other.post(f"{page}/edit", data=edit_form(other, page, tags="mine"))
        assert response.status_code == 403 and reason in response.get_data(as_text=True)
    owner = logged_in(app, "olga")
    assert 'id="save-options"' in owner.get(page).get_data(as_text=True)
    response = owner.post(
        f"{page}/edit",
        data=edit_form(owner, page, tags="Baseline, lr-0.01", priority="high", description="line one\n<b>line two</b>"),
    )
    assert response.status_code == 302 and response.location == page
    shown = owner.get(page).get_data(as_text=True)
    assert f"Job {job_id} edited: priority high" in shown
    assert '<div class="notes-text" id="notes">line one\n&lt;b&gt;line two&lt;/b&gt;</div>' in shown  # text, escaped
    assert '<a class="tag" href="/?tag=baseline">baseline</a>' in shown and 'href="/?tag=lr-0.01"' in shown

    response = owner.post(f"{page}/edit", data=edit_form(owner, page, tags="ok, bad/tag", description="changed"))
    shown = response.get_data(as_text=True)
    assert response.status_code == 400 and 'id="error-tags"' in shown and "&#39;bad/tag&#39; is not a tag" in shown
    response = owner.post(f"{page}/edit", data=edit_form(owner, page, description="nul \x00 here"))
    assert response.status_code == 400 and 'id="error-description"' in response.get_data(as_text=True)
    with get_sessionmaker().begin() as session:
        options = jobs.options_of(session, session.get(Job, job_id))
    assert (options.tags, options.description, options.priority) == (["baseline", "lr-0.01"], "line one\n<b>line two</b>", "high")

    admin = logged_in(app, *WEB_ADMIN)
    response = admin.post(f"{page}/edit", data=edit_form(admin, page, tags="reviewed", retention="best"))
    assert response.status_code == 302
    assert [row.username for row in audit_rows("job.edit")] == ["olga", "alice"]
    assert admin.post("/jobs/999999/edit", data=edit_form(admin, page)).status_code == 404


def test_dashboard_tag_filter_sweep_header_and_compare(app, data_dir):
    from tests.conftest import WEB_ADMIN

    admin = logged_in(app, *WEB_ADMIN)
    tagged = submitted_job(data_dir, tags=["baseline"], description="the reference\nrun")
    other = submitted_job(data_dir, tags=["other"])
    page = admin.get("/?tag=BaseLine&status=queued").get_data(as_text=True)
    assert f'data-job-id="{tagged}"' in page and f'data-job-id="{other}"' not in page
    assert "tag=baseline" in page.split('data-live-url="')[1].split('"')[0]  # the live refresh keeps the filter
    assert 'name="tag" value="baseline"' in page
    response = admin.get("/?tag=not%20a%20tag")
    assert response.status_code == 400 and "tag:" in response.get_data(as_text=True)

    sweep_id, job_ids = submitted_sweep(data_dir, tags=["grid"], description="three learning rates")
    url = f"/?sweep={sweep_id}"
    page = admin.get(url).get_data(as_text=True)
    assert "three learning rates" in page and 'href="/?tag=grid"' in page and 'id="save-options"' in page
    response = admin.post(
        f"/sweeps/{sweep_id}/edit",
        data=edit_form(admin, url, priority="high", tags="grid, night", description="three learning rates"),
    )
    assert response.status_code == 302 and response.location == url
    with get_sessionmaker().begin() as session:
        assert {session.get(Job, job_id).priority for job_id in job_ids} == {PRIORITIES["high"]}
    response = admin.post(f"/sweeps/{sweep_id}/edit", data=edit_form(admin, url, retention="keep-all"))
    assert response.status_code == 400 and 'id="error-retention"' in response.get_data(as_text=True)
    assert admin.get("/api/sweeps?tag=night").json["total"] == 1

    page = admin.get(f"/compare?ids={tagged},{other}").get_data(as_text=True)
    assert '<td class="notes-text">the reference\nrun</td>' in page
    assert '<a class="tag" href="/?tag=baseline">baseline</a>' in page and 'href="/?tag=other"' in page
    assert 'data-tags="[[&#34;baseline&#34;], [&#34;other&#34;]]"' in page


def test_api_edit_with_each_role_token(client, data_dir):
    from core.service import users
    from core.service.access import cli_actor

    tokens = {}
    for name, role in (("olga", "member"), ("mark", "member"), ("vera", "viewer"), ("ada", "admin")):
        user_id = add_user(name, role)
        with get_sessionmaker().begin() as session:
            tokens[name] = users.create_token(session, cli_actor(), session.get(User, user_id), "edits")[1].value
    with get_sessionmaker().begin() as session:
        owner = users.find_user(session, "olga").id
    job_id = submitted_job(data_dir, owner)
    sweep_id, _ = submitted_sweep(data_dir, owner)

    def patch(name: str, url: str, body: dict):
        return client.patch(url, json=body, headers={"Authorization": f"Bearer {tokens[name]}"})

    for url in (f"/api/jobs/{job_id}", f"/api/sweeps/{sweep_id}"):
        for name, reason in (("mark", "only its owner or an admin"), ("vera", "vera is a viewer")):
            response = patch(name, url, {"add_tags": [name]})
            assert response.status_code == 403 and reason in response.json["error"], response.json
        assert patch("olga", url, {"add_tags": ["mine"]}).json["tags"] == ["mine"]
        assert patch("ada", url, {"add_tags": ["seen"]}).json["tags"] == ["mine", "seen"]
    assert [row.username for row in audit_rows("job.edit") + audit_rows("sweep.edit")] == ["olga", "ada"] * 2


def test_the_tag_filter_reads_job_tags_through_its_index(service_backend):
    """Correct pages, and job_tags read through its tag index (not scanned) by the count and the page."""
    from sqlalchemy import insert

    from core.service.records import JobTag
    from tests.test_jobs import query_plans

    db = get_sessionmaker()
    with db.begin() as session:
        first = session.scalar(select(Job.id).order_by(Job.id.desc()).limit(1)) or 0
        session.execute(
            insert(Job),
            [
                {
                    "kind": "train",
                    "status": ("queued", "failed")[i % 2],
                    "params": {},
                    "data_dir": "/d",
                    "queue": "tagged",
                    "attempts": 0,
                    "max_attempts": 3,
                    "cancel_requested": False,
                    "progress": 0.0,
                    "created_at": utcnow(),
                }
                for i in range(3000)
            ],
        )
        ids = list(session.scalars(select(Job.id).where(Job.id > first, Job.queue == "tagged").order_by(Job.id)))
        session.execute(insert(JobTag), [{"job_id": job_id, "tag": f"plan-{n % 30}"} for n, job_id in enumerate(ids)])
    with db.begin() as session:
        page, total = jobs.list_jobs(session, tag="plan-3", status="failed", per_page=50)
        assert total == 100 and len(page) == 50 and page[0].id > page[-1].id
        assert jobs.tags_of(session, page) == {job.id: ["plan-3"] for job in page}
        assert all(job.status == "failed" for job in page)
    with db.begin() as session:
        plans = query_plans(session, lambda: jobs.list_jobs(session, tag="plan-3", status="failed"))
    assert len(plans) == 2, plans  # the count and the page
    for plan in plans:
        assert "ix_job_tags_tag" in plan, plan
