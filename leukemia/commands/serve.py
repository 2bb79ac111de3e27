"""`leukemia serve`: the embedded default in one command, no server to install.

It runs the commands a user could type, as child processes: `leukemia migrate`, then
`leukemia worker --queues gpu,cpu` and `leukemia web`, restarting either if it dies
(leukemia.commands.children). It checks its input and writes the demo data folder and the secrets
first. The database and the broker are SQLite files in LEUKEMIA_HOME (nothing
to start). Ctrl-C (SIGINT), SIGTERM or a hang-up (SIGHUP) stops the children gracefully; a job
running then keeps its last epoch checkpoint, and the worker of the next `leukemia serve`
resumes it from there.

The generated admin password and API token are shown once, on the terminal, at the start that
made them; otherwise serve names the file that keeps them, so no log ever holds a secret."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import click

from core.common.errors import UserInputError
from core.engine.settings import read_settings
from core.service.settings import Settings, persisted_secret
from leukemia.commands.children import Child, exit_description, stop_children, supervise

DEMO_FOLDER_NAME = "demo"
DEMO_IMAGE_SIZE = 64
HEALTH_TIMEOUT_SECONDS = 120


def leukemia_command(*args: str) -> list[str]:
    """argv of `leukemia ARGS...` for this same installation (the script beside this Python)."""
    script = Path(sys.executable).with_name("leukemia")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script), *args]
    found = shutil.which("leukemia")
    return [found, *args] if found else [sys.executable, "-m", "leukemia.cli", *args]


@dataclass
class Secret:
    """A secret from the environment variable, else from (or newly made into) LEUKEMIA_HOME/<file>."""

    value: str
    variable: str
    path: Path
    made_now: bool
    configured: bool  # set through the setting, not kept in the file

    def summary(self, terminal: bool) -> str:
        """The value itself only on a terminal at the start that made it; else where it is kept."""
        if self.configured:
            return f"(from {self.variable})"
        if self.made_now and terminal:
            return f"{self.value}  (shown once; kept in {self.path})"
        return f"(in {self.path})"


def secret(home: Path, variable: str, file_name: str, configured: str) -> Secret:
    """The configured value of the setting, else the one kept in (or newly made into) LEUKEMIA_HOME/<file>."""
    # The same file names `leukemia web` uses when it makes secrets itself.
    if configured:
        return Secret(configured, variable, home / file_name, made_now=False, configured=True)
    value, made_now = persisted_secret(home, file_name)
    return Secret(value, variable, home / file_name, made_now, configured=False)


@dataclass
class Login:
    username: str
    password: Secret
    api_token: Secret
    secret_key: Secret


def login_settings(settings: Settings, home: Path) -> Login:
    """ADMIN_USERNAME/ADMIN_PASSWORD/API_TOKEN/SECRET_KEY from the settings, else generated once."""
    return Login(
        username=settings.admin_username or "admin",
        password=secret(home, "ADMIN_PASSWORD", "admin_password", settings.admin_password),
        api_token=secret(home, "API_TOKEN", "api_token", settings.api_token),
        secret_key=secret(home, "SECRET_KEY", "secret_key", settings.secret_key),
    )


def check_port_free(host: str, port: int) -> None:
    """Refuse a port something else listens on, before starting anything."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise UserInputError(
                f"--port: cannot listen on {host}:{port} ({error.strerror}); choose another with --port"
            ) from None


def demo_data_folder(home: Path) -> Path:
    """LEUKEMIA_HOME/data/demo: a small synthetic lab-layout folder, written on the first start, and again
    when it is half-written (an interrupted first start) or from before the synthetic patients (the same
    images, seeded, and CSVs that now name each image's patient)."""
    from core.engine.data.synth import write_synthetic_dataset

    folder = home / "data" / DEMO_FOLDER_NAME
    train_csv = folder / "train.csv"
    if not train_csv.is_file() or "patient" not in train_csv.read_text().partition("\n")[0].split(","):
        if folder.exists():
            shutil.rmtree(folder)
        click.echo(f"Writing a synthetic demo data folder to {folder} ...")
        write_synthetic_dataset(folder, train=200, valid=50, test=50, image_size=DEMO_IMAGE_SIZE, seed=0)
    return folder


def given_data_folder(path: Path) -> Path:
    folder = path.expanduser().resolve()
    if not folder.is_dir():
        raise UserInputError(f"--data: {path} is not an existing folder")
    return folder


def data_roots_with(folder: Path, settings: Settings) -> str:
    """DATA_ROOTS for the children, so jobs may read the folder: the configured roots (else the
    default, LEUKEMIA_HOME/data) and the folder."""
    roots = [str(root) for root in settings.data_root_paths]
    if str(folder) not in roots:
        roots.append(str(folder))
    return ":".join(roots)


