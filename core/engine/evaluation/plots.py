"""PNG plots of a run (loss and accuracy curves, confusion matrix) and of an evaluation (ROC, PR,
calibration, the probability histogram), drawn with matplotlib's Agg backend so they work on a server
with no display. Imported by the functions that draw, so importing the runners loads no matplotlib."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from core.common.atomic import open_atomic  # noqa: E402
from core.engine.run_folder.layout import ACCURACY_PNG, CONFUSION_PNG, LOSS_PNG

CLASS_NAMES = ("hem (0)", "all (1)")


def _save(figure: plt.Figure, path: Path) -> Path:
    """Write the PNG atomically: the dashboard shows a running job's plots while they are redrawn."""
    figure.tight_layout()
    try:
        with open_atomic(path, "wb") as file:
            figure.savefig(file, format="png", dpi=100)
    finally:
        plt.close(figure)
    return path


def _save_unit_square(figure: plt.Figure, axes: plt.Axes, path: Path, *, x: str, y: str, title: str) -> Path:
    """Label a plot of rates (both axes 0..1, a little headroom above 1 so a curve at 1 stays visible), then save."""
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    axes.set_xlim(0, 1), axes.set_ylim(0, 1.02)
    axes.set_title(title)
    return _save(figure, path)


def plot_curve(epochs: Sequence[int], series: dict[str, Sequence[float | None]], ylabel: str, path: Path) -> Path:
    """One line per named series against the epoch; missing (None) values are left out."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for name, values in series.items():
        points = [(e, v) for e, v in zip(epochs, values) if v is not None]
        if points:
            xs, ys = zip(*points)
            axes.plot(xs, ys, marker="o", label=name)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    axes.legend()
    return _save(figure, path)


def plot_confusion(confusion: list[list[int]], path: Path, title: str = "confusion matrix") -> Path:
    """The 2x2 counts as a heat map, rows = true class, columns = predicted class."""
    figure, axes = plt.subplots(figsize=(4.5, 4))
    image = axes.imshow(confusion, cmap="Blues")
    figure.colorbar(image, ax=axes)
    peak = max(max(row) for row in confusion) or 1
    for row, counts in enumerate(confusion):
        for column, count in enumerate(counts):
            color = "white" if count > peak / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=color, fontsize=14)
    axes.set_xticks([0, 1], CLASS_NAMES)
    axes.set_yticks([0, 1], CLASS_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(title)
    return _save(figure, path)


def plot_history(history: list[dict], run_folder: Path, best_epoch: int | None) -> list[Path]:
    """Redraw a run's loss.png, accuracy.png and (with a validation split) the best epoch's confusion.png."""
    epochs = [row["epoch"] for row in history]
    paths = [
        plot_curve(
            epochs,
            {"train": [r["train_loss"] for r in history], "valid": [r["valid_loss"] for r in history]},
            "loss",
            run_folder / LOSS_PNG,
        ),
        plot_curve(
            epochs,
            {
                "train": [r["train_accuracy"] for r in history],
                "valid": [r["valid_accuracy"] for r in history],
                "valid balanced": [r["valid_balanced_accuracy"] for r in history],
                "valid weighted F1": [r["valid_f1"] for r in history],
                "valid ROC-AUC": [r.get("valid_roc_auc") for r in history],
            },
            "accuracy",
            run_folder / ACCURACY_PNG,
        ),
    ]
    best = next((r for r in history if r["epoch"] == best_epoch), None)
    if best is not None and best["confusion"] is not None:
        title = f"validation, best epoch {best_epoch}"
        paths.append(plot_confusion(best["confusion"], run_folder / CONFUSION_PNG, title))
    return paths


def _threshold_label(report: dict) -> str:
    return f"threshold {report['threshold']:.3g}"


def plot_roc(report: dict, path: Path) -> Path:
    """The ROC curve of a clinical report (core.engine.evaluation.clinical), its AUC with interval, and the operating point."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    auc = report["metrics"]["roc_auc"]
    label = (
        "ROC"
        if auc["value"] is None
        else f"AUC {auc['value']:.3f}" + ("" if auc["low"] is None else f" [{auc['low']:.3f}, {auc['high']:.3f}]")
    )
    if auc["value"] is not None:
        axes.plot(report["roc"]["fpr"], report["roc"]["tpr"], label=label)
        sensitivity, specificity = report["metrics"]["sensitivity"]["value"], report["metrics"]["specificity"]["value"]
        axes.plot([1 - specificity], [sensitivity], "o", color="black", label=_threshold_label(report))
        axes.legend(loc="lower right")
    else:
        axes.text(0.5, 0.5, "undefined: one class only", ha="center")
    axes.plot([0, 1], [0, 1], ":", color="grey")
    return _save_unit_square(
        figure,
        axes,
        path,
        x="1 - specificity (false positive rate)",
        y="sensitivity (ALL found)",
        title="ROC, positive class ALL",
    )


def plot_precision_recall(report: dict, path: Path) -> Path:
    """Precision against recall of ALL, with PR-AUC (average precision) and the share of ALL as baseline."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    area = report["metrics"]["pr_auc"]
    if area["value"] is not None:
        axes.step(report["pr"]["recall"], report["pr"]["precision"], where="post", label=f"AP {area['value']:.3f}")
        prevalence = report["positives"] / max(1, report["positives"] + report["negatives"])
        axes.axhline(prevalence, linestyle=":", color="grey", label=f"share of ALL {prevalence:.2f}")
        axes.legend(loc="lower left")
    else:
        axes.text(0.5, 0.5, "undefined: no ALL image", ha="center")
    return _save_unit_square(
        figure, axes, path, x="recall (sensitivity)", y="precision (PPV)", title="precision-recall, positive class ALL"
    )


def plot_calibration(report: dict, path: Path) -> Path:
    """Reliability diagram: observed share of ALL against mean P(ALL) per bin, bar width = bin, with the ECE."""
    figure, axes = plt.subplots(figsize=(4.5, 4.5))
    bins = [b for b in report["calibration"]["bins"] if b["count"]]
    axes.bar(
        [b["low"] for b in bins],
        [b["fraction_all"] for b in bins],
        width=[b["high"] - b["low"] for b in bins],
        align="edge",
        alpha=0.6,
        edgecolor="black",
        label="observed",
    )
    axes.plot([b["mean_probability"] for b in bins], [b["fraction_all"] for b in bins], "o", color="black")
    axes.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    axes.legend(loc="upper left")
    ece = report["calibration"]["ece"]
    return _save_unit_square(
        figure,
        axes,
        path,
        x="predicted P(ALL)",
        y="share that is ALL",
        title="calibration" + ("" if ece is None else f", ECE {ece:.3f}"),
    )


def plot_histogram(edges: Sequence[float], counts: Sequence[int], threshold: float, path: Path) -> Path:
    """Histogram of P(ALL) with the operating threshold marked."""
    figure, axes = plt.subplots(figsize=(5, 3.5))
    axes.bar(edges[:-1], counts, width=[b - a for a, b in zip(edges, edges[1:])], align="edge", edgecolor="black")
    axes.axvline(threshold, color="red", linestyle="--", label=f"threshold {threshold:.3g}")
    axes.set_xlabel("P(ALL)")
    axes.set_ylabel("images")
    axes.legend()
    return _save(figure, path)
