"""The test tiers (tests/tiers.py): a test is marked services, browser or slow from what it uses, so
the quick tier (README's command) needs no Redis, PostgreSQL, RabbitMQ or Chromium and starts no
long-lived process, with nobody marking a new test by hand."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import create_postgres_database
from tests.tiers import names_a_service, reach
from tests.web_helpers import web_and_worker

REPO = Path(__file__).resolve().parents[1]


class LongLived:
    """A helper class of tests/ that starts a process in a method."""

    def start(self) -> None:
        self.process = subprocess.Popen(["true"])


def through_a_helper_class() -> None:
    LongLived().start()


def importing_a_helper_inside() -> None:
    from tests.test_worker import WorkerProcess

    WorkerProcess({}, ["gpu"], "w", Path("."))


def driving_chromium() -> None:
    from playwright.sync_api import sync_playwright

    sync_playwright()


def quick_work() -> int:
    return sum(json.loads("[1, 2]"))


# Looked up by name in the tests below: a test that named them in its code would itself reach them
# and be marked slow, browser and services (the rule reads code, not what runs).
SAMPLES = {
    function.__name__: function
    for function in (
        through_a_helper_class,
        importing_a_helper_inside,
        web_and_worker,
        driving_chromium,
        quick_work,
        create_postgres_database,
    )
}


def reached(*names: str):
    return reach([SAMPLES[name] for name in names])


def test_processes_are_found_through_helpers_classes_local_imports_and_decorators() -> None:
    assert reached("through_a_helper_class").starts_a_process()
    assert reached("importing_a_helper_inside").starts_a_process()
    assert reached("web_and_worker").starts_a_process()  # a @contextmanager, followed to what it wraps
    assert not reached("quick_work").starts_a_process()


def test_browsers_and_service_addresses_are_found() -> None:
    assert reached("driving_chromium").drives_a_browser() and not reached("quick_work").drives_a_browser()
    assert reached("create_postgres_database").needs_services()
    assert not reached("quick_work", "through_a_helper_class").needs_services()


def test_backend_params_that_name_a_service() -> None:
    assert all(names_a_service(name) for name in ("redis+postgres", "postgresql", "postgres", "rabbitmq", "Redis"))
    assert not any(names_a_service(value) for value in ("embedded", "sqlite", None, 3, "postgres-free"))


class TierDump:
    """A plugin that keeps, per collected test, its tiers and the fixtures it uses."""

    def pytest_collection_finish(self, session) -> None:
        tiers = ("services", "browser", "slow")
        self.items = {
            item.nodeid: {"tiers": {m.name for m in item.iter_markers() if m.name in tiers}, "fixtures": set(item.fixturenames)}
            for item in session.items
        }


def test_the_suite_is_tiered_by_what_each_test_uses() -> None:
    """Collect the whole suite as `.ci/run` does (in this process: the modules are imported already)
    and check the tiers that matter: every test on a service backend is services, every browser test
    is browser, every real worker test slow, and the job service's embedded-backend tests stay quick."""
    dump = TierDump()
    code = pytest.main(
        ["--collect-only", "-q", "-m", "", "-p", "no:cacheprovider", "--rootdir", str(REPO), str(REPO / "tests")], plugins=[dump]
    )
    assert code == pytest.ExitCode.OK
    items = dump.items
    quick = {nodeid for nodeid, facts in items.items() if not facts["tiers"]}

    def params(nodeid: str) -> str:
        return nodeid.partition("[")[2]

    on_services = {n for n in items if any(word in params(n) for word in ("redis", "postgres", "rabbitmq"))}
    assert on_services and not on_services & quick, sorted(on_services & quick)
    browser = {n for n in items if Path(n.split("::")[0]).stem.endswith("browser")}
    assert browser and all("browser" in items[n]["tiers"] for n in browser)
    workers = {n for n, facts in items.items() if {"main_worker", "twin_worker"} & facts["fixtures"]}
    assert workers and all("slow" in items[n]["tiers"] for n in workers)
    embedded_jobs = {n for n in quick if n.startswith("tests/test_jobs.py::") and n.endswith("[embedded]")}
    assert len(embedded_jobs) >= 10, sorted(quick)
