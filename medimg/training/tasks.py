"""Lightning tasks: segmentation (DiceCE, sliding-window validation Dice) and classification.

The network, loss and optimiser come from the workflow by name; the module keeps the
resolved workflow as plain data in its hyper-parameters, so a checkpoint says exactly
how it was trained.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceLoss
from monai.metrics import DiceMetric
from monai.networks.utils import one_hot

from medimg.config.load import parse_workflow
from medimg.config.schema import Workflow
from medimg.data.planner import sliding_window_plan
from medimg.errors import ConfigError
from medimg.models.networks import build_model
from medimg.tasks import get_task
from medimg.training.optim import make_optimizer, warmup_cosine


class _Task(pl.LightningModule):
    """``net``: the workflow's network already built (the plan stage's, which it measured); else built here."""

    def __init__(self, workflow: dict[str, Any], steps_per_epoch: int = 1, net: Any = None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["net"], logger=False)  # medimg logs the flattened workflow itself
        self.wf: Workflow = parse_workflow(workflow, source="checkpoint")
        self.net = build_model(self.wf) if net is None else net
        self.steps_per_epoch = max(1, steps_per_epoch)

    @property
    def channels_last(self) -> bool:
        """Whether batches and weights use ``channels_last_3d`` (``"auto"``: on the CPU only)."""
        setting = self.wf.trainer.channels_last
        return self.device.type == "cpu" if setting == "auto" else bool(setting)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # plain tensors in: a MetaTensor runs MONAI's metadata bookkeeping on every operation of
        # the network (benchmarks/profile_cls_step.py); the values are the same
        x = x.as_subclass(torch.Tensor)
        if x.dim() == 5 and self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        # plain tensors out: MONAI's MetaTensor would reach the logged metrics and, through the
        # monitored value, the checkpoints (which then no longer load with weights_only=True)
        return self.net(x).as_subclass(torch.Tensor)

    def on_fit_start(self) -> None:
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last_3d)

    def check_finite_loss(self, loss: torch.Tensor, batch: dict[str, Any]) -> None:
        """Stop training on a NaN/inf loss, naming the step and the batch's cases.

        A non-finite loss poisons every weight at the next optimiser step; the run would go on
        and export a model that predicts nothing. Raising here fails the run (MLflow status
        FAILED) before any model is exported.
        """
        if bool(torch.isfinite(loss.detach()).all()):
            return
        from medimg.errors import DataError

        cases = batch.get("case_key") if isinstance(batch, dict) else None
        names = ", ".join(str(c) for c in cases) if isinstance(cases, (list, tuple)) else "unknown"
        raise DataError(
            f"training loss is {float(loss.detach().float().mean())} at epoch {self.current_epoch}, "
            f"step {self.global_step} (cases: {names}); check these images for extreme or NaN values, "
            "or lower optim.lr"
        )

    def log_train_loss(self, loss: torch.Tensor, batch_size: int) -> torch.Tensor:
        """Epoch-mean training loss, reduced over DDP ranks."""
        self.log(
            "train_loss",
            loss,
            prog_bar=True,
            on_step=False,
            on_epoch=True,
            batch_size=batch_size,
            sync_dist=True,
        )
        return loss

    def encoder_prefixes(self) -> list[str]:
        from medimg.models.networks import encoder_prefixes

        return encoder_prefixes(self.wf.model.name, self.net)

    def param_groups(self) -> Any:
        """Named ``encoder``/``head`` groups (``finetune.backbone_lr_mult`` scales the encoder's LR)."""
        from medimg.models.finetune import param_groups

        return param_groups(self.net, self.wf.optim.lr, self.wf.finetune, self.encoder_prefixes())

    def configure_optimizers(self) -> Any:
        o = self.wf.optim
        opt = make_optimizer(self.param_groups(), o)
        total = self.wf.trainer.max_epochs * self.steps_per_epoch
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, warmup_cosine(total, o.warmup_epochs * self.steps_per_epoch, o.scheduler)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class SegmentationTask(_Task):
    """3D segmentation: DiceCE on random patches, sliding-window Dice on whole validation volumes."""

    monitor, monitor_mode = "val_dice", "max"

    def __init__(self, workflow: dict[str, Any], steps_per_epoch: int = 1, net: Any = None) -> None:
        super().__init__(workflow, steps_per_epoch, net)
        loss = self.wf.optim.loss
        if loss == "dice_ce":
            self.loss = DiceCELoss(to_onehot_y=True, softmax=True)
        elif loss == "dice":
            self.loss = DiceLoss(to_onehot_y=True, softmax=True)
        else:
            self.loss = torch.nn.CrossEntropyLoss()
        self.dice = DiceMetric(include_background=False, reduction="mean_batch", ignore_empty=False)
        self.n_labels = len(self.wf.data.labels)

    def segmentation_loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of one output ``[B, C, *spatial]``, or of deep supervision's stacked outputs.

        A network with deep supervision (DynUNet's ``deep_supervision``) returns, in training,
        ``[B, 1 + k, C, *spatial]``: the full-resolution output and ``k`` lower-resolution heads,
        which MONAI upsamples to the full resolution. The loss is their weighted sum with nnU-Net's
        weights (:func:`deep_supervision_weights`), each head against the full-resolution label.
        """
        if logits.dim() == y.dim() + 1:
            heads = torch.unbind(logits, dim=1)
            weights = deep_supervision_weights(len(heads))
            return torch.stack(
                [w * self.segmentation_loss(h, y) for w, h in zip(weights, heads, strict=True)]
            ).sum()
        if isinstance(self.loss, torch.nn.CrossEntropyLoss):
            return self.loss(logits, y[:, 0].long())
        return self.loss(logits, y)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["label"].as_subclass(torch.Tensor)
        loss = self.segmentation_loss(self(x), y)
        self.check_finite_loss(loss, batch)
        return self.log_train_loss(loss, x.shape[0])

    def sliding_window(self, x: torch.Tensor) -> torch.Tensor:
        inf = self.wf.inference
        roi, sw, _why = sliding_window_plan(
            self.wf, self.net, x.shape[2:], int(x.shape[1]), self.n_labels, self.device.type
        )
        return sliding_window_inference(x, roi, sw, self, overlap=inf.overlap, mode=inf.blend)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, y = batch["image"], batch["label"]
        logits = self.sliding_window(x)
        pred = one_hot(logits.argmax(1, keepdim=True), self.n_labels)
        self.dice(pred, one_hot(y.long(), self.n_labels))

    def on_validation_epoch_end(self) -> None:
        per_label = self.dice.aggregate()
        self.dice.reset()
        self.log("val_dice", per_label.mean(), prog_bar=True, sync_dist=True)
        for name, value in zip(list(self.wf.data.labels.values())[1:], per_label, strict=False):
            self.log(f"val_dice_{name}", value, sync_dist=True)


def deep_supervision_weights(outputs: int) -> list[float]:
    """nnU-Net's deep-supervision weights: 1, 1/2, 1/4, ... from the full resolution down, summing to 1.

    Example:
        >>> deep_supervision_weights(3)
        [0.5714285714285714, 0.2857142857142857, 0.14285714285714285]
    """
    raw = [0.5**i for i in range(outputs)]
    return [w / sum(raw) for w in raw]


class ClassificationTask(_Task):
    """3D classification: cross-entropy; validation AUROC (one-vs-rest) and accuracy.

    The best checkpoint is the one with the lowest validation cross-entropy, not the highest
    AUROC: on the small validation sets of clinical studies AUROC saturates at 1.0 within a few
    epochs, and the first epoch that reaches it (often badly calibrated: every case above 0.5)
    would be kept for good. Cross-entropy is a proper scoring rule; it keeps improving with
    both ranking and calibration.
    """

    monitor, monitor_mode = "val_loss", "min"

    def __init__(self, workflow: dict[str, Any], steps_per_epoch: int = 1, net: Any = None) -> None:
        super().__init__(workflow, steps_per_epoch, net)
        self.loss = class_weighted_ce(self.wf)
        self._probs: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = batch["image"], batch["label"].long().view(-1)
        loss = self.loss(self(x), y)
        self.check_finite_loss(loss, batch)
        return self.log_train_loss(loss, x.shape[0])

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x, y = batch["image"], batch["label"].long().view(-1)
        logits = self(x)
        self.log("val_loss", self.loss(logits, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        self._probs.append(torch.softmax(logits.float(), 1).detach().cpu())
        self._labels.append(y.detach().cpu())

    def on_validation_epoch_end(self) -> None:
        from medimg.evaluation.cls_metrics import auroc as cohort_auroc

        probs_t = torch.cat(self._probs) if self._probs else torch.zeros((0, self.wf.data.num_classes))
        labels_t = torch.cat(self._labels) if self._labels else torch.zeros(0, dtype=torch.long)
        if self.trainer.world_size > 1:  # AUROC needs every rank's cases, not a mean of per-rank AUROCs
            probs_t = self.all_gather(probs_t.to(self.device)).reshape(-1, probs_t.shape[-1]).cpu()
            labels_t = self.all_gather(labels_t.to(self.device)).reshape(-1).cpu()
        probs, labels = probs_t.numpy(), labels_t.numpy()
        self._probs.clear()
        self._labels.clear()
        acc = float((probs.argmax(1) == labels).mean()) if len(labels) else 0.0
        self.log("val_acc", acc)
        if len(np.unique(labels)) < 2:  # AUROC is undefined on one class: not logged, never a stand-in
            return
        self.log(
            "val_auroc", cohort_auroc(labels, probs[:, 1] if probs.shape[1] == 2 else probs), prog_bar=True
        )


class WeightedCrossEntropy(torch.nn.Module):
    """Cross-entropy with a fixed weight per class, kept out of the state dict.

    ``torch.nn.CrossEntropyLoss(weight=...)`` registers the weights as a buffer, which would add a
    ``loss.weight`` entry to every checkpoint; here they are plain data of the workflow.
    """

    def __init__(self, weights: list[float]) -> None:
        super().__init__()
        self.weights = torch.tensor(weights, dtype=torch.float32)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weights.to(device=logits.device, dtype=logits.dtype)
        return torch.nn.functional.cross_entropy(logits, target, weight=weight)


def class_weighted_ce(wf: Workflow) -> torch.nn.Module:
    """The classification loss: cross-entropy, weighted per class by ``optim.class_weights``.

    Raises:
        ConfigError: ``optim.class_weights`` is still ``auto`` (the run's plan stage resolves it
            from the training split's class counts).

    Example:
        >>> wf = parse_workflow({"task": "classification", "data": {"manifest": "m.csv"},
        ...                      "optim": {"class_weights": [0.5, 2.0]}}, source="example")
        >>> class_weighted_ce(wf).weights.tolist()
        [0.5, 2.0]
    """
    weights = wf.optim.class_weights
    if weights == "none":
        return torch.nn.CrossEntropyLoss()
    if weights == "auto":
        raise ConfigError(
            "optim.class_weights: auto is resolved from the training split's class counts by `medimg run`; "
            "to build the task directly, give one weight per class (or none)"
        )
    return WeightedCrossEntropy(list(weights))


LIGHTNING_TASKS: dict[str, type[_Task]] = {}


def register_lightning_task(name: str, module: type[_Task]) -> type[_Task]:
    """Train the task registered as ``name`` (:mod:`medimg.tasks`) with ``module``; once per name.

    Example:
        >>> register_lightning_task("segmentation", SegmentationTask)
        Traceback (most recent call last):
        ...
        medimg.errors.ConfigError: task 'segmentation' already has a Lightning module (SegmentationTask)
    """
    get_task(name)  # a known task
    if name in LIGHTNING_TASKS:
        raise ConfigError(f"task {name!r} already has a Lightning module ({LIGHTNING_TASKS[name].__name__})")
    LIGHTNING_TASKS[name] = module
    return module


def task_class(task: str) -> type[_Task]:
    """The Lightning module class for ``workflow.task``.

    Example:
        >>> task_class("classification").__name__
        'ClassificationTask'
    """
    if get_task(task).name not in LIGHTNING_TASKS:
        raise ConfigError(
            f"task {task!r} has no Lightning module; register one with "
            "medimg.training.tasks.register_lightning_task"
        )
    return LIGHTNING_TASKS[task]


register_lightning_task("segmentation", SegmentationTask)
register_lightning_task("classification", ClassificationTask)
