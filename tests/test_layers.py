"""The floor plan holds: the layers import only downwards (import-linter's contracts in
pyproject.toml), no import circle anywhere, the ML engine trains with SQLAlchemy, Alembic, Celery,
kombu and Flask unimportable, ruff finds nothing, job statuses have one home and settings are read
one way."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "web", "worker", "leukemia", "bench")


def test_import_contracts_are_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300, env=os.environ | {"PYTHONPATH": str(REPO)}
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


def import_cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i in graph.modules} for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in edges[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    return cycles


def test_ruff_finds_nothing() -> None:
    """`ruff check .` with the rules of [tool.ruff] in pyproject.toml: no undefined or unused names,
    and imports in one order (standard library, third party, ours)."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_ruff_format_leaves_every_file_as_it_is() -> None:
    """`ruff format --check .`: line layout is the formatter's, and no line is kept from it by a skip marker."""
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", "."],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    marker = "# fmt" + ": skip"  # spelt in two parts, so this file does not hold it
    sources = [path for package in (*PACKAGES, "tests") for path in (REPO / package).rglob("*.py")]
    assert [str(path.relative_to(REPO)) for path in sources if marker in path.read_text()] == []


# Size is a prompt, not a rule (issue 25): past LONG_MODULE_LINES a module is named in the run's warnings, a
# question to ask of it (does it hold two jobs?); only past MAX_MODULE_LINES does the check fail.
LONG_MODULE_LINES = 400
MAX_MODULE_LINES = 1000


def test_no_module_is_past_the_size_where_it_surely_holds_two_jobs() -> None:
    """Modules past MAX_MODULE_LINES fail; those past LONG_MODULE_LINES are listed as a warning. Tests and
    migrations are left out."""
    sources = [path for package in PACKAGES for path in (REPO / package).rglob("*.py") if "migrations" not in path.parts]
    sizes = {str(path.relative_to(REPO)): len(path.read_text().splitlines()) for path in sources}
    long = {path: lines for path, lines in sizes.items() if lines > LONG_MODULE_LINES}
    if long:
        warnings.warn(f"modules past {LONG_MODULE_LINES} lines (do they hold two jobs?): {long}", stacklevel=1)
    assert len(sources) > 100
    assert {path: lines for path, lines in long.items() if lines > MAX_MODULE_LINES} == {}


def test_no_import_circle_anywhere() -> None:
    import grimp

    graph = grimp.build_graph(*PACKAGES, exclude_type_checking_imports=False)
    assert import_cycles(graph) == []


def test_the_cycle_finder_finds_a_circle(tmp_path: Path, monkeypatch) -> None:
    import grimp

    package = tmp_path / "circle"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from circle import b\n")
    (package / "b.py").write_text("from circle import c\n")
    (package / "c.py").write_text("import circle.a\n")
    (package / "d.py").write_text("import circle.a\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(grimp.build_graph("circle")) == [["circle.a", "circle.b", "circle.c"]]


BLOCKED_TRAINING = textwrap.dedent("""
    import sys

    class Refuse:
        BLOCKED = ("sqlalchemy", "alembic", "celery", "kombu", "flask", "werkzeug", "psycopg", "redis")

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked: the engine must not need it")
            return None

    sys.meta_path.insert(0, Refuse())
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    from core.engine import TrainParams, train
    from core.engine.data.synth import write_synthetic_dataset

    work = Path(sys.argv[1])
    write_synthetic_dataset(work / "data", train=16, valid=8, test=4, image_size=32, seed=0)
    result = train(TrainParams(data_dir=str(work / "data"), epochs=1, image_size=32, batch_size=8, device="cpu"), work / "run")
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in Refuse.BLOCKED)
    print("epochs", result.epochs_done, "best", result.best_path.name, "blocked-loaded", loaded)
""")


def test_the_engine_trains_with_the_service_libraries_blocked(tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO), "LEUKEMIA_HOME": str(tmp_path / "home")}
    for key in ("CACHE_DIR", "DATABASE_URL", "BROKER_URL"):
        env.pop(key, None)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED_TRAINING, str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "epochs 1 best best.pt blocked-loaded []" in result.stdout
    assert (tmp_path / "run" / "last.pt").is_file()


FRONT_DOOR = textwrap.dedent("""
    import sys

    import core.engine

    behind = sorted(m for m in sys.modules if m.startswith(("core.engine.", "torch")))
    from core.engine import *  # noqa: F403
    from core.engine import evaluate_csv, predict_csv, train

    drawers = ("matplotlib", "core.engine.evaluation.plots", "core.engine.evaluation.explain")
    drawing = sorted(m for m in sys.modules if m in drawers)
    print("behind", behind, "drawing", drawing, "homes", train.__module__, evaluate_csv.__module__, predict_csv.__module__)
""")


