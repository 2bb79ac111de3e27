"""Webhooks against a real local HTTP receiver that verifies each signature: outbox rows written
with the status change, retries after a 500, failure after the last attempt, one sender per
delivery, worker.lost reported once, and the admin API."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.common.errors import UserInputError
from core.service import jobs, webhooks
from core.service.access import Actor, PermissionDenied, cli_actor
from core.service.db import get_sessionmaker, upgrade_database
from core.service.records import Job, WebhookDelivery, WorkerRecord, utcnow
from core.service.settings import get_settings
from tests import polling
from tests.web_helpers import free_port

SECRET = "receiver-shared-secret-0123456789"
TOLERANCE_S = 300  # the receiver refuses a signature whose t is further than this from its clock


class Receiver:
    """A real HTTP server on a free loopback port. It verifies X-Leukemia-Signature as docs/web.md tells a
    receiver to (HMAC-SHA256 over f"{t}.{body}", t within TOLERANCE_S), records every request, and answers
    with the next scripted status code (then 200), after sleeping `hang` seconds when asked to. `host` and
    `port` choose the listening address (default: 127.0.0.1 on a free port)."""

    def __init__(
        self,
        secret: str = SECRET,
        codes: tuple[int, ...] = (),
        hang: float = 0.0,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.secret, self.codes, self.hang = secret, list(codes), hang
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                with receiver.lock:
                    receiver.requests.append(
                        {
                            "event": self.headers["X-Leukemia-Event"],
                            "delivery": self.headers["X-Leukemia-Delivery"],
                            "content_type": self.headers["Content-Type"],
                            "body": body,
                            "at": time.time(),
                            "authorization": self.headers.get("Authorization"),
                            "verified": receiver.verify(self.headers.get("X-Leukemia-Signature", ""), body),
                        }
                    )
                    code = receiver.codes.pop(0) if receiver.codes else 200
                if receiver.hang:
                    time.sleep(receiver.hang)
                self.send_response(code)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer((host, port or free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verify(self, header: str, body: str) -> bool:
        parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
        if not parts.get("t", "").isdigit() or abs(time.time() - int(parts["t"])) > TOLERANCE_S:
            return False
        expected = hmac.new(self.secret.encode(), f"{parts['t']}.{body}".encode(), hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, parts.get("v1", ""))

    def of(self, event: str) -> list[dict]:
        with self.lock:
            return [r for r in self.requests if r["event"] == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(autouse=True)
def loopback_allowed(settings_override):
    """The receivers here listen on 127.0.0.1, which webhooks may not reach by default: these tests
    list it in WEBHOOK_ALLOWED_NETWORKS, the setting's intended use (a receiver on a private network)."""
    settings_override(WEBHOOK_ALLOWED_NETWORKS="127.0.0.0/8")


@pytest.fixture
def receiver():
    started = Receiver()
    yield started
    started.close()


@pytest.fixture
def database(isolated_home, settings_override):
    """A fresh SQLite job database, with fast retries."""
    settings_override(WEBHOOK_RETRY_SECONDS="0.3", WEBHOOK_TIMEOUT_SECONDS="2")
    upgrade_database()


def add_webhook(url: str, events: list[str] | None = None, secret: str = SECRET) -> int:
    with get_sessionmaker().begin() as session:
        return webhooks.add(
            session,
            cli_actor(),
            url,
            events or ["job.succeeded", "job.failed", "job.cancelled", "worker.lost"],
            secret,
            settings=get_settings(),
        ).id


def queued(tmp_path) -> int:
    from core.engine.data.synth import write_synthetic_dataset

    folder = tmp_path / "data"
    if not folder.exists():
        write_synthetic_dataset(folder, train=4, valid=2, test=2, image_size=32, seed=0)
    with get_sessionmaker().begin() as session:
        return jobs.create_job(
            session, jobs.JobRequest(kind="train", params={"data_dir": str(folder), "epochs": 1, "image_size": 32})
        ).id


def deliveries_of(webhook_id: int) -> list[WebhookDelivery]:
    with get_sessionmaker().begin() as session:
        rows, _ = webhooks.deliveries(session, cli_actor(), webhook_id, per_page=200)
        session.expunge_all()
        return rows


