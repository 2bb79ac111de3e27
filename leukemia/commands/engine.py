"""`leukemia` commands that need no server: check, synth, train, finetune, evaluate, predict, cv.

Each command parses its options, calls one core function and prints the outcome.
A UserInputError (or a BrokerUnavailable) becomes one line on stderr and exit code 2
(see `run_user_command`)."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import click

from core.common.errors import UserInputError
from core.common.formats import percent
from core.engine.params import EvaluateParams, FinetuneParams, PredictParams, TrainParams, parse_params
from leukemia.commands.base import UserCommand, params_options, run_user_command, schema_values


@click.group(name="core")
def core_cli() -> None:
    """Commands that run the machine-learning job directly, with no server."""


def _training_bar():
    """A TrainingObserver drawing a tqdm bar per epoch (images/s, run ETA) and printing one line per epoch."""
    from tqdm import tqdm

    from core.engine.progress import TrainingObserver

    class TrainingBar(TrainingObserver):
        def __init__(self) -> None:
            self.bar: tqdm | None = None
            self.bar_epoch = 0
            self.total_epochs = 0

        def on_start(self, total_epochs: int, batches_per_epoch: int, start_epoch: int) -> None:
            self.total_epochs = total_epochs

        def on_batch(self, progress) -> None:
            if self.bar is None or self.bar_epoch != progress.epoch:
                self.close()
                self.bar_epoch = progress.epoch
                self.bar = tqdm(
                    total=progress.batches,
                    desc=f"epoch {progress.epoch}/{self.total_epochs}",
                    leave=False,
                    bar_format="{desc} {bar} {n_fmt}/{total_fmt} {postfix}",
                    disable=None,
                )  # only on a terminal, like the prediction bar: an error line stays alone
            self.bar.update(1)
            eta = tqdm.format_interval(progress.eta_s)
            self.bar.set_postfix_str(f"{progress.images_per_s:.1f} img/s, run ETA {eta}")

        def on_epoch(self, record) -> None:
            self.close()
            click.echo(describe_epoch(record, self.total_epochs))

        def on_stopped_early(self, epoch: int, reason: str) -> None:
            self.close()
            click.echo(reason)

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return TrainingBar()


@contextmanager
def _prediction_bar():
    """A PredictionObserver drawing one tqdm bar over every image of every checkpoint (images/s, ETA).

    Only on a terminal (disable=None): the one error line of a refused output stays alone on stderr."""
    from tqdm import tqdm

    from core.engine.progress import PredictionObserver

    class PredictionBar(PredictionObserver):
        def __init__(self) -> None:
            self.bar: tqdm | None = None

        def on_progress(self, progress) -> None:
            if self.bar is None:
                self.bar = tqdm(total=progress.total, desc="images", unit="img", leave=False, disable=None)
            self.bar.update(progress.done - self.bar.n)

    observer = PredictionBar()
    try:
        yield observer
    finally:
        if observer.bar is not None:
            observer.bar.close()


def describe_epoch(record, total_epochs: int) -> str:
    """One summary line per epoch."""
    line = f"epoch {record.epoch}/{total_epochs}: train loss {record.train_loss:.4f}"
    line += f" acc {percent(record.train_accuracy)}"
    if record.valid_accuracy is not None:
        line += (
            f" | valid loss {record.valid_loss:.4f} acc {percent(record.valid_accuracy)}"
            f" balanced {percent(record.valid_balanced_accuracy)} f1 {percent(record.valid_f1)}"
            + ("" if record.valid_roc_auc is None else f" auc {record.valid_roc_auc:.4f}")
        )
    return line + f" | lr {record.lr:.3g} | {record.seconds:.1f} s, {record.images_per_s:.1f} img/s"


def _describe_run(result) -> str:
    return f"{result.epochs_done} epoch(s) in {result.run_folder}: {result.best_path.name}, {result.last_path.name}"


@core_cli.command(cls=UserCommand)
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), help="Run folder to create.")
@click.option(
    "--resume",
    "resume",
    type=click.Path(file_okay=False, path_type=Path),
    help="Continue the run in this folder with the parameters stored in its last.pt.",
)
@params_options(TrainParams, rename={"data_dir": "--data"})
def train(out: Path | None, resume: Path | None, **options) -> None:
    """Train a ResNet from scratch: `leukemia train --data DIR --epochs N --out RUN_FOLDER`."""

    def body() -> None:
        from core.engine.training.loop import resume_run
        from core.engine.training.loop import train as train_run

        given = schema_values(options)
        if resume is not None:
            if given or out is not None:
                raise UserInputError(
                    f"resume: the run's parameters come from {resume}/last.pt; drop the other options", field="resume"
                )
            result = resume_run(resume, observer=_training_bar())
        else:
            if out is None:
                raise UserInputError("out: give the run folder to create with --out (or --resume RUN_FOLDER)", field="out")
            from core.engine.data.splits import with_folder_image_size

            params = parse_params("train", with_folder_image_size("train", given))
            result = train_run(params, out, observer=_training_bar())
        click.echo(_describe_run(result))

    run_user_command(body)


@core_cli.command(cls=UserCommand)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Run folder to create (or, with --resume, to continue).",
)
@click.option("--resume/--no-resume", default=False, help="Continue an interrupted finetune in --out.")
@params_options(FinetuneParams, rename={"data_dir": "--data", "checkpoint": "--from"})
def finetune(out: Path, resume: bool, **options) -> None:
    """Finetune a checkpoint, by default on train+valid.

    `leukemia finetune --from RUN_FOLDER|CKPT --data DIR --epochs N --out RUN_FOLDER`"""

    def body() -> None:
        from core.engine.training.loop import finetune as finetune_run

        params = parse_params("finetune", schema_values(options))
        click.echo(_describe_run(finetune_run(params, out, resume=resume, observer=_training_bar())))

    run_user_command(body)


@core_cli.command(cls=UserCommand)
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for evaluation.json, confusion.csv and confusion.png.",
)
@click.option(
    "--checkpoint",
    "checkpoint_paths",
    multiple=True,
    help="Run folder or .pt file; several make an ensemble (their probabilities averaged).",
)
@params_options(EvaluateParams, rename={"data_dir": "--data", "csv": ("--csv", "--split")}, exclude=("checkpoint", "checkpoints"))
def evaluate(out: Path | None, checkpoint_paths: tuple[str, ...], **options) -> None:
    """Score a checkpoint on a labelled CSV: `leukemia evaluate --checkpoint CKPT --data DIR --csv FILE`."""

    def body() -> None:
        from core.engine.evaluation.predict import evaluate_csv

        given = schema_values(options)
        if checkpoint_paths:
            given.update(checkpoint=checkpoint_paths[0], checkpoints=list(checkpoint_paths[1:]))
        params = parse_params("evaluate", given)
        with _prediction_bar() as bar:
            result = evaluate_csv(params, out_dir=out, observer=bar)
        scores = result.scores
        (tn, fp), (fn, tp) = scores["confusion"]
        click.echo(
            f"{params.csv}: {scores['count']} images, accuracy {percent(scores['accuracy'])}, balanced accuracy "
            f"{percent(scores['balanced_accuracy'])}, weighted F1 {percent(scores['weighted_f1'])}; "
            f"confusion [[tn {tn}, fp {fp}], [fn {fn}, tp {tp}]]"
        )
        subjects = scores["subjects"]
        if subjects:
            missed = [f"{row['subject']} ({percent(row['accuracy'])})" for row in subjects if row["accuracy"] < 0.5]
            click.echo(
                f"{len(subjects)} subjects: mean per-subject accuracy "
                f"{percent(sum(row['accuracy'] for row in subjects) / len(subjects))}; "
                f"below 50%: {', '.join(missed) or 'none'}"
            )
        click.echo(f"threshold {scores['threshold']['value']:.4g}: {scores['threshold']['description']}")
        for line in describe_clinical(scores["clinical"]):
            click.echo(line)
        if out is not None:
            also = ", subjects.csv" if subjects else ""
            explained = f", {scores['explained']} heat maps in explanations.zip" if scores["explained"] else ""
            click.echo(
                f"wrote {out}/evaluation.json, confusion.csv{also}, confusion.png, per_image.csv, roc.png, "
                f"pr.png, calibration.png{explained}"
            )

    run_user_command(body)


def describe_clinical(report: dict) -> list[str]:
    """The clinical metrics with their intervals, one line, then one line per undefined metric."""
    interval = report["interval"]
    parts = []
    for name, label in (
        ("sensitivity", "sensitivity"),
        ("specificity", "specificity"),
        ("ppv", "PPV"),
        ("npv", "NPV"),
        ("roc_auc", "ROC-AUC"),
        ("pr_auc", "PR-AUC"),
    ):
        metric = report["metrics"][name]
        if metric["value"] is not None:
            shown = (lambda value: f"{value:.3f}") if name in ("roc_auc", "pr_auc") else percent  # areas stay numbers
            bounds = "" if metric["low"] is None else f" [{shown(metric['low'])}, {shown(metric['high'])}]"
            parts.append(f"{label} {shown(metric['value'])}{bounds}")
    ece = report["calibration"]["ece"]
    summary = ", ".join(parts) + ("" if ece is None else f", ECE {ece:.3f}")
    head = f"95% intervals: {interval['method']} over {interval['units']} {interval['unit']}s"
    return [f"{summary} ({head})"] + [f"note: {note}" for note in report["notes"]]


@core_cli.command(cls=UserCommand)
@click.option(
    "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Submission CSV to write (ID,label)."
)
@click.option(
    "--report",
    "report_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for prediction.json, probabilities.png and the --explain heat maps.",
)
@params_options(PredictParams, rename={"data_dir": "--data", "checkpoints": "--checkpoint", "csv": ("--csv", "--split")})
def predict(out: Path, report_dir: Path | None, **options) -> None:
    """Write the submission CSV (ID,label); several --checkpoint make an ensemble.

    `leukemia predict --checkpoint CKPT [--checkpoint CKPT2] --data DIR --csv FILE --out preds.csv`"""

    def body() -> None:
        from core.engine.evaluation.predict import predict_csv

        params = parse_params("predict", schema_values(options))
        with _prediction_bar() as bar:
            result = predict_csv(params, out, observer=bar, report_dir=report_dir)
        click.echo(f"wrote {result.count} predictions ({result.positives} labelled 1) to {result.out_path}")
        click.echo(f"threshold {result.threshold['value']:.4g}: {result.threshold['description']}")
        if result.summary is not None:
            explained = f", {result.summary['explained']} heat maps in explanations.zip" if result.summary["explained"] else ""
            click.echo(f"wrote {report_dir}/prediction.json, probabilities.png{explained}")

    run_user_command(body)


FOLDS_OPTION = click.option(
    "--folds",
    type=click.IntRange(2, 20),
    default=None,
    help="K subject-grouped folds (seeded by --seed). Default: the release's folds when they are subject-disjoint, else 3.",
)
RELEASE_FOLDS_OPTION = click.option(
    "--release-folds", is_flag=True, help="Use the release's own folds; refused when they share a subject."
)


@core_cli.command(name="cv", cls=UserCommand)
@click.option(
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to create: fold_N run folders, oof.csv, summary.json.",
)
@FOLDS_OPTION
@RELEASE_FOLDS_OPTION
@params_options(TrainParams, rename={"data_dir": "--data"}, exclude=("split", "valid_split"))
def cross_validate(out: Path, folds: int | None, release_folds: bool, **options) -> None:
    """Cross-validate: one training run per fold, out-of-fold predictions, mean ± std over folds.

    `leukemia cv --data DIR --epochs N --out CV_DIR`; then `leukemia predict --checkpoint CV_DIR/fold_0
    --checkpoint CV_DIR/fold_1 ...` predicts with the fold ensemble."""

    def body() -> None:
        from core.engine.data.splits import with_folder_image_size
        from core.engine.training.crossval import describe_summary, plan_folds, run_cross_validation

        given = with_folder_image_size("train", schema_values(options))
        base = parse_params("train", given).model_dump(mode="json")
        plan = plan_folds(base["data_dir"], folds, base["seed"], release_folds=release_folds)
        click.echo(f"{len(plan.folds)} folds: {plan.scheme}")
        summary = run_cross_validation(base, plan, out, observer_for=lambda fold: _training_bar())
        for line in describe_summary(summary):
            click.echo(line)
        click.echo(f"wrote {out}/summary.json, {out}/oof.csv and fold_0 .. fold_{len(plan.folds) - 1}")

    run_user_command(body)


# ---------------------------------------------------------------- check, synth


@core_cli.command(cls=UserCommand)
@click.argument("data_dir", type=click.Path(path_type=Path))
@click.option("--write-csv", is_flag=True, help="C-NMC tree: write a patient-safe train.csv and valid.csv into DATA_DIR.")
@click.option("--valid-fraction", type=float, default=0.2, show_default=True, help="Share of images for valid.csv.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the patient split.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(data_dir: Path, write_csv: bool, valid_fraction: float, seed: int, as_json: bool) -> None:
    """Check every CSV row and image of a data folder: exit 0 clean, 1 problems found, 2 unusable input."""
    import json

    from core.engine.data.check import check_folder, format_report
    from core.engine.data.patient_split import write_patient_split

    report = run_user_command(lambda: check_folder(data_dir))
    output = report.to_dict()
    click.echo(json.dumps(output, indent=2) if as_json else format_report(report))
    if write_csv and report.layout == "release":
        click.echo(
            "not writing train.csv and valid.csv: the C-NMC release needs none; name its splits instead "
            "(--split folds:0,1 --valid-split fold:2, prelim, final; see `leukemia train --help`)",
            err=True,
        )
        sys.exit(2)
    if write_csv and not report.ok:
        click.echo("not writing train.csv and valid.csv: fix the problems above first", err=True)
    elif write_csv:
        split = run_user_command(lambda: write_patient_split(data_dir, valid_fraction=valid_fraction, seed=seed))
        message = (
            f"wrote {split.train_csv} ({split.train_images} images, {len(split.train_patients)} patients) and "
            f"{split.valid_csv} ({split.valid_images} images, {len(split.valid_patients)} patients; "
            f"{split.valid_class_counts[1]} ALL, {split.valid_class_counts[0]} hem); no patient is in both"
        )
        click.echo(message, err=as_json)  # stdout stays valid JSON with --json
    sys.exit(0 if report.ok else 1)


@core_cli.command(cls=UserCommand)
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--train", type=int, default=200, show_default=True, help="Training images.")
@click.option("--valid", type=int, default=50, show_default=True, help="Validation images.")
@click.option("--test", type=int, default=50, show_default=True, help="Test images (test.csv; truth in test_labels.csv).")
@click.option("--image-size", type=int, default=450, show_default=True, help="Width and height in pixels.")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, same bytes.")
@click.option("--positive-fraction", type=float, default=0.68, show_default=True, help="Share of label 1 (ALL).")
def synth(out_dir: Path, train: int, valid: int, test: int, image_size: int, seed: int, positive_fraction: float) -> None:
    """Write a synthetic lab-layout data folder of C-NMC-like cells into OUT_DIR (new or empty)."""
    from core.engine.data.synth import write_synthetic_dataset

    summary = run_user_command(
        lambda: write_synthetic_dataset(
            out_dir,
            train=train,
            valid=valid,
            test=test,
            image_size=image_size,
            seed=seed,
            positive_fraction=positive_fraction,
        )
    )
    counts = ", ".join(f"{split} {n} ({summary.positives[split]} label 1)" for split, n in summary.counts.items())
    click.echo(f"wrote {sum(summary.counts.values())} images of {image_size}x{image_size} to {summary.out_dir}: {counts}")
