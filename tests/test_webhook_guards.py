"""Webhook sending under stress and abuse, against real receivers on loopback: a receiver trickling
its answer is cut off at the attempt's deadline; two senders racing send each delivery once; a
disabled webhook's retries wait; addresses that are not public are refused when configured and
again at every attempt (DNS rebinding), with an error that tells nothing about ports; credentials
in a URL are never shown."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from core.common.errors import UserInputError
from core.service import webhooks
from core.service.access import cli_actor
from core.service.db import get_sessionmaker, upgrade_database
from core.service.records import AuditEntry
from core.service.settings import get_settings
from core.service.webhooks.transport import NOT_ALLOWED, Attempt
from tests.conftest import create_postgres_database, drop_postgres_database, postgres_url
from tests.test_webhooks import AUTH, SECRET, Receiver, add_webhook, deliver_until, deliveries_of
from tests.web_helpers import free_port

LOOPBACK = "127.0.0.0/8"


def allow(settings_override, networks: str | None) -> None:
    """Set WEBHOOK_ALLOWED_NETWORKS (None: unset, the default that refuses every non-public address)."""
    settings_override(WEBHOOK_ALLOWED_NETWORKS=networks)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request, isolated_home, settings_override):
    """A fresh job database of either backend, loopback receivers allowed, a 2 s attempt deadline."""
    postgres = create_postgres_database() if request.param == "postgresql" else None
    settings_override(
        DATABASE_URL=postgres_url(postgres) if postgres else None,
        WEBHOOK_TIMEOUT_SECONDS="2",
        WEBHOOK_RETRY_SECONDS="0.3",
        WEBHOOK_ALLOWED_NETWORKS=LOOPBACK,
    )
    upgrade_database()
    yield request.param
    settings_override.undo()  # the engines let go of the database before it is dropped
    if postgres:
        drop_postgres_database(postgres)


sqlite_only = pytest.mark.parametrize("database", ["sqlite"], indirect=True)


def queue_test(webhook_id: int) -> int:
    with get_sessionmaker().begin() as session:
        return webhooks.send_test(session, cli_actor(), webhook_id).id


def race(senders: int, until, seconds: float) -> list[float]:
    """`senders` threads run delivery passes at once (as several workers' sender threads do) until
    until() holds or `seconds` pass; returns how long each pass took. A failure in any of them, or a
    pass still running 30 s later, fails the test."""
    stop, failures, took = threading.Event(), [], []

    def sender() -> None:
        while not stop.is_set():
            started = time.monotonic()
            try:
                webhooks.deliver_due(get_settings())
            except Exception as error:  # noqa: BLE001  (reported below)
                failures.append(error)
                return
            took.append(time.monotonic() - started)
            time.sleep(0.05)

    threads = [threading.Thread(target=sender, name=f"sender-{n}", daemon=True) for n in range(senders)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not failures, failures
    assert not any(thread.is_alive() for thread in threads), "a delivery pass was still running 30 s later"
    return took


# --- the deadline and the lease -------------------------------------------------------------------


class TricklingReceiver:
    """A real HTTP server on 127.0.0.1 that reads the request, counts it, then answers one byte
    per second: every single read is quick, the whole answer takes most of a minute."""

    ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

    def __init__(self) -> None:
        self.requests: list[float] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(time.monotonic())
                try:
                    for byte in TricklingReceiver.ANSWER:
                        self.wfile.write(bytes([byte]))
                        time.sleep(1.0)
                except OSError:  # the sender hung up
                    pass

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@sqlite_only
def test_a_trickling_receiver_is_cut_off_at_the_deadline_and_sent_to_once(database, monkeypatch, settings_override):
    """WEBHOOK_TIMEOUT_SECONDS (2 s) bounds the whole attempt, not each read; the lease (2 s + 1 s here)
    outlasts it, so a second sender racing the first never sends the delivery again."""
    monkeypatch.setattr(webhooks.sender, "LEASE_MARGIN_SECONDS", 1.0)
    settings_override(WEBHOOK_RETRY_SECONDS="60")  # no retry within the test
    receiver = TricklingReceiver()
    try:
        hook = add_webhook(receiver.url, ["job.failed"])
        queue_test(hook)
        took = race(2, lambda: False, 6.0)  # two senders, polling for six seconds
        [delivery] = deliveries_of(hook)
        assert len(receiver.requests) == 1, receiver.requests
        assert (delivery.status, delivery.attempts, delivery.response_code) == ("pending", 1, None)
        assert delivery.last_error == "timed out: no complete answer within 2 s"
        assert max(took) < 2.0 + 1.0, took  # the deadline, plus a little to claim and record
    finally:
        receiver.close()


def test_two_senders_racing_send_each_delivery_once(database, monkeypatch):
    """Each delivery takes 0.6 s to answer and a lease lasts 2.5 s here: a lease taken for a whole
    batch runs out while the first deliveries are sent, and the other sender would send the rest again."""
    monkeypatch.setattr(webhooks.sender, "LEASE_MARGIN_SECONDS", 0.5)
    receiver = Receiver(hang=0.6)
    try:
        hook = add_webhook(receiver.url, ["job.failed"])
        queued = [queue_test(hook) for _ in range(6)]
        race(2, lambda: all(d.status == "delivered" for d in deliveries_of(hook)), 30.0)
        time.sleep(1.0)  # any second sending of the last ones lands
        counts = Counter(int(r["delivery"]) for r in receiver.requests)
        assert counts == Counter({delivery_id: 1 for delivery_id in queued}), counts
        assert {(d.status, d.attempts) for d in deliveries_of(hook)} == {("delivered", 1)}
        assert all(r["verified"] for r in receiver.requests)
    finally:
        receiver.close()


@sqlite_only
def test_a_disabled_webhooks_retries_wait_until_it_is_enabled(database):
    receiver = Receiver(codes=(500,))
    try:
        hook = add_webhook(receiver.url, ["job.failed"])
        delivery_id = queue_test(hook)
        webhooks.deliver_due(get_settings())
        assert len(receiver.requests) == 1  # the 500: pending, retried after 0.3 s
        with get_sessionmaker().begin() as session:
            webhooks.change(session, cli_actor(), hook, enabled=False, settings=get_settings())
        later = queue_test(hook)
        for _ in range(8):  # well past the retry time
            webhooks.deliver_due(get_settings())
            time.sleep(0.1)
        assert len(receiver.requests) == 1
        assert {d.id: d.status for d in deliveries_of(hook)} == {delivery_id: "pending", later: "pending"}
        with get_sessionmaker().begin() as session:
            webhooks.change(session, cli_actor(), hook, enabled=True, settings=get_settings())
        deliver_until(lambda: all(d.status == "delivered" for d in deliveries_of(hook)))
        assert sorted(int(r["delivery"]) for r in receiver.requests) == [delivery_id, delivery_id, later]
    finally:
        receiver.close()


@sqlite_only
def test_a_pass_sends_a_delivery_at_most_once(database, settings_override):
    """A retry that falls due while the pass is still sending waits for the next pass (one second
    later in a worker), so a failing receiver is not hammered within one pass."""
    settings_override(WEBHOOK_RETRY_SECONDS="0.01")
    receiver = Receiver(codes=(500, 500, 500, 500), hang=0.05)
    try:
        hook = add_webhook(receiver.url, ["job.failed"])
        queue_test(hook)
        queue_test(hook)
        assert webhooks.deliver_due(get_settings()) == {"delivered": 0, "pending": 2, "failed": 0}
        assert len(receiver.requests) == 2
    finally:
        receiver.close()


# --- addresses ------------------------------------------------------------------------------------

REFUSED = {  # url: where (address) and why, as the refusal names them
    "http://127.0.0.1/hook": "127.0.0.1 is not a public address (loopback)",
    "http://localhost:8080/hook": "localhost (127.0.0.1) is not a public address (loopback)",
    "http://10.1.2.3/hook": "10.1.2.3 is not a public address (private)",
    "https://192.168.0.10/hook": "192.168.0.10 is not a public address (private)",
    "http://172.16.5.4/hook": "172.16.5.4 is not a public address (private)",
    "http://169.254.169.254/latest/meta-data/": "169.254.169.254 is not a public address (link-local)",
    "http://0.0.0.0:8000/": "0.0.0.0 is not a public address (unspecified)",
    "http://0/": "0 (0.0.0.0) is not a public address (unspecified)",
    "http://2130706433/hook": "2130706433 (127.0.0.1) is not a public address (loopback)",
    "http://0x7f.1/hook": "0x7f.1 (127.0.0.1) is not a public address (loopback)",
    "http://[::1]:8000/hook": "::1 is not a public address (loopback)",
    "http://[::ffff:127.0.0.1]/hook": "::ffff:127.0.0.1 (::ffff:7f00:1) is not a public address (loopback: it embeds 127.0.0.1)",
    "http://[fe80::1]/hook": "fe80::1 is not a public address (link-local)",
    "http://[fd00::5]/hook": "fd00::5 is not a public address (private)",
    "http://100.64.0.1/hook": "100.64.0.1 is not a public address (non-public)",
    "http://224.0.0.1/hook": "224.0.0.1 is not a public address (multicast)",
}


@sqlite_only
def test_addresses_that_are_not_public_are_refused_unless_allowed(database, settings_override):
    allow(settings_override, None)
    for url, reason in REFUSED.items():
        with pytest.raises(UserInputError) as refused:
            add_webhook(url)
        assert refused.value.field == "url", url
        assert str(refused.value) == (
            f"url: {reason}; webhooks reach such an address only when WEBHOOK_ALLOWED_NETWORKS lists it"
        ), url
    for url, message in (
        ("http://example.org:99999/hook", "url: 'http://example.org:99999/hook' has a port that is not a number from 1 to 65535"),
        ("http://example.org:0/hook", "url: 'http://example.org:0/hook' has a port that is not a number from 1 to 65535"),
        ("http://[::1", "url: 'http://[::1' is not an http:// or https:// address with a host"),
    ):
        with pytest.raises(UserInputError) as refused:
            add_webhook(url)
        assert (refused.value.field, str(refused.value)) == ("url", message)
    with get_sessionmaker().begin() as session:
        hook = webhooks.add(session, cli_actor(), "https://hooks.example.org/x", ["job.failed"], settings=get_settings()).id
        with pytest.raises(UserInputError) as refused:  # a change is checked as an addition is
            webhooks.change(session, cli_actor(), hook, url="http://[::1]/", settings=get_settings())
        assert refused.value.field == "url"

    allow(settings_override, "127.0.0.1, ::1/128, 10.0.0.0/8")  # the allow-list lets exactly these through
    for url in ("http://127.0.0.1/hook", "http://[::1]:8000/hook", "http://10.1.2.3/hook", "http://localhost:8080/"):
        add_webhook(url)
    for url in ("http://127.0.0.2/hook", "http://192.168.0.10/hook", "http://[fd00::5]/hook"):
        with pytest.raises(UserInputError):
            add_webhook(url)


# Issue 23: addresses that embed an IPv4 are judged by it; the IANA special-purpose blocks are refused.
EMBEDDING_OR_SPECIAL = {
    "http://[2002:7f00:1::]/hook": "2002:7f00:1:: is not a public address (loopback: it embeds 127.0.0.1)",  # 6to4
    "http://[64:ff9b::a00:1]/hook": "64:ff9b::a00:1 is not a public address (private: it embeds 10.0.0.1)",  # NAT64
    "http://[::7f00:1]/hook": "::7f00:1 is not a public address (loopback: it embeds 127.0.0.1)",  # IPv4-compatible
    "http://[::ffff:a9fe:a9fe]/": "::ffff:a9fe:a9fe is not a public address (link-local: it embeds 169.254.169.254)",
    "http://192.0.0.8/hook": "192.0.0.8 is not a public address (special-purpose: 192.0.0.0/24)",
    "http://192.0.0.9/hook": "192.0.0.9 is not a public address (special-purpose: 192.0.0.0/24)",
    "http://192.88.99.1/hook": "192.88.99.1 is not a public address (special-purpose: 192.88.99.0/24)",
    "http://198.51.100.7/hook": "198.51.100.7 is not a public address (special-purpose: 198.51.100.0/24)",
    "http://[2001:db8::1]/hook": "2001:db8::1 is not a public address (special-purpose: 2001:db8::/32)",
    "http://[2001::1]/hook": "2001::1 is not a public address (special-purpose: 2001::/23)",  # Teredo
    "http://[64:ff9b:1::7f00:1]/hook": "64:ff9b:1::7f00:1 is not a public address (special-purpose: 64:ff9b:1::/48)",
    "http://[100::1]/hook": "100::1 is not a public address (special-purpose: 100::/64)",
}
UNRESOLVABLE = {  # host forms no lookup can resolve: refused at configuration, not left to fail at every attempt
    "http://[v1.x]/hook": "url: 'http://[v1.x]/hook' has a host that is neither a name nor an IP address",
    "http://%31%32%37.0.0.1/hook": "url: 'http://%31%32%37.0.0.1/hook' has a host that is neither a name nor an IP address",
    "http://exa%6dple.org/hook": "url: 'http://exa%6dple.org/hook' has a host that is neither a name nor an IP address",
    "http://under_score!.org/": "url: 'http://under_score!.org/' has a host that is neither a name nor an IP address",
}


@sqlite_only
def test_addresses_embedding_an_ipv4_are_judged_by_it_and_special_purpose_ones_refused(database, settings_override):
    allow(settings_override, None)
    for url, reason in EMBEDDING_OR_SPECIAL.items():
        with pytest.raises(UserInputError) as refused:
            add_webhook(url)
        assert str(refused.value) == (
            f"url: {reason}; webhooks reach such an address only when WEBHOOK_ALLOWED_NETWORKS lists it"
        ), url
    for url, message in UNRESOLVABLE.items():
        with pytest.raises(UserInputError) as refused:
            add_webhook(url)
        assert (refused.value.field, str(refused.value)) == ("url", message)
    for url in (
        "http://[2002:808:808::1]/hook",
        "http://[64:ff9b::808:808]/hook",
        "http://[::ffff:8.8.8.8]/",
        "https://hooks.example.org/x",
        "http://8.8.8.8/",
    ):  # a public IPv4, however embedded
        add_webhook(url)
    allow(settings_override, "127.0.0.0/8, 192.0.0.8")  # the allow-list judges the embedded address, and lets a block in
    for url in ("http://[2002:7f00:1::]/hook", "http://[64:ff9b::7f00:1]/hook", "http://192.0.0.8/hook"):
        add_webhook(url)
    with pytest.raises(UserInputError):
        add_webhook("http://192.0.0.9/hook")


def test_a_bad_url_is_one_line_naming_url_in_the_api_the_form_and_the_cli(app, client, settings_override):
    from click.testing import CliRunner

    from leukemia.cli import main
    from tests.conftest import WEB_ADMIN
    from tests.web_helpers import csrf_token, login

    allow(settings_override, None)
    hook = client.post("/api/webhooks", json={"url": "https://hooks.example.org/x"}, headers=AUTH).json["id"]
    for url in ("http://[::1", "http://[::1]/hook", "http://2130706433/", "http://example.org:99999/"):
        answer = client.post("/api/webhooks", json={"url": url, "events": ["job.failed"]}, headers=AUTH)
        assert answer.status_code == 400 and answer.json["field"] == "url", (url, answer.json)
        changed = client.patch(f"/api/webhooks/{hook}", json={"url": url}, headers=AUTH)
        assert changed.status_code == 400 and changed.json["field"] == "url", (url, changed.json)
        result = CliRunner().invoke(main, ["webhooks", "add", url])
        assert result.exit_code == 2 and result.output.startswith("error: url: "), (url, result.output)
        assert result.output.count("\n") == 1, result.output
    login(client, *WEB_ADMIN)
    token = csrf_token(client, "/admin/webhooks")
    for url in ("http://[::1", "http://0.0.0.0/"):
        page = client.post("/admin/webhooks", data={"url": url, "events": ["job.failed"], "csrf_token": token})
        assert page.status_code == 400 and "url: " in page.get_data(as_text=True), url


@sqlite_only
def test_a_refused_target_is_never_contacted_and_its_error_tells_nothing_of_its_ports(database, settings_override):
    """Configured while loopback was allowed, then the allow-list narrowed: the open port and the
    closed one record the same generic error, and the listening receiver gets nothing."""
    listening = Receiver()
    try:
        open_hook = add_webhook(listening.url, ["job.failed"])
        closed_hook = add_webhook(f"http://127.0.0.1:{free_port()}/hook", ["job.failed"])
        allow(settings_override, None)
        queue_test(open_hook)
        queue_test(closed_hook)
        assert webhooks.deliver_due(get_settings()) == {"delivered": 0, "pending": 2, "failed": 0}
        [opened], [closed] = deliveries_of(open_hook), deliveries_of(closed_hook)
        assert opened.last_error == closed.last_error == NOT_ALLOWED
        assert opened.response_code is closed.response_code is None
        assert listening.requests == []
    finally:
        listening.close()


@sqlite_only
def test_a_name_is_resolved_once_per_attempt_and_the_checked_address_is_the_one_connected(
    database, monkeypatch, settings_override
):
    """DNS rebinding. The name's answers come from the test (the only stand-in here: no DNS server to
    script); 127.0.0.1 is allowed, 127.0.0.2 is not, and a second receiver listens there on the same port.
    A sender that looked the name up again to connect would reach the impostor; one that did not
    check at send time would send to a name that now resolves to a refused address."""
    allow(settings_override, "127.0.0.1/32")
    port = free_port()
    good, impostor = Receiver(port=port), Receiver(host="127.0.0.2", port=port)
    real_getaddrinfo = socket.getaddrinfo
    answers: list[str] = []  # the next answers for the name, the last one repeated

    def scripted(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host != "hooks.rebind.test":
            return real_getaddrinfo(host, *args, **kwargs)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, args[0] if args else kwargs.get("port")))]

    monkeypatch.setattr(socket, "getaddrinfo", scripted)
    try:
        answers[:] = ["127.0.0.1"]
        hook = add_webhook(f"http://hooks.rebind.test:{port}/hook", ["job.failed"])
        answers[:] = ["127.0.0.1", "127.0.0.2"]  # checked as 127.0.0.1, then rebound
        first = queue_test(hook)
        assert webhooks.deliver_due(get_settings())["delivered"] == 1
        assert [int(r["delivery"]) for r in good.requests] == [first] and impostor.requests == []

        answers[:] = ["127.0.0.2"]  # the name now resolves to a refused address
        queue_test(hook)
        webhooks.deliver_due(get_settings())
        assert [d.last_error for d in deliveries_of(hook)][0] == NOT_ALLOWED
        assert len(good.requests) == 1 and impostor.requests == []
    finally:
        good.close()
        impostor.close()


def test_credentials_in_a_url_are_sent_but_never_shown(app, client, settings_override):
    import base64

    from click.testing import CliRunner

    from leukemia.cli import main
    from tests.conftest import WEB_ADMIN
    from tests.web_helpers import login

    allow(settings_override, LOOPBACK)
    receiver = Receiver()
    try:
        secret_url = receiver.url.replace("http://", "http://hook-user:s3cr%40t-pw@")
        shown = receiver.url.replace("http://", "http://***@")
        created = client.post("/api/webhooks", json={"url": secret_url, "events": ["job.failed"], "secret": SECRET}, headers=AUTH)
        assert created.status_code == 201 and created.json["url"] == shown, created.json
        hook = created.json["id"]
        assert client.get("/api/webhooks", headers=AUTH).json["webhooks"][0]["url"] == shown
        client.patch(f"/api/webhooks/{hook}", json={"url": secret_url}, headers=AUTH)
        assert CliRunner().invoke(main, ["webhooks", "list"]).output.splitlines()[1].split("\t")[2] == shown
        login(client, *WEB_ADMIN)
        for page in ("/admin/webhooks", f"/admin/webhooks/{hook}"):
            text = client.get(page).get_data(as_text=True)
            assert shown in text and "s3cr" not in text and "hook-user" not in text, page

        queue_test(hook)
        deliver_until(lambda: receiver.requests)
        [request] = receiver.requests
        assert request["verified"] and "s3cr" not in request["body"]  # the test event names the webhook's url
        assert request["authorization"] == "Basic " + base64.b64encode(b"hook-user:s3cr@t-pw").decode()
        client.delete(f"/api/webhooks/{hook}", headers=AUTH)
        with get_sessionmaker().begin() as session:
            details = [entry.detail for entry in session.query(AuditEntry).filter(AuditEntry.target_type == "webhook")]
        assert [d.get("url") for d in details if "url" in d] == [shown, shown, shown]
        assert "s3cr" not in repr(details) and "hook-user" not in repr(details)
    finally:
        receiver.close()


def test_a_sender_whose_lease_ran_out_does_not_overwrite_the_outcome_of_the_one_that_took_over(
    database, monkeypatch, settings_override
):
    """The outcome is recorded against the lease the delivery was sent under: a sender that stalled past
    its lease (here: claimed, then nothing for 1.2 s with a 1 s lease) records nothing."""
    settings_override(WEBHOOK_TIMEOUT_SECONDS="1")
    monkeypatch.setattr(webhooks.sender, "LEASE_MARGIN_SECONDS", 0.0)
    receiver = Receiver()
    try:
        hook = add_webhook(receiver.url, ["job.failed"])
        delivery_id = queue_test(hook)
        with get_sessionmaker().begin() as session:
            _, stalled_lease = webhooks.claim_next(session, settings=get_settings())
        time.sleep(1.2)
        assert webhooks.deliver_due(get_settings())["delivered"] == 1  # another sender takes it over, sends and records it
        with get_sessionmaker().begin() as session:
            late = webhooks.record_attempt(
                session, delivery_id, stalled_lease, Attempt(False, None, "timed out"), settings=get_settings()
            )
        assert late is None
        [delivery] = deliveries_of(hook)
        assert (delivery.status, delivery.attempts, delivery.last_error) == ("delivered", 1, None)
        assert len(receiver.requests) == 1
    finally:
        receiver.close()
