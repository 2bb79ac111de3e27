"""`leukemia` commands for the job service: submit, jobs, job, cv-summary, cancel, retry, download.

Submit options are generated from core.engine.params and JobOptions (leukemia.commands.base.params_options);
one request is built and queued through worker.dispatch.submit. Every bad input is one line and exit 2."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import click
from pydantic import BaseModel

from core.common.errors import UserInputError
from core.engine.params import EvaluateParams, FinetuneParams, PredictParams, TrainParams
from core.engine.training.early_stopping import EARLY_STOPPING_METRICS
from core.service.access import cli_actor
from core.service.job_options import JobOptions, parse_options
from core.service.jobs.request import (
    CrossValidationRequest,
    EnsembleRequest,
    JobRequest,
    Origin,
    Request,
    SweepRequest,
    parse_request,
)
from core.service.records import JOB_KINDS, JOB_STATUSES, MODEL_KINDS, JobStatus
from leukemia.commands.base import UserCommand, params_options, run_db_command, run_user_command, schema_values

if TYPE_CHECKING:
    from core.service.submissions import Queued

# --- submit --------------------------------------------------------------------------------

QUEUE_OPTION = click.option("--queue", default=None, help="Queue to send to (default: gpu for train/finetune, cpu otherwise).")
PARENT_OPTION = click.option(
    "--parent", "parent_id", type=int, default=None, help="Job whose checkpoint to use (finetune, evaluate, predict)."
)
DATA_OPTION = {"data_dir": "--data"}  # the same spelling as `leukemia train --data`
DATA_AND_SPLIT_OPTIONS = {**DATA_OPTION, "csv": ("--csv", "--split")}  # evaluate/predict: a CSV or a named split
OPTION_FLAGS = {"description": "--note", "tags": "--tag"}  # the CLI's spelling of these JobOptions fields


def job_options_options(command: Callable) -> Callable:
    """One option per JobOptions field (--priority, --note, --tag, --retention, and any other option), built
    from the schema as the params' are; passed on as `job_options`. A blank value is the option's default."""

    @functools.wraps(command)
    def wrapped(**kwargs: Any) -> Any:
        given = schema_values({name: kwargs.pop(name) for name in JobOptions.model_fields})
        values = {name: value for name, value in given.items() if value != ""}
        return command(job_options=run_user_command(lambda: parse_options(values)), **kwargs)

    return params_options(JobOptions, rename=OPTION_FLAGS)(wrapped)


def request_options(params: type[BaseModel], *, parent: bool = True, **schema_options: Any) -> Callable:
    """--parent (unless parent=False), --queue, the JobOptions options and the params' options of one schema,
    passed on as `request`: the fields of a job request (core.service.jobs.request) but its kind, params holding
    what was typed, paths made absolute. schema_options: params_options' rename, exclude, show_defaults."""

    def decorate(command: Callable) -> Callable:
        @functools.wraps(command)
        def wrapped(queue: str | None, job_options: JobOptions, parent_id: int | None = None, **kwargs: Any) -> Any:
            fields = [name for name in params.model_fields if name in kwargs and name != "kind"]  # a sweep's --kind
            values = absolute_paths(schema_values({name: kwargs.pop(name) for name in fields}))
            request = {"params": values, "parent_id": parent_id, "queue": queue or None, "options": job_options}
            return command(request=request, **kwargs)

        wrapped = QUEUE_OPTION(job_options_options(params_options(params, **schema_options)(wrapped)))
        return PARENT_OPTION(wrapped) if parent else wrapped

    return decorate


@click.group()
def submit() -> None:
    """Queue a job for a worker (the same options as the direct commands, plus --parent and --queue)."""


PATH_FIELDS = ("data_dir", "checkpoint")


def absolute_paths(values: dict[str, Any]) -> dict[str, Any]:
    """Paths typed relative to this shell, made absolute: the worker runs in another folder."""
    resolved = {k: os.path.abspath(v) if k in PATH_FIELDS and v else v for k, v in values.items()}
    if resolved.get("checkpoints"):
        resolved["checkpoints"] = [os.path.abspath(p) for p in resolved["checkpoints"]]
    return resolved