def device_description() -> str:
    """Where jobs with device=auto will run on this machine (the worker makes the same choice)."""
    import torch

    if torch.cuda.is_available():
        return f"GPU ({torch.cuda.get_device_name(0)})"
    return "CPU (no GPU found)"


def wait_for_health(url: str, children: list[Child], stop: threading.Event) -> None:
    """Poll GET /api/health until it answers 200; a child that exits first is an error."""
    deadline = time.monotonic() + HEALTH_TIMEOUT_SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        for child in children:
            if not child.running():
                raise UserInputError(
                    f"{child.name} {exit_description(child.process.returncode)} while starting (see {child.log_path})"
                )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.3)
    if not stop.is_set():
        raise UserInputError(f"the web app did not answer {url} within {HEALTH_TIMEOUT_SECONDS} s")


def register_data_folder(base_url: str, token: str, folder: Path) -> None:
    """Register the folder through the JSON API, as a user would (registering it again re-checks it)."""
    body = json.dumps({"name": folder.name, "path": str(folder)}).encode()
    request = urllib.request.Request(
        f"{base_url}/api/data-folders",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=300):  # the folder check reads every image once
            return
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace").strip().replace("\n", " ")
        raise UserInputError(f"--data: registering {folder} failed: {message[:300]}") from None


def run_serve(data: Path | None, host: str, port: int, home: Path | None) -> None:
    """The body of `leukemia serve`; returns when the children have stopped. This process reads its
    settings with --home in place of LEUKEMIA_HOME and hands the children theirs in their environment."""
    given_home = {"leukemia_home": home.expanduser().resolve()} if home is not None else {}
    settings = read_settings(Settings, **given_home)
    home = settings.leukemia_home.expanduser().resolve()
    # Checked in the order of the command line, so the first error names the first problem;
    # the demo folder is written only once the port is known to be free.
    given = given_data_folder(data) if data is not None else None
    check_port_free(host, port)

    folder = given or demo_data_folder(home)
    login = login_settings(settings, home)
    env = {
        **os.environ,
        "LEUKEMIA_HOME": str(home),
        "DATA_ROOTS": data_roots_with(folder, settings),
        "ADMIN_USERNAME": login.username,
        "ADMIN_PASSWORD": login.password.value,
        "API_TOKEN": login.api_token.value,
        "SECRET_KEY": login.secret_key.value,
        "PYTHONUNBUFFERED": "1",
    }

    stop = threading.Event()
    # SIGHUP: the terminal closed. Its default would end serve alone and orphan the children.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, lambda *_: stop.set())

    logs = home / "logs"
    upgrade = subprocess.run(leukemia_command("migrate"), env=env, capture_output=True, text=True)
    if upgrade.returncode != 0:
        click.echo(upgrade.stdout + upgrade.stderr, err=True)
        raise UserInputError(f"`leukemia migrate` failed with code {upgrade.returncode} (output above)")

    children = [
        Child("worker", leukemia_command("worker", "--queues", "gpu,cpu", "--concurrency", "1"), logs / "worker.log"),
        Child("web", leukemia_command("web", "--host", host, "--port", str(port)), logs / "web.log"),
    ]
    try:
        for child in children:
            child.start(env)
        shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        base_url = f"http://{'[' + shown_host + ']' if ':' in shown_host else shown_host}:{port}"
        wait_for_health(f"{base_url}/api/health", children, stop)
        if not stop.is_set():
            register_data_folder(base_url, login.api_token.value, folder)
            where = settings.resolved_database_url if settings.database_url else f"SQLite in {home}"
            terminal = sys.stdout.isatty()
            click.echo(
                "\n".join(
                    [
                        "",
                        f"Leukemia service running at {base_url}/",
                        f"  login:      {login.username} / {login.password.summary(terminal)}",
                        f"  API token:  {login.api_token.summary(terminal)}",
                        f"  data:       {folder}",
                        f"  jobs run on {device_description()}; records: {where}",
                        f"  logs:       {logs / 'worker.log'}, {logs / 'web.log'}",
                        "A worker or web app that dies is restarted. Ctrl-C stops everything; a running job",
                        "resumes from its last epoch at the next `leukemia serve`.",
                        "",
                    ]
                )
            )
        supervise(children, env, stop)
        click.echo("Stopping (the running job keeps its last epoch checkpoint) ...")
    finally:
        stop_children(children)
    click.echo("Stopped.")


@click.command()
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data folder to register; default: a synthetic demo folder in LEUKEMIA_HOME/data/demo.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the dashboard listens on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="LEUKEMIA_HOME: database, broker, artifacts and secrets (default: ~/.leukemia).",
)
def serve(data: Path | None, host: str, port: int, home: Path | None) -> None:
    """Run everything on this machine: database, broker, web app and one worker (GPU if there is one)."""
    try:
        run_serve(data, host, port, home)
    except UserInputError as error:
        click.echo(f"error: {error}", err=True)
        sys.exit(2)