def deliver_until(condition, seconds: float = 20.0) -> None:
    """Run sender passes (as a worker's thread does) until condition() holds."""

    def delivered() -> bool:
        if condition():
            return True
        webhooks.deliver_due(get_settings())
        return False

    polling.wait_for(delivered, seconds, "delivery passes to get there")


# --- the outbox ------------------------------------------------------------------------------------


def test_every_path_that_ends_a_job_writes_its_event_with_the_change(database, tmp_path):
    hook = add_webhook("http://127.0.0.1:9/hook")
    silent = add_webhook("http://127.0.0.1:9/other", ["worker.lost"])  # not subscribed to job events
    off = add_webhook("http://127.0.0.1:9/off")
    with get_sessionmaker().begin() as session:
        webhooks.change(session, cli_actor(), off, enabled=False, settings=get_settings())
    ended = {}
    # queued -> cancelled (request_cancel)
    ended["cancel"] = queued(tmp_path)
    with get_sessionmaker().begin() as session:
        jobs.request_cancel(session, ended["cancel"])
    # unsent -> failed
    ended["unsent"] = queued(tmp_path)
    with get_sessionmaker().begin() as session:
        jobs.fail_unsent_job(session, ended["unsent"], "broker down")

    # running -> succeeded, and a late cancel -> cancelled (finish_job); cancel during shutdown
    # (release_job), while a plain release is no event
    def finish(session, job_id: int) -> None:
        jobs.finish_job(session, job_id, "w", "succeeded")

    def release(session, job_id: int) -> None:
        jobs.release_job(session, job_id, "w")

    for name, cancel, end in (
        ("succeeded", False, finish),
        ("late", True, finish),
        ("released-cancel", True, release),
        ("released", False, release),
    ):
        ended[name] = queued(tmp_path)
        with get_sessionmaker().begin() as session:
            jobs.claim_job(session, ended[name], owner="w", host="h")
            if cancel:
                jobs.request_cancel(session, ended[name])
            end(session, ended[name])
    # worker lost with no attempts left -> failed "worker lost" (requeue_lost_jobs)
    ended["lost"] = queued(tmp_path)
    with get_sessionmaker().begin() as session:
        jobs.claim_job(session, ended["lost"], owner="w", host="h")
        session.get(Job, ended["lost"]).max_attempts = 1
        session.get(Job, ended["lost"]).heartbeat_at = utcnow().replace(year=2000)
    with get_sessionmaker().begin() as session:
        jobs.requeue_lost_jobs(session)
    # a change rolled back announces nothing
    rolled_back = queued(tmp_path)
    with pytest.raises(RuntimeError), get_sessionmaker().begin() as session:
        jobs.request_cancel(session, rolled_back)
        raise RuntimeError("rolled back")

    bodies = {json.loads(d.body)["job"]["id"]: (d.event, json.loads(d.body)) for d in deliveries_of(hook)}
    assert {job_id: event for job_id, (event, _) in bodies.items()} == {
        ended["cancel"]: "job.cancelled",
        ended["unsent"]: "job.failed",
        ended["succeeded"]: "job.succeeded",
        ended["late"]: "job.cancelled",
        ended["released-cancel"]: "job.cancelled",
        ended["lost"]: "job.failed",
    }
    assert deliveries_of(silent) == [] and deliveries_of(off) == []
    event, body = bodies[ended["lost"]]
    assert body["event"] == event and body["job"]["error"] == "worker lost" and body["job"]["status"] == "failed"
    assert body["job"]["kind"] == "train" and body["job"]["submitted_by_name"] == "cli" and body["job"]["url"] is None
    assert body["time"].endswith("Z")


def test_a_500_is_retried_with_back_off_then_delivered_signed(database, tmp_path, settings_override):
    settings_override(PUBLIC_URL="https://jobs.example.org/")
    receiver = Receiver(codes=(500, 503))
    try:
        hook = add_webhook(receiver.url, ["job.cancelled"])
        job_id = queued(tmp_path)
        with get_sessionmaker().begin() as session:
            jobs.request_cancel(session, job_id)
        started = time.monotonic()
        deliver_until(lambda: deliveries_of(hook)[0].status != "pending")
        took = time.monotonic() - started
        [delivery] = deliveries_of(hook)
        assert (delivery.status, delivery.attempts, delivery.response_code, delivery.last_error) == ("delivered", 3, 200, None)
        # waits of 0.3 s and then 0.6 s (WEBHOOK_RETRY_SECONDS doubled) before the second and third attempts
        assert took >= 0.9, took
        assert [r["verified"] for r in receiver.requests] == [True, True, True]
        assert {r["body"] for r in receiver.requests} == {delivery.body}  # the exact stored body each time
        assert {r["delivery"] for r in receiver.requests} == {str(delivery.id)}
        assert receiver.requests[0]["content_type"] == "application/json"
        body = json.loads(delivery.body)
        assert body["event"] == "job.cancelled" and body["job"]["url"] == f"https://jobs.example.org/jobs/{job_id}"
    finally:
        receiver.close()


