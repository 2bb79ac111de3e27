"""PNG plots of a run (loss and accuracy curves, confusion matrix), drawn with matplotlib's
Agg backend so they work on a server with no display."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

CLASS_NAMES = ("hem (0)", "all (1)")
LOSS_PNG = "loss.png"
ACCURACY_PNG = "accuracy.png"
CONFUSION_PNG = "confusion.png"


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_curve(
    epochs: Sequence[int], series: dict[str, Sequence[float | None]], ylabel: str, path: Path
) -> Path:
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


def plot_history(history: list[dict], run_dir: Path, best_epoch: int | None) -> list[Path]:
    """Redraw a run's loss.png, accuracy.png and (with a validation split) the best epoch's confusion.png."""
    epochs = [row["epoch"] for row in history]
    paths = [
        plot_curve(
            epochs,
            {"train": [r["train_loss"] for r in history], "valid": [r["valid_loss"] for r in history]},
            "loss",
            run_dir / LOSS_PNG,
        ),
        plot_curve(
            epochs,
            {
                "train": [r["train_accuracy"] for r in history],
                "valid": [r["valid_accuracy"] for r in history],
                "valid balanced": [r["valid_balanced_accuracy"] for r in history],
                "valid weighted F1": [r["valid_f1"] for r in history],
            },
            "accuracy",
            run_dir / ACCURACY_PNG,
        ),
    ]
    best = next((r for r in history if r["epoch"] == best_epoch), None)
    if best is not None and best["confusion"] is not None:
        title = f"validation, best epoch {best_epoch}"
        paths.append(plot_confusion(best["confusion"], run_dir / CONFUSION_PNG, title))
    return paths
