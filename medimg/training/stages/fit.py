"""Stage 5, fit: Lightning training, atomic checkpoints, exact resume, a failed run marked FAILED."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medimg.config.schema import Workflow
from medimg.training.stages.plan import ddp_world_size
from medimg.training.stages.records import BuiltModel, FitResult, PreparedData, StudyPlan, TrackedRun
from medimg.training.stages.track import mark_failed

log = logging.getLogger(__name__)


def fit(
    plan: StudyPlan,
    data: PreparedData,
    run: TrackedRun,
    built: BuiltModel,
    resume: bool,
    callbacks: Sequence[Any] = (),
) -> FitResult:
    """Train ``built.module``; with ``resume``, from ``last.ckpt`` when there is one.

    ``callbacks`` are extra Lightning callbacks (``medimg tune``'s pruning on validation).

    Raises:
        MedimgError: The cause of a failed fit (a refused case, a NaN loss), after the run is
            marked FAILED; no model is exported.

    Example:
        >>> fitted = fit(plan, data, run, built, resume=False)  # doctest: +SKIP
        >>> Path(fitted.best).name  # doctest: +SKIP
        'best.ckpt'
    """
    from medimg.data.loading import raise_medimg_cause
    from medimg.models.finetune_callback import FinetuneScheduler
    from medimg.training.checkpointing import RngState

    wf, module, last = plan.wf, built.module, data.last_checkpoint
    rng = RngState(plan.train_ds.transform, getattr(plan.train_dl, "generator", None))
    finetune = FinetuneScheduler(wf.finetune, module.encoder_prefixes(), network_attr="net")
    trainer, ckpt = make_trainer(
        wf,
        run.logger,
        data.out / "checkpoints",
        (module.monitor, module.monitor_mode),
        [rng, finetune, *callbacks],
    )
    if resume and not last.is_file():
        log.warning("--resume: no checkpoint in %s yet; training from the start", last.parent)
    try:
        trainer.fit(
            module, plan.train_dl, plan.val_dl, ckpt_path=str(last) if resume and last.is_file() else None
        )
    except Exception as exc:  # a refused case, a NaN loss: the run is FAILED and no model is exported
        if data.rank == 0 and run.run_id:
            mark_failed(run, data.out, exc)
        raise_medimg_cause(exc)
        raise
    return FitResult(module=module, best=ckpt.best_model_path or str(last), rank=trainer.global_rank)


def make_trainer(
    wf: Workflow, logger: Any, ckpt_dir: Path, monitor: tuple[str, str], extra_callbacks: list[Any]
) -> Any:
    """The Lightning ``Trainer`` the workflow asks for, and its best-checkpoint callback."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    from medimg.training.checkpointing import AtomicCheckpointIO

    t = wf.trainer
    budget = budget_callbacks(t)
    precision: Any = t.precision
    if precision == "auto":
        gpu = torch.cuda.is_available() and t.accelerator not in ("cpu",)
        precision = "bf16-mixed" if gpu and torch.cuda.is_bf16_supported() else "32-true"
    elif precision == "32":
        precision = "32-true"
    ckpt = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best",
        monitor=monitor[0],
        mode=monitor[1],
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    # "last" is written after every epoch (after its validation), for --resume
    last = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="last",
        save_top_k=1,
        save_on_train_epoch_end=True,
        enable_version_counter=False,
    )
    trainer = pl.Trainer(
        max_epochs=-1 if budget else t.max_epochs,  # a time budget replaces the epoch count
        max_time={"seconds": budget[0].budget_s} if budget else None,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        precision=precision,
        logger=logger,
        deterministic=t.deterministic,
        check_val_every_n_epoch=t.val_every_n_epochs,
        gradient_clip_val=t.gradient_clip,
        limit_train_batches=t.limit_train_batches,
        callbacks=[ckpt, last, LearningRateMonitor("epoch"), *budget, *extra_callbacks],
        plugins=[AtomicCheckpointIO()],
        log_every_n_steps=1,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=ckpt_dir.parent,
        enable_progress_bar=os.environ.get("CI") != "true",
        # under DDP the training cases are already partitioned per rank, and every rank validates
        # on all validation cases, so reduced validation metrics are exactly the full-set values
        use_distributed_sampler=ddp_world_size(wf) == 1,
    )
    return trainer, ckpt


def budget_callbacks(t: Any) -> list[Any]:
    """``[TimeBudget]`` when ``trainer.max_time`` is set (see :mod:`medimg.training.budget`), else ``[]``."""
    if t.max_time is None:
        return []
    from medimg.config.duration import parse_duration
    from medimg.training.budget import TimeBudget

    return [TimeBudget(parse_duration(t.max_time), min_val_every=t.val_every_n_epochs)]


QUIET_TRAINER: dict[str, Any] = {
    "devices": 1,
    "enable_checkpointing": False,  # the caller saves what it needs
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "log_every_n_steps": 1,
}


def quiet_trainer(**options: Any) -> Any:
    """A Lightning ``Trainer`` with :data:`QUIET_TRAINER`'s settings, ``options`` (the Trainer's
    arguments) over them: detection's loop, which writes its own epoch checkpoint, and the
    benchmarks' timed steps.

    Example:
        >>> quiet_trainer(max_epochs=1, logger=False).enable_progress_bar  # doctest: +SKIP
        False
    """
    import lightning.pytorch as pl

    return pl.Trainer(**{**QUIET_TRAINER, **options})