def test_a_wrong_secret_fails_verification(receiver):
    good = webhooks.signature(SECRET, int(time.time()), "{}")
    assert receiver.verify(good, "{}")
    assert not receiver.verify(webhooks.signature("another-secret-0123456789", int(time.time()), "{}"), "{}")
    assert not receiver.verify(good, "{ }")  # the body changed
    assert not receiver.verify(webhooks.signature(SECRET, int(time.time()) - 3600, "{}"), "{}")  # replayed later


def test_refused_connections_fail_after_the_last_attempt(database, tmp_path, settings_override):
    settings_override(WEBHOOK_MAX_ATTEMPTS="2", WEBHOOK_RETRY_SECONDS="0.1")
    hook = add_webhook(f"http://127.0.0.1:{free_port()}/nobody", ["job.failed"])
    with get_sessionmaker().begin() as session:
        jobs.fail_unsent_job(session, queued(tmp_path), "broker down")
    deliver_until(lambda: deliveries_of(hook)[0].status != "pending")
    [delivery] = deliveries_of(hook)
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("failed", 2, None)
    assert "refused" in delivery.last_error.lower() and delivery.finished_at is not None
    assert webhooks.deliver_due(get_settings()) == {"delivered": 0, "pending": 0, "failed": 0}  # nothing more is sent
    with get_sessionmaker().begin() as session:  # the metrics' counter of attempts: one retried, one given up
        from core.service.event_counts import event_counts

        counted = event_counts(session)
        assert (counted[("webhook.attempt", "retried")], counted[("webhook.attempt", "failed")]) == (1, 1)
        assert counted[("job.failed", "train")] == 1


def test_two_senders_never_take_one_delivery(database, tmp_path):
    hook = add_webhook("http://127.0.0.1:9/hook", ["job.cancelled"])
    with get_sessionmaker().begin() as session:
        jobs.request_cancel(session, queued(tmp_path))
    with get_sessionmaker().begin() as first:
        taken, _ = webhooks.claim_next(first, settings=get_settings())
    with get_sessionmaker().begin() as second:
        assert webhooks.claim_next(second, settings=get_settings()) is None
    assert [taken] == [d.id for d in deliveries_of(hook)]


def test_a_lost_worker_is_reported_once_and_cleared_when_seen(database):
    hook = add_webhook("http://127.0.0.1:9/hook", ["worker.lost"])
    with get_sessionmaker().begin() as session:
        jobs.register_worker(session, hostname="w1@test", queues=["gpu"], gpu="0", pid=1)
        session.flush()
        session.query(WorkerRecord).update({"last_seen": utcnow().replace(year=2000)})
    for _ in range(2):  # two reapers: one report
        with get_sessionmaker().begin() as session:
            webhooks.report_lost_workers(session)
    [delivery] = deliveries_of(hook)
    body = json.loads(delivery.body)
    assert delivery.event == "worker.lost" and body["worker"]["hostname"] == "w1@test"
    assert body["worker"]["queues"] == ["gpu"] and body["worker"]["running_job_ids"] == []
    with get_sessionmaker().begin() as session:
        assert [w.hostname for w in webhooks.lost_workers(session)] == ["w1@test"]
        jobs.worker_seen(session, "w1@test")
    with get_sessionmaker().begin() as session:
        assert webhooks.lost_workers(session) == []


def reaper_pass() -> list[int]:
    """One step of a worker's reaper, in the order worker.dispatch runs it: report lost workers, requeue lost jobs."""
    with get_sessionmaker().begin() as session:
        webhooks.report_lost_workers(session)
        return [job.id for job in jobs.requeue_lost_jobs(session)]


def age(model, where, seconds: float, *columns: str) -> None:
    """Set the rows' timestamp columns to `seconds` ago (a process silent that long)."""
    with get_sessionmaker().begin() as session:
        session.query(model).filter(where).update({column: utcnow() - timedelta(seconds=seconds) for column in columns})