def _queue(model: type[Request], values: dict[str, Any]) -> Queued:
    """Build the request (a bad field: one line, exit 2), then queue it as the CLI (worker.dispatch.submit)."""
    from core.service.settings import get_settings
    from worker.dispatch import submit as submit_request

    request = run_user_command(lambda: parse_request(model, values))
    return run_db_command(lambda: submit_request(request, actor=cli_actor(), origin=Origin.CLI, settings=get_settings()))


def _submit(kind: str, request: dict[str, Any]) -> None:
    click.echo(f"job {_queue(JobRequest, {'kind': kind, **request}).id} queued ({kind})")


@submit.command(name="train", cls=UserCommand)
@request_options(TrainParams, parent=False, rename=DATA_OPTION)
def submit_train(request: dict[str, Any]) -> None:
    """Queue a training run."""
    _submit("train", request)


@submit.command(name="finetune", cls=UserCommand)
@request_options(FinetuneParams, rename=DATA_OPTION)
def submit_finetune(request: dict[str, Any]) -> None:
    """Queue a finetune of a parent job's checkpoint (or of --checkpoint)."""
    _submit("finetune", request)


@submit.command(name="evaluate", cls=UserCommand)
@request_options(EvaluateParams, rename=DATA_AND_SPLIT_OPTIONS)
def submit_evaluate(request: dict[str, Any]) -> None:
    """Queue an evaluation of a parent job's checkpoint (or of --checkpoint) on a labelled CSV."""
    _submit("evaluate", request)


@submit.command(name="predict", cls=UserCommand)
@request_options(PredictParams, rename=DATA_AND_SPLIT_OPTIONS)
def submit_predict(request: dict[str, Any]) -> None:
    """Queue a prediction CSV from a parent job's checkpoint (plus any --checkpoints)."""
    _submit("predict", request)


@submit.command(name="cv", cls=UserCommand)
@click.option(
    "--folds",
    type=click.IntRange(2, 20),
    default=None,
    help="K subject-grouped folds (seeded by --seed). Default: the release's folds when they are subject-disjoint, else 3.",
)
@click.option("--release-folds", is_flag=True, help="Use the release's own folds; refused when they share a subject.")
@click.option("--name", default=None, help="Name shown on the dashboard.")
@QUEUE_OPTION
@params_options(TrainParams, rename=DATA_OPTION, exclude=("split", "valid_split"))
def submit_cv(folds: int | None, release_folds: bool, name: str | None, queue: str | None, **options: Any) -> None:
    """Queue a cross-validation: one training job per fold, in parallel on as many workers as there are."""
    queued = _queue(
        CrossValidationRequest,
        {
            "params": absolute_paths(schema_values(options)),
            "folds": folds,
            "release_folds": release_folds,
            "name": name,
            "queue": queue or None,
        },
    )
    click.echo(f"cross-validation {queued.id}: {len(queued.jobs)} fold jobs queued ({', '.join(map(str, queued.job_ids))})")


@submit.command(name="ensemble", cls=UserCommand)
@click.option("--cv", "cv_id", type=int, required=True, help="The finished cross-validation whose fold models to average.")
@click.option("--kind", type=click.Choice(["evaluate", "predict"]), default="predict", show_default=True)
@click.option("--split", required=True, help="Named split or CSV of the data folder (e.g. prelim, final).")
@click.option("--tta/--no-tta", default=False, help="Also average the 8 flips and quarter turns.")
@QUEUE_OPTION
def submit_ensemble(cv_id: int, kind: str, split: str, tta: bool, queue: str | None) -> None:
    """Queue an evaluate or predict job averaging the fold models' probabilities."""
    queued = _queue(EnsembleRequest, {"cv_id": cv_id, "kind": kind, "split": split, "tta": tta, "queue": queue or None})
    click.echo(f"job {queued.id} queued ({kind}, ensemble of cross-validation {cv_id})")


