"""The Lightning module the fine-tuning tests train: a small 2D ResNet-10 under medimg's parameter groups."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from medimg.config.weights import FinetuneSpec
from medimg.models.finetune import param_groups
from medimg.models.networks import build_network, encoder_prefixes
from medimg.training.optim import warmup_cosine


class FinetuneTask(L.LightningModule):
    """ResNet-10 (2D, a quarter wide, 2 classes) trained with cross-entropy on ``(x, y)`` batches.

    AdamW at 1e-2 over the encoder/head groups of ``spec``, warmup-cosine per step (2 warmup
    steps) over ``steps`` steps; ``None``: the trainer's estimate of the whole run.
    """

    def __init__(self, spec: FinetuneSpec, steps: int | None = None) -> None:
        super().__init__()
        self.spec, self.steps = spec, steps
        self.net = build_network("resnet10", spatial_dims=2, in_channels=1, out_channels=2, widen_factor=0.25)
        self.prefixes = encoder_prefixes("resnet10", self.net)

    def training_step(self, batch, _):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(param_groups(self.net, 1e-2, self.spec, self.prefixes), lr=1e-2)
        steps = self.steps or self.trainer.estimated_stepping_batches
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(steps, 2))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
