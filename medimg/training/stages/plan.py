"""Stage 2, plan: seeds, the planner's cache mode and batch for this machine, the data loaders."""

from __future__ import annotations

import logging
from typing import Any

from medimg.config.schema import Workflow
from medimg.tasks import get_task
from medimg.training.stages.records import PreparedData, StudyPlan

log = logging.getLogger(__name__)


def ddp_world_size(wf: Workflow) -> int:
    """Processes a DDP run will have (1 when not distributed or not known in advance)."""
    t = wf.trainer
    if t.strategy in ("ddp", "ddp_spawn") and isinstance(t.devices, int):
        return t.devices * t.num_nodes
    return 1


def plan_study(wf: Workflow, data: PreparedData) -> StudyPlan:
    """Seed every generator, plan cache and batch for this machine, build the datasets and loaders.

    When the planner's patch batch cannot hold ``optim.batch_size`` the batch is lowered in a copy
    of the workflow (so the resolved workflow and its hash record the batch used); under DDP it is
    kept, with a warning, since every rank must step with the same batch.

    Example:
        >>> plan = plan_study(wf, prepare(wf))  # doctest: +SKIP
        >>> plan.wf.optim.batch_size, plan.plan.cache_mode  # doctest: +SKIP
        (2, 'memory')
    """
    from medimg.data.datasets import case_dicts
    from medimg.data.planner import plan_run
    from medimg.models.networks import build_model
    from medimg.training.determinism import configure_determinism
    from medimg.training.stages.plan_auto import resolve_auto

    df, rank = data.df, data.rank
    wf = resolve_auto(wf, data.out)  # model: auto / preprocessing: auto, planned as `medimg plan` does
    caveats = configure_determinism(wf.seed, wf.trainer.deterministic, wf.trainer.accelerator)
    world = ddp_world_size(wf)
    train_items = case_dicts(df[df.split == "train"], wf.task)
    wf = resolve_class_weights(wf, train_items)  # before DDP's partition: every rank weighs the same
    if world > 1:  # each rank caches only its own share: host memory does not multiply with ranks
        from monai.data import partition_dataset

        train_items = partition_dataset(train_items, num_partitions=world, even_divisible=True)[rank]
    val_items = case_dicts(df[df.split == "val"], wf.task)
    net = build_model(wf)  # measured by the planner, then trained: built once per run
    plan = plan_run(wf, train_items + val_items, net)
    seg = get_task(wf.task).dense
    per_case = wf.augmentation.samples_per_volume if seg and wf.augmentation.patch_size else 1
    assert plan.patch_batch is not None
    if plan.patch_batch // per_case < wf.optim.batch_size:
        if world > 1:  # every rank must step with the same batch: say so, do not diverge
            log.warning("planner: %s (kept: DDP ranks must agree; lower optim.batch_size)", plan.explain())
        else:  # the study changes, so the resolved workflow (and its hash) records the batch used
            wf = wf.model_copy(deep=True)
            wf.optim.batch_size = plan.patch_batch // per_case
    log.info("planner: %s", plan.explain())
    prefetch = plan.threads.prefetch if plan.threads else True
    if plan.threads:
        plan.threads.apply()
    train_ds, train_dl, val_dl = _loaders(wf, data, plan.cache_mode, train_items, val_items, prefetch)
    return StudyPlan(wf, plan, caveats, train_ds, train_dl, val_dl, net)


def resolve_class_weights(wf: Workflow, train_items: list[dict[str, Any]]) -> Workflow:
    """``optim.class_weights: auto`` made the list the training split's class counts imply.

    The list goes into a copy of the workflow, so the resolved workflow (logged, hashed, saved in
    the checkpoint) records the weights the loss used. Other values are returned unchanged.

    Example:
        >>> wf = resolve_class_weights(wf, [{"label": 0}] * 3 + [{"label": 1}])  # doctest: +SKIP
        >>> wf.optim.class_weights  # doctest: +SKIP
        [0.666667, 2.0]
    """
    from medimg.data.recipe_rules import balanced_class_weights

    if wf.optim.class_weights != "auto":
        return wf
    counts = [0] * wf.data.num_classes
    for item in train_items:
        counts[int(item["label"])] += 1
    wf = wf.model_copy(deep=True)
    wf.optim.class_weights = balanced_class_weights(counts)
    log.info(
        "optim.class_weights auto: %s from the training split's class counts %s",
        wf.optim.class_weights,
        counts,
    )
    return wf


def balanced_sample_weights(items: list[dict[str, Any]]) -> list[float]:
    """``data.sampler: balanced``: each case's draw weight, 1 / (cases of its class), so classes are drawn equally.

    Example:
        >>> balanced_sample_weights([{"label": 0}, {"label": 0}, {"label": 1}])
        [0.5, 0.5, 1.0]
    """
    from collections import Counter

    counts = Counter(int(item["label"]) for item in items)
    return [1.0 / counts[int(item["label"])] for item in items]


def _loaders(
    wf: Workflow,
    data: PreparedData,
    cache_mode: str | None,
    train_items: list[Any],
    val_items: list[Any],
    prefetch: bool = True,
) -> tuple[Any, Any, Any]:
    """The training dataset, and the training and validation loaders, cached and threaded as planned."""
    from medimg.data.datasets import make_dataset, make_loader
    from medimg.data.loading import raise_medimg_cause

    out, seg = data.out, get_task(wf.task).dense
    try:  # the memory cache reads every case now: a refused image stops the run here
        train_ds = make_dataset(wf, train_items, train=True, cache_dir=out / "cache", mode=cache_mode)
        val_ds = make_dataset(wf, val_items, train=False, cache_dir=out / "cache", mode=cache_mode)
    except Exception as exc:
        raise_medimg_cause(exc)
        raise
    train_ds.transform.set_random_state(seed=wf.seed + data.rank)  # augmentation draws follow the seed
    weights = balanced_sample_weights(train_items) if wf.data.sampler == "balanced" else None
    train_dl = make_loader(
        train_ds, wf.optim.batch_size, True, wf.trainer.num_workers, wf.seed, prefetch, sample_weights=weights
    )
    val_dl = make_loader(
        val_ds, 1 if seg else wf.optim.batch_size, False, wf.trainer.num_workers, wf.seed, prefetch
    )
    return train_ds, train_dl, val_dl
