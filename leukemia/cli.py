"""The `leukemia` console script: one command line over core, worker and web.

Groups are imported lazily, so `leukemia train` never imports Celery or Flask."""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" of a click command
COMMANDS: dict[str, str] = {
    # core: the ML job from a terminal
    "check": "leukemia.commands.engine:check",
    "synth": "leukemia.commands.engine:synth",
    "train": "leukemia.commands.engine:train",
    "finetune": "leukemia.commands.engine:finetune",
    "evaluate": "leukemia.commands.engine:evaluate",
    "predict": "leukemia.commands.engine:predict",
    "cv": "leukemia.commands.engine:cross_validate",
    # web: the dashboard and JSON API
    "web": "leukemia.commands.web:web",
    "migrate": "leukemia.commands.web:migrate",
    # the embedded default: migrations, web and one worker as child processes
    "serve": "leukemia.commands.serve:serve",
    # worker: the job service
    "db": "leukemia.commands.worker:db",
    "worker": "leukemia.commands.worker:worker",
    "submit": "leukemia.commands.jobs:submit",
    "jobs": "leukemia.commands.jobs:jobs_command",
    "job": "leukemia.commands.jobs:job_command",
    "cv-summary": "leukemia.commands.jobs:cv_summary_command",
    "cancel": "leukemia.commands.jobs:cancel_command",
    "retry": "leukemia.commands.jobs:retry_command",
    "edit": "leukemia.commands.edit:edit_command",
    "download": "leukemia.commands.jobs:download_command",
    "webhooks": "leukemia.commands.webhooks:webhooks",
    # users, roles and API tokens
    "users": "leukemia.commands.users:users",
    "tokens": "leukemia.commands.users:tokens",
    # retention and disk: free the storage of finished jobs
    "delete": "leukemia.commands.disk:delete_command",
    "gc": "leukemia.commands.disk:gc_command",
    "disk": "leukemia.commands.disk:disk_command",
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