def test_a_worker_killed_mid_job_is_reported_with_the_job_it_was_running(database, tmp_path, settings_override):
    """The job's last heartbeat may be a beat older than its worker's row: the reaper must not requeue the
    job (and so forget whose it was) before the worker itself is found lost, or the report names no job."""
    settings_override(STALE_AFTER_SECONDS="60")
    hook = add_webhook("http://127.0.0.1:9/hook", ["worker.lost"])
    job_id = queued(tmp_path)
    with get_sessionmaker().begin() as session:
        jobs.register_worker(session, hostname="killed@test", queues=["gpu"], gpu="0", pid=1)
    age(WorkerRecord, WorkerRecord.hostname == "killed@test", 120, "started_at")
    with get_sessionmaker().begin() as session:
        assert jobs.claim_job(session, job_id, owner="killed@test:t1", host="killed@test") is not None
    age(Job, Job.id == job_id, 65, "heartbeat_at")  # stale, its worker's row not yet: the kill came between beats
    age(WorkerRecord, WorkerRecord.hostname == "killed@test", 58, "last_seen")
    assert reaper_pass() == [] and deliveries_of(hook) == []
    with get_sessionmaker().begin() as session:
        assert session.get(Job, job_id).status == "running"  # still its worker's, which is not yet lost
    age(WorkerRecord, WorkerRecord.hostname == "killed@test", 61, "last_seen")
    assert reaper_pass() == [job_id]
    [delivery] = deliveries_of(hook)
    assert json.loads(delivery.body)["worker"]["running_job_ids"] == [job_id]


def test_a_worker_restarted_under_its_name_reports_the_one_before_lost_and_its_job_is_requeued(
    database, tmp_path, settings_override
):
    """compose restarts a killed worker's container under the same name: the new worker's row replaces the
    old one, which is reported lost (with its job) at that moment; the job, whose lease the old process
    held, is requeued by the next reaper step although a live worker of that name exists."""
    settings_override(STALE_AFTER_SECONDS="60")
    hook = add_webhook("http://127.0.0.1:9/hook", ["worker.lost"])
    job_id = queued(tmp_path)
    with get_sessionmaker().begin() as session:
        jobs.register_worker(session, hostname="again@test", queues=["gpu"], gpu="0", pid=7)
    age(WorkerRecord, WorkerRecord.hostname == "again@test", 300, "started_at")
    with get_sessionmaker().begin() as session:
        assert jobs.claim_job(session, job_id, owner="again@test:t1", host="again@test") is not None
    age(Job, Job.id == job_id, 65, "heartbeat_at", "started_at")
    with get_sessionmaker().begin() as session:  # what worker.runtime.serve_worker does at start
        assert webhooks.report_replaced_worker(session, "again@test")
        jobs.register_worker(session, hostname="again@test", queues=["gpu"], gpu="0", pid=7)
    [delivery] = deliveries_of(hook)
    assert json.loads(delivery.body)["worker"]["running_job_ids"] == [job_id]
    assert reaper_pass() == [job_id]
    with get_sessionmaker().begin() as session:  # a clean stop unregisters: nothing to report at the next start
        jobs.unregister_worker(session, "again@test")
        assert not webhooks.report_replaced_worker(session, "again@test")


def test_bad_configuration_names_its_field(database):
    for url in ("ftp://example.org/x", "example.org/hook", "http://", "javascript:alert(1)", "http://a b/"):
        with pytest.raises(UserInputError) as error:
            add_webhook(url)
        assert error.value.field == "url" and "\n" not in str(error.value)
    with pytest.raises(UserInputError) as error:
        add_webhook("http://example.org/x", ["job.finished"])
    assert error.value.field == "events"
    with pytest.raises(UserInputError) as error:
        add_webhook("http://example.org/x", secret="short")
    assert error.value.field == "secret"
    with get_sessionmaker().begin() as session, pytest.raises(PermissionDenied):
        webhooks.add(session, Actor(7, "bob", "member"), "http://example.org/x", ["job.failed"], settings=get_settings())


