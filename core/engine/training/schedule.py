"""The optimizer and its learning-rate schedule per epoch: warmup, then step, cosine or constant."""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from core.engine.params import TrainParams


def default_step_epoch(epochs: int) -> int:
    """The step schedule's default drop: the first half of the epochs (rounded up) at lr, the rest at lr*gamma."""
    return math.ceil(epochs / 2) + 1


def lr_factor(params: TrainParams) -> Callable[[int], float]:
    """The per-epoch learning-rate factor for LambdaLR (argument: 0-based epoch index)."""
    warmup = params.warmup_epochs
    step_epoch = params.lr_step_epoch or default_step_epoch(params.epochs)

    def factor(index: int) -> float:
        epoch = index + 1
        if epoch <= warmup:
            return epoch / (warmup + 1)  # linear ramp towards lr
        if params.schedule == "step":
            return params.lr_gamma if epoch >= step_epoch else 1.0
        if params.schedule == "cosine":
            progress = (epoch - 1 - warmup) / max(1, params.epochs - warmup)
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0

    return factor


def build_optimizer(params: TrainParams, model: nn.Module) -> torch.optim.Optimizer:
    """Adam (the lab's) or SGD with momentum, both with the params' weight decay."""
    if params.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=params.lr, momentum=params.momentum, weight_decay=params.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def build_scheduler(params: TrainParams, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule, stepped once after every epoch."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(params))
