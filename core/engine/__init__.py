"""The ML engine as a library: train, finetune, evaluate and predict ResNet classifiers of leukemia cell
images, with no server, database or broker (import-linter keeps it so).

    from pathlib import Path
    from core.engine import TrainParams, train

    result = train(TrainParams(data_dir="data", epochs=3, device="cpu"), Path("runs/first"))
    print(result.best_path)

The front door is these names: `train`, `finetune`, `evaluate_csv`, `predict_csv` and their parameters
(`TrainParams`, `FinetuneParams`, `EvaluateParams`, `PredictParams`; `parse_params(kind, values)` builds
one from a dict, as the CLI, the API and the worker do). Each is loaded on first use (PEP 562), so
`import core.engine` loads neither torch nor anything else of the engine.

Behind it, one package per job:
- `data/`: data folders (layouts, the C-NMC release, named splits, `leukemia check`, synthetic data);
- `inputs/`: the input path (decoded-image cache, augmentation, batches on the device);
- `model/`: the from-scratch ResNets, checkpoints, memory and disk limits;
- `training/`: the epoch loop, schedule, exact resume, early stopping, cross-validation;
- `evaluation/`: evaluate and predict, the scores, clinical measures, threshold, plots, Grad-CAM;
- `run_folder/`: what a run folder holds and which one, its files, the artifact store;
and beside them `params` (the one parameter schema), `progress` (the observer contract of long runs)
and `settings` (the few settings the engine reads)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "EvaluateParams",
    "FinetuneParams",
    "PredictParams",
    "TrainParams",
    "evaluate_csv",
    "finetune",
    "parse_params",
    "predict_csv",
    "train",
]

_HOMES = {
    "train": "core.engine.training.loop",
    "finetune": "core.engine.training.loop",
    "evaluate_csv": "core.engine.evaluation.predict",
    "predict_csv": "core.engine.evaluation.predict",
    "TrainParams": "core.engine.params",
    "FinetuneParams": "core.engine.params",
    "EvaluateParams": "core.engine.params",
    "PredictParams": "core.engine.params",
    "parse_params": "core.engine.params",
}

if TYPE_CHECKING:  # for type checkers and editors; at run time __getattr__ loads each name when asked
    from core.engine.evaluation.predict import evaluate_csv, predict_csv
    from core.engine.params import EvaluateParams, FinetuneParams, PredictParams, TrainParams, parse_params
    from core.engine.training.loop import finetune, train


def __getattr__(name: str) -> Any:
    """A front-door name, imported from its home on first use and kept here after."""
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
