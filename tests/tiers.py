"""The test tiers, decided from what a test uses, so a new test lands in its tier with nobody marking it.

- services: a backend param that names Redis, PostgreSQL or RabbitMQ (`service_backend`'s
  "redis+postgres", `app`'s "postgresql", any fixture's "rabbitmq", ...), or code that reaches one of
  them at its address on this machine (a string holding 127.0.0.1 or localhost with :6379, :5432 or
  :5672, or libpq's "host=127.0.0.1": `create_postgres_database` and `postgres_url` carry them).
- browser: code that launches Chromium through Playwright (`sync_playwright`).
- slow: code that starts a process that lives on beside the test (`subprocess.Popen`: a real
  worker, `leukemia web`, `leukemia serve`, compose's services), or an explicit `pytest.mark.slow`
  (training for many epochs in process).

"Code" is the test function, every fixture it uses and, transitively, every function or class of
tests/ that they name (a global, or a name imported inside a function). A fixture that chooses a
backend from its param (`service_backend`, `app`, any `@pytest.fixture(params=...)`) is judged by
that param, not by its code, which holds every backend's branch. The quick tier (the default in
pyproject's addopts, README's command) is what none of the three marks; it runs on the embedded
backend (SQLite and kombu's SQLAlchemy broker) only.
"""

from __future__ import annotations

import dis
import importlib
import inspect
import sys
from functools import cache
from pathlib import Path
from types import CodeType, FunctionType

import pytest

TESTS = Path(__file__).resolve().parent

SERVICE_WORDS = frozenset({"redis", "postgres", "postgresql", "rabbitmq", "amqp"})
SERVICE_ADDRESSES = tuple(f"{host}:{port}" for host in ("127.0.0.1", "localhost") for port in (6379, 5432, 5672)) + (
    "host=127.0.0.1",
    "host=localhost",
)
# Fixtures that take a backend as an indirect param but have a default (no `params=` to see).
BACKEND_FIXTURES = frozenset({"service_backend", "app"})
BROWSER_NAMES = frozenset({"sync_playwright", "async_playwright"})
PROCESS_NAMES = frozenset({"Popen"})


class Reach:
    """The names and string constants of some code and of the tests/ code it names, transitively."""

    def __init__(self, names: frozenset[str], strings: frozenset[str]) -> None:
        self.names, self.strings = names, strings

    def needs_services(self) -> bool:
        return any(address in text for text in self.strings for address in SERVICE_ADDRESSES)

    def drives_a_browser(self) -> bool:
        return bool(self.names & BROWSER_NAMES)

    def starts_a_process(self) -> bool:
        return bool(self.names & PROCESS_NAMES)


def names_a_service(value: object) -> bool:
    """A backend param such as "redis+postgres", "postgresql" or "rabbitmq"."""
    return isinstance(value, str) and bool(set(value.lower().split("+")) & SERVICE_WORDS)


def tiers_of(item) -> set[str]:
    """The tier markers a collected test item gets: a subset of {"services", "browser", "slow"}."""
    if not isinstance(item, pytest.Function):  # a doctest or a plugin's item: no code of ours to read
        return set()
    params = getattr(getattr(item, "callspec", None), "params", {})
    plain: list[object] = [item.function]
    chooser: list[object] = []
    fixtures = [(name, item._fixtureinfo.name2fixturedefs.get(name)) for name in item.fixturenames]
    for name, defs in [*fixtures, *requested_by_name(item, reach(plain))]:
        if defs:
            chooses = name in BACKEND_FIXTURES or name in params or defs[-1].params is not None
            (chooser if chooses else plain).append(defs[-1].func)
    plain_reach, chooser_reach = reach(plain), reach(chooser)
    tiers = set()
    if any(names_a_service(value) for value in params.values()) or plain_reach.needs_services():
        tiers.add("services")
    if plain_reach.drives_a_browser() or chooser_reach.drives_a_browser():
        tiers.add("browser")
    if plain_reach.starts_a_process() or chooser_reach.starts_a_process():
        tiers.add("slow")
    return tiers


