"""Optimisers and learning-rate schedules chosen by name from the workflow."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from medimg.config.schema import OptimConfig


def make_optimizer(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Optimizer:
    """AdamW / Adam / SGD (momentum 0.99, Nesterov, as nnU-Net) from ``optim``.

    Example:
        >>> opt = make_optimizer(torch.nn.Linear(2, 2).parameters(), OptimConfig(lr=0.01))
        >>> type(opt).__name__
        'AdamW'
    """
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, momentum=0.99, nesterov=True)


class WarmupCosine:
    """The factor :func:`warmup_cosine` returns; ``total_steps`` may be reset while training.

    A time budget (``trainer.max_time``) resets ``total_steps`` from the measured step time so the
    schedule ends with the budget (:mod:`medimg.training.budget`). ``LambdaLR`` saves an object's
    attributes with the checkpoint, so a resumed run keeps the schedule it had.
    """

    def __init__(self, total_steps: int, warmup_steps: int, schedule: str, min_lr_ratio: float) -> None:
        self.total_steps = max(1, int(total_steps))
        self.warmup_steps = int(warmup_steps)
        self.schedule = schedule
        self.min_lr_ratio = float(min_lr_ratio)

    def __call__(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return 1.0
        t = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))


def warmup_cosine(
    total_steps: int, warmup_steps: int, schedule: str = "cosine", min_lr_ratio: float = 0.01
) -> WarmupCosine:
    """A ``LambdaLR`` factor: linear warm-up, then cosine decay to ``min_lr_ratio`` (or constant).

    The one learning-rate schedule of medimg (``optim.warmup_epochs``, ``optim.scheduler``); a
    factor of each group's own base rate, so fine-tuning's encoder/head ratio holds throughout.

    Example:
        >>> f = warmup_cosine(100, 10)
        >>> round(f(0), 2), round(f(10), 2), round(f(100), 2)
        (0.1, 1.0, 0.01)
    """
    return WarmupCosine(total_steps, warmup_steps, schedule, min_lr_ratio)