def median_rule_options(command: Callable) -> Callable:
    """--median-stop, --median-min-finished, --median-grace, passed on as `early_stopping` (a MedianStopRule or None)."""

    @functools.wraps(command)
    def wrapped(median_metric: str | None, median_min_finished: int | None, median_grace: int | None, **kwargs: Any) -> Any:
        from core.service.sweep_stopping import median_rule_from_options

        rule = run_user_command(lambda: median_rule_from_options(median_metric, median_min_finished, median_grace))
        return command(early_stopping=rule, **kwargs)

    for option in reversed(
        [
            click.option(
                "--median-stop",
                "median_metric",
                type=click.Choice(EARLY_STOPPING_METRICS),
                default=None,
                help="Median stopping rule on this validation metric: a point worse than the median of the "
                "finished points at the same epoch stops.",
            ),
            click.option(
                "--median-min-finished", type=int, default=None, help="Finished points needed before the rule acts [default: 2]."
            ),
            click.option(
                "--median-grace", type=int, default=None, help="Epochs every point runs before the rule may act [default: 1]."
            ),
        ]
    ):
        wrapped = option(wrapped)
    return wrapped


@submit.command(name="sweep", cls=UserCommand)
@click.option("--kind", type=click.Choice(MODEL_KINDS), default="train", show_default=True)
@click.option(
    "--grid", "grid_items", multiple=True, required=True, help="field=v1,v2 (repeat for more fields); one job per combination."
)
@click.option("--name", default=None, help="Sweep name (default: the grid's fields).")
@median_rule_options
# One option set for both kinds; the defaults are those of --kind, so none is shown here.
@request_options(FinetuneParams, rename=DATA_OPTION, show_defaults=False)
def submit_sweep(kind: str, grid_items: tuple[str, ...], name: str | None, early_stopping: Any, request: dict[str, Any]) -> None:
    """Queue one job per point of a grid: `--grid arch=resnet18,resnet50 --grid lr=0.001,0.0003`.

    Options left out take the defaults of --kind (see `leukemia submit train --help`)."""
    from core.service.jobs import parse_grid

    base = request.pop("params")
    if kind == "train":
        base.pop("checkpoint", None)
        base.pop("checkpoint_choice", None)
    grid = run_user_command(lambda: parse_grid(list(grid_items)))
    queued = _queue(
        SweepRequest, {"kind": kind, "base_params": base, "grid": grid, "name": name, "early_stopping": early_stopping, **request}
    )
    click.echo(f"sweep {queued.id}: {len(queued.jobs)} jobs queued ({', '.join(map(str, queued.job_ids))})")


# --- looking at jobs -----------------------------------------------------------------------


@click.command(name="jobs", cls=UserCommand)
@click.option("--status", default=None, type=click.Choice(JOB_STATUSES))
@click.option("--kind", default=None, type=click.Choice(JOB_KINDS))
@click.option("--sweep", "sweep_id", type=int, default=None, help="Only the jobs of one sweep, side by side.")
@click.option("--tag", default=None, help="Only the jobs carrying this tag.")
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(1, 1000), default=50, show_default=True)
def jobs_command(status: str | None, kind: str | None, sweep_id: int | None, tag: str | None, page: int, per_page: int) -> None:
    """List jobs, newest first: progress, speed, ETA, queue position and unserved queues."""
    run_db_command(lambda: _print_jobs(status, kind, sweep_id, tag, page, per_page))


def _print_jobs(status: str | None, kind: str | None, sweep_id: int | None, tag: str | None, page: int, per_page: int) -> None:
    from core.service.db import get_sessionmaker
    from leukemia.commands.job_report import jobs_table

    with get_sessionmaker().begin() as session:
        text = jobs_table(session, status=status, kind=kind, sweep_id=sweep_id, tag=tag, page=page, per_page=per_page)
    click.echo(text)


@click.command(name="cv-summary", cls=UserCommand)
@click.argument("cv_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--oof",
    "oof_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write every fold's out-of-fold predictions to this CSV (ID,subject,label,prob_1,fold).",
)
def cv_summary_command(cv_id: int, as_json: bool, oof_path: Path | None) -> None:
    """Show a cross-validation: each fold job, its best metrics, mean ± std, out-of-fold metrics, ensembles."""
    run_db_command(lambda: _print_cv(cv_id, as_json))
    if oof_path is not None:
        run_db_command(lambda: _write_oof(cv_id, oof_path))


