"""The `leukemia` console script: one command line over core, worker and web.

Groups are imported lazily, so `leukemia train` never imports Celery or Flask."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    # core: the ML job from a terminal
    "check": "core.cli:check",
    "synth": "core.cli:synth",
    "train": "core.cli:train",
    "finetune": "core.cli:finetune",
    "evaluate": "core.cli:evaluate",
    "predict": "core.cli:predict",
    "cv": "core.cli:cross_validate",
    # web: the dashboard and JSON API
    "web": "web.cli:web",
    "migrate": "web.cli:migrate",
    # the embedded default: migrations, web and one worker as child processes
    "serve": "leukemia.serve:serve",
    # worker: the job service
    "db": "worker.cli:db",
    "worker": "worker.cli:worker",
    "submit": "worker.cli:submit",
    "jobs": "worker.cli:jobs_command",
    "job": "worker.cli:job_command",
    "cv-summary": "worker.cli:cv_summary_command",
    "cancel": "worker.cli:cancel_command",
    "retry": "worker.cli:retry_command",
    "edit": "worker.edit_cli:edit_command",
    "download": "worker.cli:download_command",
    "webhooks": "worker.webhook_cli:webhooks",
    # users, roles and API tokens
    "users": "worker.users_cli:users",
    "tokens": "worker.users_cli:tokens",
    # retention and disk: free the storage of finished jobs
    "delete": "worker.disk_cli:delete_command",
    "gc": "worker.disk_cli:gc_command",
    "disk": "worker.disk_cli:disk_command",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module_name, attribute = target.split(":")
        return getattr(importlib.import_module(module_name), attribute)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="leukemia-service")
def main() -> None:
    """Train, finetune, evaluate and predict leukemia cell classifiers, and run them as queued jobs."""


if __name__ == "__main__":
    main()
