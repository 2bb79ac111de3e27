"""The child processes of `leukemia serve`: started in their own process groups, restarted with
back-off when one dies, stopped gracefully on Ctrl-C.

A dead child is restarted, not fatal: kill -9 of the worker must not take the dashboard down
(nor a crash of the web app the worker). The restart is said on serve's own output and in the
child's log; a child that keeps dying waits longer each time, up to RESTART_DELAY_MAX_SECONDS."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import click

# On SIGTERM the worker stops its running job at the next batch and queues it again (last
# epoch checkpoint kept), then exits. A worker still busy after WARM_STOP_SECONDS (stuck
# outside the batch loop) gets SIGQUIT, Celery's cold shutdown; its job is then taken over
# once its heartbeat is STALE_AFTER_SECONDS old. Nothing recorded is lost either way.
WARM_STOP_SECONDS = 30
COLD_STOP_SECONDS = 15
RESTART_DELAY_FIRST_SECONDS = 1.0
RESTART_DELAY_MAX_SECONDS = 60.0
# A child that ran this long before it died is restarted after the first delay again.
STABLE_RUN_SECONDS = 120.0
SUPERVISE_INTERVAL_SECONDS = 0.5


def exit_description(code: int) -> str:
    """`exited with code 1`, or `killed by SIGKILL` for a signal (Popen's negative codes)."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


def announce(message: str, *log_paths: Path) -> None:
    """A line on serve's output (stderr) and in the given child logs, with the UTC time."""
    line = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC serve: {message}"
    click.echo(line, err=True)
    for path in log_paths:
        with path.open("a") as log:
            log.write(line + "\n")


@dataclass
class Child:
    """A child process started by serve, in its own process group (so Ctrl-C reaches serve alone)."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen = field(init=False)
    started_at: float = field(init=False, default=0.0)
    failures: int = field(init=False, default=0)  # deaths in a row, each soon after its start
    restart_at: float | None = field(init=False, default=None)  # when a dead child is started again

    def start(self, env: dict[str, str]) -> None:
        # Output goes to a log file: the terminal keeps serve's own summary readable.
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log_file:
            self.process = subprocess.Popen(self.argv, env=env, start_new_session=True, stdout=log_file, stderr=subprocess.STDOUT)
        self.started_at = time.monotonic()
        self.restart_at = None

    def started(self) -> bool:
        return hasattr(self, "process")

    def running(self) -> bool:
        return self.process.poll() is None

    def signal(self, number: int) -> None:
        if self.running():
            try:
                os.kill(self.process.pid, number)
            except ProcessLookupError:
                pass

    def kill_group(self) -> None:
        """SIGKILL whatever is left of the child's process group (e.g. a pool process)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def schedule_restart(self, now: float) -> float:
        """Note the death; the delay before the restart doubles while the child keeps dying soon after starting."""
        if now - self.started_at >= STABLE_RUN_SECONDS:
            self.failures = 0
        delay = min(RESTART_DELAY_MAX_SECONDS, RESTART_DELAY_FIRST_SECONDS * 2**self.failures)
        self.failures += 1
        self.restart_at = now + delay
        return delay


def supervise(children: list[Child], env: dict[str, str], stop: threading.Event) -> None:
    """Until stop is set: a child found dead is restarted after its back-off delay."""
    while not stop.is_set():
        now = time.monotonic()
        for child in children:
            if child.running():
                continue
            if child.restart_at is None:
                child.kill_group()  # what it left behind (a pool process) must not hold the job or the port
                delay = child.schedule_restart(now)
                announce(
                    f"{child.name} {exit_description(child.process.returncode)}; restarting it in {delay:.0f} s "
                    f"(see {child.log_path})",
                    child.log_path,
                )
            elif now >= child.restart_at:
                child.start(env)
                announce(f"{child.name} restarted (pid {child.process.pid})", child.log_path)
        stop.wait(SUPERVISE_INTERVAL_SECONDS)


def stop_children(children: list[Child]) -> None:
    """SIGTERM to every child; SIGQUIT (Celery's cold shutdown) after WARM_STOP_SECONDS; SIGKILL last."""
    children = [child for child in children if child.started()]
    for number, wait in ((signal.SIGTERM, WARM_STOP_SECONDS), (signal.SIGQUIT, COLD_STOP_SECONDS)):
        for child in children:
            child.signal(number)
        deadline = time.monotonic() + wait
        for child in children:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
    for child in children:
        if child.running():
            click.echo(f"{child.name} did not stop: killed", err=True)
        child.kill_group()
        child.process.wait()