def requested_by_name(item, seen: Reach) -> list[tuple[str, object]]:
    """(name, fixture defs) a test asks for at run time (`request.getfixturevalue("main_worker")`), and theirs."""
    if "getfixturevalue" not in seen.names:
        return []
    manager = item.session._fixturemanager
    found: list[tuple[str, object]] = []
    pending = [text for text in seen.strings if text.isidentifier()]
    done: set[str] = set(item.fixturenames)
    while pending:
        name = pending.pop()
        if name in done:
            continue
        done.add(name)
        defs = manager.getfixturedefs(name, item)
        if defs:
            found.append((name, defs))
            pending.extend(defs[-1].argnames)
    return found


def reach(roots: list[object]) -> Reach:
    """The bytecode facts of roots (functions or classes of tests/) and of the tests/ code they name."""
    names: set[str] = set()
    strings: set[str] = set()
    seen: set[FunctionType] = set()
    pending = [inspect.unwrap(root) if inspect.isfunction(root) else root for root in roots]
    while pending:
        for function in functions_of(pending.pop()):
            if function not in seen:
                seen.add(function)
                own_names, own_strings, named = facts_of(function)
                names |= own_names
                strings |= own_strings
                pending.extend(named)
    return Reach(frozenset(names), frozenset(strings))


@cache
def facts_of(function: FunctionType) -> tuple[frozenset[str], frozenset[str], tuple[object, ...]]:
    """One function's own names, string constants and the objects its names resolve to."""
    names: set[str] = set()
    strings: set[str] = set()
    named: list[object] = []
    for code in code_objects(function.__code__):
        strings.update(c for c in code.co_consts if isinstance(c, str))
        named.extend(names_in(code, function.__globals__, names))
    return frozenset(names), frozenset(strings), tuple(named)


def names_in(code: CodeType, module_globals: dict, names: set[str]) -> list[object]:
    """Add the names code loads to names; return the objects they resolve to (unwrapped)."""
    found: list[object] = []
    module = None
    for instruction in dis.get_instructions(code):
        op, name = instruction.opname, instruction.argval
        if op == "IMPORT_NAME":
            module = name
            names.update(name.split("."))
        elif op == "IMPORT_FROM":
            names.add(name)
            found.append(imported(module, name))
        elif op in ("LOAD_GLOBAL", "LOAD_NAME"):
            names.add(name)
            found.append(module_globals.get(name))
        elif op in ("LOAD_ATTR", "LOAD_METHOD"):
            names.add(name)
    # A decorated helper (a @contextmanager) is followed to the function it wraps.
    return [inspect.unwrap(obj) if inspect.isfunction(obj) else obj for obj in found if in_tests(obj)]


def imported(module: str | None, name: str) -> object:
    """`from module import name` inside a function: followed for tests/ modules only."""
    if not module or not (module == "tests" or module.startswith("tests.") or module == "conftest"):
        return None
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def in_tests(obj: object) -> bool:
    """A function or class defined in a file under tests/ (test modules, conftest, helpers)."""
    if not (inspect.isfunction(obj) or inspect.isclass(obj)):
        return False
    source = getattr(sys.modules.get(getattr(obj, "__module__", None) or ""), "__file__", None)
    return source is not None and TESTS in Path(source).resolve().parents


def functions_of(obj: object) -> list[FunctionType]:
    """A function itself; a class's methods, static and class methods and properties."""
    if not in_tests(obj):
        return []
    if inspect.isfunction(obj):
        return [obj]
    functions = []
    for member in vars(obj).values():
        for candidate in (member, getattr(member, "__func__", None), getattr(member, "fget", None)):
            if inspect.isfunction(candidate):
                functions.append(candidate)
    return functions


def code_objects(code: CodeType) -> list[CodeType]:
    """code and the code nested in it (lambdas, inner functions, comprehensions)."""
    nested = [c for c in code.co_consts if isinstance(c, CodeType)]
    return [code, *(inner for c in nested for inner in code_objects(c))]
