"""Datasets and loaders: the deterministic half cached once, the random half per epoch."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from monai.data import CacheDataset, DataLoader, Dataset, PersistentDataset, ThreadDataLoader
from monai.data.utils import list_data_collate

from medimg.config.schema import Workflow
from medimg.data.threads import cache_fill_threads
from medimg.data.transforms import eval_transforms, train_transforms
from medimg.tasks import get_task

log = logging.getLogger(__name__)


def case_dicts(df: pd.DataFrame, task: str) -> list[dict[str, Any]]:
    """Manifest rows → MONAI dictionaries (``image``, ``label``, ``case_key``).

    Example:
        >>> case_dicts(df[df.split == "train"], "segmentation")[0].keys()  # doctest: +SKIP
        dict_keys(['image', 'label', 'case_key'])
    """
    out = []
    mask = get_task(task).target == "mask"
    for row in df.itertuples():
        label: Any = row.target if mask else int(row.target)
        out.append({"image": row.image, "label": label, "case_key": row.case_key})
    return out


def make_dataset(
    wf: Workflow,
    items: list[dict[str, Any]],
    train: bool,
    cache_dir: Path | None = None,
    mode: str | None = None,
) -> Dataset:
    """A dataset whose deterministic preprocessing is cached per ``preprocessing.cache``.

    ``memory``: MONAI ``CacheDataset`` (computed once, kept in RAM); ``disk``:
    ``PersistentDataset`` (one file per case, reused across runs); ``none``: recomputed;
    ``auto``: what :func:`medimg.data.planner.choose_cache_mode` picks for these items on
    this machine. ``mode`` overrides the workflow's (a run passes the mode its plan chose).
    """
    transform = train_transforms(wf) if train else eval_transforms(wf, with_label=True)
    cache = wf.preprocessing.cache
    mode = mode or cache.mode
    if mode == "auto":
        from medimg.data.planner import resolve_cache_mode

        mode, why = resolve_cache_mode(wf, items)
        log.info("%s", why)
    if mode == "memory":
        return CacheDataset(
            items,
            transform,
            cache_rate=1.0,
            num_workers=cache_fill_threads(cache.num_workers),
            progress=False,
            copy_cache=True,
        )
    if mode == "disk":
        d = Path(cache.dir) if cache.dir else (cache_dir or Path(wf.outputs.dir) / "cache")
        d.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform, cache_dir=d)
    return Dataset(items, transform)


def make_loader(
    ds: Dataset,
    batch_size: int,
    shuffle: bool,
    num_workers: int,
    seed: int,
    prefetch: bool = True,
    sample_weights: list[float] | None = None,
) -> DataLoader:
    """A loader that overlaps loading with compute (a thread when ``num_workers`` is 0).

    ``prefetch=False`` (the thread plan on a machine with few cores,
    :func:`medimg.data.threads.plan_threads`): no background thread; each batch is prepared in
    the training thread, with the same random draws in the same order. ``sample_weights`` (one
    per case): an epoch draws ``len(ds)`` cases with replacement in proportion to them, from the
    loader's seeded generator (saved with checkpoints like the shuffle's).
    """
    import torch

    gen = torch.Generator()
    gen.manual_seed(seed)
    sampler = None
    if sample_weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(sample_weights, len(sample_weights), generator=gen)
        shuffle = False
    batches: dict[str, Any] = {  # what both loaders draw and collate alike
        "batch_size": batch_size,
        "shuffle": shuffle,
        "sampler": sampler,
        "collate_fn": list_data_collate,
        "generator": gen,
    }
    if not prefetch and num_workers == 0:
        return DataLoader(ds, num_workers=0, **batches)
    return ThreadDataLoader(
        ds,
        num_workers=num_workers,
        **batches,
        use_thread_workers=num_workers == 0,
        buffer_size=1 if num_workers == 0 else 0,
        repeats=1,
    )
