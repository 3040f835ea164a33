"""The plumbing both baseline scripts share: caching the splits, the training budget, the result JSON.

What is trained and how (transforms, network, loss, optimiser, the validation metric) stays in
each script; this module only caches, keeps the clock and writes. Like the scripts, it imports
nothing from medimg.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from monai.data import CacheDataset
from monai.transforms import Compose


def cache_splits(
    splits: dict[str, Sequence[Any]], train_tf: Compose, eval_tf: Compose
) -> tuple[CacheDataset, CacheDataset, CacheDataset]:
    """The train, val and test cases cached once (``CacheDataset``): train with ``train_tf``, the others ``eval_tf``."""
    train_ds = CacheDataset(splits["train"], train_tf, cache_rate=1.0, num_workers=0, progress=False)
    val_ds = CacheDataset(splits["val"], eval_tf, cache_rate=1.0, num_workers=0, progress=False)
    test_ds = CacheDataset(splits["test"], eval_tf, cache_rate=1.0, num_workers=0, progress=False)
    return train_ds, val_ds, test_ds


class Fit(NamedTuple):
    """How training went: seconds from the start of the budget to the last step, epochs begun, steps taken."""

    train_s: float
    epochs: int
    steps: int


def train_for_budget(
    loader: Iterable[Any],
    train_step: Callable[[Any], None],
    t_fit: float,
    budget_s: float,
    after_epoch: Callable[[int], None],
) -> Fit:
    """``train_step`` on every batch of ``loader``, epoch after epoch, until ``budget_s`` seconds since ``t_fit``.

    The budget is checked after every step, so training stops mid-epoch; ``after_epoch(epoch)``
    (validation) runs after each epoch that finished within the budget.
    """
    epoch, steps, done = 0, 0, False
    while not done:
        for batch in loader:
            train_step(batch)
            steps += 1
            if time.perf_counter() - t_fit >= budget_s:  # stop mid-epoch at the budget
                done = True
                break
        epoch += 1
        if not done:
            after_epoch(epoch)
    return Fit(time.perf_counter() - t_fit, epoch, steps)


def write_result(
    a: argparse.Namespace,
    recipe: str,
    cache_s: float,
    fit: Fit,
    curve: list[tuple[float, float]],
    test: dict[str, Any],
) -> None:
    """The run's JSON in ``a.out``: the recipe, the settings (``a`` but the paths), timings, curve and test outputs."""
    result = {
        "recipe": recipe,
        "settings": {k: v for k, v in vars(a).items() if k not in ("manifest", "out")},
        "cache_s": round(cache_s, 1),
        "train_s": round(fit.train_s, 1),
        "epochs": fit.epochs,
        "steps": fit.steps,
        "curve": curve,
        "test": test,
    }
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