def test_the_cli_adds_lists_tests_delivers_and_removes(database, receiver):
    import re

    from click.testing import CliRunner

    from leukemia.cli import main

    def cli(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(main, ["webhooks", *args])
        return result.exit_code, result.output

    code, output = cli("add", "ftp://example.org/hook")
    assert code == 2 and output == "error: url: 'ftp://example.org/hook' is not an http:// or https:// address with a host\n"
    code, output = cli("add", receiver.url, "--event", "job.failed", "--event", "worker.lost")
    assert code == 0 and "webhook 1 added for job.failed, worker.lost" in output
    receiver.secret = re.search(r"secret: (\S+)", output).group(1)
    assert cli("list")[1].splitlines()[1].startswith(f"1\tenabled\t{receiver.url}\tjob.failed,worker.lost")
    assert cli("test", "1") == (0, "delivery 1 queued\n")
    assert cli("deliver") == (0, "delivered 1, to retry 0, failed 0\n")
    assert receiver.of("webhook.test")[0]["verified"]
    code, output = cli("deliveries", "1")
    assert code == 0 and "1\twebhook.test\tdelivered\t200\t1\t" in output and "(1 deliveries)" in output
    assert cli("redeliver", "1") == (0, "delivery 2 queued\n")
    assert cli("disable", "1") == (0, "webhook 1 disabled\n")
    assert cli("deliveries", "9") == (2, "error: webhook 9 not found\n")
    assert cli("remove", "1") == (0, "webhook 1 removed\n")
    assert cli("list") == (0, "no webhooks\n")


# --- the admin API and pages ---------------------------------------------------------------------

AUTH = {"Authorization": "Bearer test-api-token"}  # conftest's WEB_API_TOKEN: the admin's token


def add_user(username: str, role: str) -> None:
    from werkzeug.security import generate_password_hash

    from core.service.records import User

    with get_sessionmaker().begin() as session:
        session.add(User(username=username, password_hash=generate_password_hash("pw-123456"), role=role, created_at=utcnow()))


def test_the_api_manages_webhooks_and_shows_their_deliveries(app, client, receiver):
    from core.service.records import AuditEntry
    from tests.web_helpers import login

    created = client.post("/api/webhooks", json={"url": receiver.url, "events": ["job.cancelled"]}, headers=AUTH)
    assert created.status_code == 201, created.json
    hook = created.json
    assert len(hook["secret"]) == 64 and hook["enabled"] is True and hook["events"] == ["job.cancelled"]
    listed = client.get("/api/webhooks", headers=AUTH).json["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]  # shown once only

    for body, field in (
        ({"url": "ftp://example.org/x"}, "url"),
        ({"url": "http://x/", "events": ["job.done"]}, "events"),
        ({"url": "http://x/", "secret": "short"}, "secret"),
    ):
        refused = client.post("/api/webhooks", json=body, headers=AUTH)
        assert refused.status_code == 400 and refused.json["field"] == field, refused.json
    assert client.patch(f"/api/webhooks/{hook['id']}", json={"url": "gopher://x"}, headers=AUTH).json["field"] == "url"

    changed = client.patch(
        f"/api/webhooks/{hook['id']}", json={"enabled": False, "events": ["job.failed", "worker.lost"]}, headers=AUTH
    )
    assert changed.status_code == 200 and changed.json["enabled"] is False
    assert changed.json["events"] == ["job.failed", "worker.lost"]
    client.patch(f"/api/webhooks/{hook['id']}", json={"enabled": True}, headers=AUTH)

    queued = client.post(f"/api/webhooks/{hook['id']}/test", headers=AUTH)
    assert queued.status_code == 201 and queued.json["event"] == "webhook.test" and queued.json["status"] == "pending"
    receiver.secret = hook["secret"]
    deliver_until(lambda: receiver.of("webhook.test"))
    page = client.get(f"/api/webhooks/{hook['id']}/deliveries", headers=AUTH).json
    assert page["total"] == 1 and page["deliveries"][0]["status"] == "delivered"
    assert page["deliveries"][0]["response_code"] == 200 and page["deliveries"][0]["attempts"] == 1
    assert receiver.of("webhook.test")[0]["verified"]

    again = client.post(f"/api/webhooks/deliveries/{queued.json['id']}/redeliver", headers=AUTH)
    assert again.status_code == 201 and again.json["id"] != queued.json["id"] and again.json["body"] == queued.json["body"]
    assert client.post("/api/webhooks/deliveries/99999/redeliver", headers=AUTH).status_code == 404
    assert client.get("/api/webhooks/99999/deliveries", headers=AUTH).status_code == 404

    # a viewer, logged in, may read jobs but not webhooks
    add_user("vera", "viewer")
    viewer = app.test_client()
    login(viewer, "vera", "pw-123456")
    assert viewer.get("/api/jobs").status_code == 200
    assert viewer.get("/api/webhooks").status_code == 403
    assert viewer.get("/admin/webhooks").status_code == 403
    assert viewer.get(f"/admin/webhooks/{hook['id']}").status_code == 403

    assert client.delete(f"/api/webhooks/{hook['id']}", headers=AUTH).json["id"] == hook["id"]
    assert client.get("/api/webhooks", headers=AUTH).json["webhooks"] == []
    with get_sessionmaker().begin() as session:
        actions = [a for (a,) in session.execute(select_audit(AuditEntry))]
    assert actions == [
        "webhook.create",
        "webhook.update",
        "webhook.update",
        "webhook.test",
        "webhook.redeliver",
        "webhook.delete",
    ]


def select_audit(entry):
    from sqlalchemy import select

    return select(entry.action).where(entry.target_type == "webhook").order_by(entry.id)


def test_the_pages_add_disable_and_list_deliveries(client, receiver):
    from tests.conftest import WEB_ADMIN
    from tests.web_helpers import csrf_token, login

    login(client, *WEB_ADMIN)
    token = csrf_token(client, "/admin/webhooks")
    bad = client.post("/admin/webhooks", data={"url": "mailto:me@example.org", "events": ["job.failed"], "csrf_token": token})
    assert bad.status_code == 400 and "url:" in bad.get_data(as_text=True)
    added = client.post(
        "/admin/webhooks",
        data={"url": receiver.url, "events": ["job.failed", "worker.lost"], "csrf_token": token},
        follow_redirects=True,
    )
    page = added.get_data(as_text=True)
    assert added.status_code == 200 and "shown this once" in page and receiver.url in page
    with get_sessionmaker().begin() as session:
        [hook] = webhooks.list_webhooks(session, cli_actor())
        hook_id, secret = hook.id, hook.secret
    assert secret in page
    client.post(f"/admin/webhooks/{hook_id}/enabled", data={"enabled": "0", "csrf_token": token})
    with get_sessionmaker().begin() as session:
        assert webhooks.get_webhook(session, hook_id).enabled is False
    client.post(f"/admin/webhooks/{hook_id}/test", data={"csrf_token": token})
    history = client.get(f"/admin/webhooks/{hook_id}").get_data(as_text=True)
    assert "webhook.test" in history and "pending" in history
    assert "Webhooks</a>" in client.get("/").get_data(as_text=True)  # the admin's menu links the page
    client.post(f"/admin/webhooks/{hook_id}/delete", data={"csrf_token": token})
    with get_sessionmaker().begin() as session:
        assert webhooks.list_webhooks(session, cli_actor()) == []

    # lost workers: named above the job list (lost in the last day) and listed on the webhooks page
    with get_sessionmaker().begin() as session:
        jobs.register_worker(session, hostname="gone-1@test", queues=["gpu"], gpu=None, pid=1)
        jobs.register_worker(session, hostname="gone-long-ago@test", queues=["cpu"], gpu=None, pid=2)
        session.flush()
        session.query(WorkerRecord).update({"last_seen": utcnow().replace(year=2000)})
        webhooks.report_lost_workers(session)
        session.query(WorkerRecord).filter(WorkerRecord.hostname == "gone-long-ago@test").update(
            {"lost_at": utcnow().replace(year=2000)}
        )
    job_list = client.get("/").get_data(as_text=True)
    assert 'id="lost-workers"' in job_list and "gone-1@test" in job_list and "gone-long-ago@test" not in job_list
    admin_page = client.get("/admin/webhooks").get_data(as_text=True)
    assert "gone-1@test" in admin_page and "gone-long-ago@test" in admin_page


# --- real workers ---------------------------------------------------------------------------------


# One backend, to keep the suite short: the embedded one, where the sender's transactions share SQLite with the job's.
@pytest.mark.parametrize("service_backend", ["embedded"], indirect=True)
def test_real_workers_send_a_signed_job_succeeded_and_report_a_killed_worker_once(service_backend, tmp_path_factory):
    """A tiny job run by a real `leukemia worker` produces a signed job.succeeded delivery, while a receiver
    that hangs past WEBHOOK_TIMEOUT_SECONDS neither delays nor fails it; a second worker killed with
    SIGKILL is reported lost once (its heartbeat goes stale after STALE_AFTER_SECONDS=6)."""
    import os
    import secrets
    import signal

    from core.engine.data.synth import write_synthetic_dataset
    from tests.test_worker import TINY, WorkerProcess, stop_workers, submit, wait_for

    data = tmp_path_factory.mktemp("webhook-data") / "lab"
    write_synthetic_dataset(data, train=16, valid=8, test=4, image_size=32, seed=0)
    env = {
        **os.environ,
        **service_backend["env"],
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        "WEBHOOK_TIMEOUT_SECONDS": "1.5",
        "WEBHOOK_RETRY_SECONDS": "60",
    }
    token = secrets.token_hex(3)
    good, hanging = Receiver(), Receiver(hang=5.0)
    good_id = add_webhook(good.url, ["job.succeeded", "worker.lost"])
    hanging_id = add_webhook(hanging.url, ["job.succeeded"])
    log_dir = tmp_path_factory.mktemp("webhook-worker-logs")
    started: list[WorkerProcess] = []
    try:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:  # both start at once (each waits for its " ready.")
            starting = [pool.submit(WorkerProcess, env, [f"{name}-{token}"], name, log_dir) for name in ("main", "victim")]
            failures = []
            for future in starting:
                try:
                    started.append(future.result())
                except BaseException as failure:  # noqa: BLE001  (stop the other one in finally, then fail)
                    failures.append(failure)
            if failures:
                raise failures[0]
        main, victim = started
        victim.kill(signal.SIGKILL)  # its row stays; staleness accrues while the job runs

        job_id = submit("train", {"data_dir": str(data), "epochs": 1, **TINY}, queue=f"main-{token}")
        job = wait_for(lambda: (row := job_of(job_id)).finished_at and row, 120, f"job {job_id} to finish", main)
        assert (job.status, job.error) == ("succeeded", None)

        [delivered] = wait_for(
            lambda: [r for r in good.of("job.succeeded") if f'"id":{job_id},' in r["body"]],
            30,
            "the job.succeeded delivery",
            main,
        )
        body = json.loads(delivered["body"])
        assert delivered["verified"] and body["job"]["id"] == job_id and body["job"]["status"] == "succeeded"
        assert body["job"]["best_valid_accuracy"] is not None and body["job"]["worker_host"] == main.hostname
        timed_out = wait_for(
            lambda: [d for d in deliveries_of(hanging_id) if d.attempts >= 1],
            30,
            "the hanging receiver's attempt to be recorded",
            main,
        )
        assert timed_out[0].status == "pending" and "timed out" in timed_out[0].last_error
        assert job_of(job_id).status == "succeeded"  # the slow receiver changed nothing on the job

        def victim_reports() -> list[dict]:  # (the shared test database may hold other stale workers)
            return [r for r in good.of("worker.lost") if json.loads(r["body"])["worker"]["hostname"] == victim.hostname]

        lost = wait_for(victim_reports, 60, "the worker.lost delivery", main)
        report = json.loads(lost[0]["body"])["worker"]
        assert lost[0]["verified"] and report["hostname"] == victim.hostname
        assert report["queues"] == [f"victim-{token}"] and report["running_job_ids"] == []
        with get_sessionmaker().begin() as session:  # another reaper round, now: it reports the loss no second time
            assert victim.hostname not in webhooks.report_lost_workers(session)
        assert len(victim_reports()) == 1
        assert sum(victim.hostname in d.body for d in deliveries_of(good_id) if d.event == "worker.lost") == 1
        # Not before its last heartbeat was stale (by the rows' own times: the kill came after that heartbeat).
        with get_sessionmaker().begin() as session:
            record = session.query(WorkerRecord).filter_by(hostname=victim.hostname).one()
            assert (record.lost_at - record.last_seen).total_seconds() >= 6, (record.last_seen, record.lost_at)
    finally:
        stop_workers(*started)
        good.close()
        hanging.close()
        with get_sessionmaker().begin() as session:  # later tests on this database send to nobody
            for webhook_id in (good_id, hanging_id):
                webhooks.remove(session, cli_actor(), webhook_id)


def job_of(job_id: int) -> Job:
    with get_sessionmaker().begin() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job