def _write_oof(cv_id: int, path: Path) -> None:
    from core.service.cv_jobs import out_of_fold_csv
    from core.service.db import get_sessionmaker

    with get_sessionmaker().begin() as session:
        text = out_of_fold_csv(session, cv_id)
    path.write_text(text)
    click.echo(f"wrote {path} ({text.count(chr(10)) - 1} out-of-fold predictions)")


def _print_cv(cv_id: int, as_json: bool) -> None:
    from core.engine.training.crossval import describe_summary
    from core.service.cv_jobs import cross_validation_summary
    from core.service.db import get_sessionmaker

    with get_sessionmaker().begin() as session:
        summary = cross_validation_summary(session, cv_id)
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    lines = [f"cross-validation {cv_id}: {summary['name']} ({summary['scheme']})"]
    lines += [
        f"fold {f['fold']}: job {f['job_id']} {f['status']} ({f['progress']:.0%}), "
        f"train {f['split']}, validate {f['valid_split']}"
        for f in summary["folds"]
    ]
    lines += describe_summary({**summary, "folds": [f["best"] for f in summary["folds"] if f["best"]]})
    lines += [
        f"ensemble: job {e['job_id']} {e['kind']} on {e['split']}{' with TTA' if e['tta'] else ''}, {e['status']}"
        for e in summary["ensembles"]
    ]
    click.echo("\n".join(lines))


@click.command(name="job", cls=UserCommand)
@click.argument("job_id", type=int)
def job_command(job_id: int) -> None:
    """Show one job: status, parameters, metrics per epoch, artifacts, error, log tail."""
    run_db_command(lambda: _print_job(job_id))


def _print_job(job_id: int) -> None:
    from core.service.db import get_sessionmaker
    from leukemia.commands.job_report import job_details

    with get_sessionmaker().begin() as session:
        text = job_details(session, job_id)
    click.echo(text)


@click.command(name="cancel", cls=UserCommand)
@click.argument("job_id", type=int)
def cancel_command(job_id: int) -> None:
    """Cancel a job: queued ones at once, running ones at the next batch (keeping the last checkpoint)."""
    from worker.dispatch import cancel_job

    status = run_db_command(lambda: cancel_job(job_id, actor=cli_actor()))
    click.echo(
        f"job {job_id} cancelled"
        if status == JobStatus.cancelled
        else f"job {job_id}: cancel requested; it stops at the next batch"
    )


@click.command(name="retry", cls=UserCommand)
@click.argument("job_id", type=int)
def retry_command(job_id: int) -> None:
    """Queue a failed or cancelled job again; it resumes from its last checkpoint."""
    from core.service.settings import get_settings
    from worker.dispatch import retry_job

    run_db_command(lambda: retry_job(job_id, actor=cli_actor(), settings=get_settings()))
    click.echo(f"job {job_id} queued again")


@click.command(name="download", cls=UserCommand)
@click.argument("job_id", type=int)
@click.argument("artifact", required=False)
@click.option("--out", "out", type=click.Path(path_type=Path), default=None, help="File or folder to write (default: ./NAME).")
def download_command(job_id: int, artifact: str | None, out: Path | None) -> None:
    """Copy a recorded artifact of a job (default: its best checkpoint)."""
    run_db_command(lambda: _download(job_id, artifact, out))


def _download(job_id: int, name: str | None, out: Path | None) -> None:
    from core.service import jobs
    from core.service.db import get_sessionmaker

    with get_sessionmaker().begin() as session:
        artifact, source = jobs.artifact_path(session, job_id, name)
        artifact_name = artifact.name
    target = out or Path.cwd() / artifact_name
    if target.is_dir():
        target = target / artifact_name
    if not target.parent.is_dir():
        raise UserInputError(f"--out: folder {target.parent} does not exist")
    shutil.copyfile(source, target)
    click.echo(f"{target} ({source.stat().st_size} bytes)")