def test_the_engine_front_door_loads_lazily_and_draws_nothing_on_import(tmp_path: Path) -> None:
    """`import core.engine` loads nothing behind its front door (PEP 562); its names load the runners,
    and those load neither matplotlib nor Grad-CAM until a run draws or explains."""
    result = subprocess.run(
        [sys.executable, "-c", FRONT_DOOR],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert (
        "behind [] drawing [] homes core.engine.training.loop core.engine.evaluation.predict core.engine.evaluation.predict"
    ) in result.stdout, result.stdout


SENDER = textwrap.dedent("""
    import sys

    from web import create_app
    from worker.celery_app import send_run_job

    create_app()
    send_run_job(1, "gpu")  # onto the embedded broker in LEUKEMIA_HOME
    task_code = ("worker.tasks", "worker.job_progress", "worker.core_call", "torch")
    print("task code loaded", sorted(m for m in sys.modules if m in task_code))
""")


def test_sending_a_job_imports_no_task_code(tmp_path: Path) -> None:
    """The web sends a job by the task's name: neither the task (worker.tasks, which declares it) nor
    torch is imported to send one, so the web stays light and needs no engine runtime."""
    env = os.environ | {
        "PYTHONPATH": str(REPO),
        "LEUKEMIA_HOME": str(tmp_path / "home"),
        "API_TOKEN": "t" * 32,
        "SECRET_KEY": "s" * 32,
    }
    for key in ("DATABASE_URL", "BROKER_URL"):
        env.pop(key, None)
    result = subprocess.run([sys.executable, "-c", SENDER], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "task code loaded []" in result.stdout, result.stdout


def test_the_job_task_is_declared_in_worker_tasks_under_its_stable_name() -> None:
    """Importing worker.tasks declares the task for whichever app a worker makes (one per broker URL): an
    app made afterwards has it under the name queued messages carry, running run_next_job, and its Request
    class, named by path, is the one that makes Celery's terminate a cancel (worker.terminate)."""
    from kombu.utils.imports import symbol_by_name

    import worker.tasks
    from worker.celery_app import RUN_JOB_TASK, make_app
    from worker.terminate import RunJobTaskRequest

    task = make_app("memory://").tasks[RUN_JOB_TASK]
    assert RUN_JOB_TASK == "leukemia.run_job" and task.run is worker.tasks.run_next_job
    assert symbol_by_name(task.Request) is RunJobTaskRequest


STATUS_LITERAL = re.compile(r"""(==|!=|===|!==|status=|"status":)\s*["'](queued|running|succeeded|failed|cancelled)["']""")


def test_job_statuses_are_named_in_one_place() -> None:
    """core.service.records.JobStatus is the one home of the job statuses: code, templates (the JobStatus
    global) and scripts (statuses.js) compare with its members, never with a string of their own."""
    sources = [
        path
        for package in (*PACKAGES, "web/templates", "web/static")
        for path in (REPO / package).rglob("*")
        if path.suffix in {".py", ".html", ".js"} and "migrations" not in path.parts and path.name != "records.py"
    ]
    found = [
        f"{path.relative_to(REPO)}: {match.group(0)}" for path in sources for match in STATUS_LITERAL.finditer(path.read_text())
    ]
    assert len(sources) > 100 and found == []


def environment_writes(tree: ast.AST) -> list[str]:
    """What a module writes into its own process's environment: `os.environ[KEY] = ...` (KEY, or the
    expression when it is not a constant), os.environ.update/setdefault/pop and os.putenv calls."""

    def is_environ(node: ast.AST) -> bool:
        return isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", None) == "os"

    writes = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AugAssign) else []
        for target in targets:
            if isinstance(target, ast.Subscript) and is_environ(target.value):
                writes.append(target.slice.value if isinstance(target.slice, ast.Constant) else ast.unparse(target))
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and (
                (is_environ(node.func.value) and node.func.attr in {"update", "setdefault", "pop", "clear"})
                or (getattr(node.func.value, "id", None) == "os" and node.func.attr in {"putenv", "unsetenv"})
            )
        ):
            writes.append(ast.unparse(node))
    return writes


def test_the_environment_writer_finder_finds_writes() -> None:
    planted = 'import os\nos.environ["A"] = "1"\nos.environ[name] = v\nos.environ.update(B="2")\nos.putenv("C", "3")\n'
    assert environment_writes(ast.parse(planted)) == ["A", "os.environ[name]", "os.environ.update(B='2')", "os.putenv('C', '3')"]


def test_settings_are_read_one_way(app) -> None:
    """Settings are read through core.service.settings and reach child processes in the environment
    handed to them: no process writes its own os.environ to pass one on (CUDA_VISIBLE_DEVICES and
    CUDA_DEVICE_ORDER alone, which CUDA itself reads), and the web app holds no copy of a setting in app.config (SECRET_KEY
    and SESSION_COOKIE_SECURE alone: Flask reads them there)."""
    from core.service.settings import Settings

    product = ("core", "web", "worker", "leukemia")  # bench/, like tests/, points its own process at a scratch home
    sources = [path for package in product for path in (REPO / package).rglob("*.py") if "migrations" not in path.parts]
    writes = [
        f"{path.relative_to(REPO)}: {key}"
        for path in sources
        for key in environment_writes(ast.parse(path.read_text()))
        if key not in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")
    ]
    assert len(sources) > 100 and writes == []
    assert set(app.config) & {name.upper() for name in Settings.model_fields} == {"SECRET_KEY", "SESSION_COOKIE_SECURE"}
