"""The anomaly autoencoder: MONAI's convolutional ``AutoEncoder``, trained on normal cases only.

The network has no skip connections, so everything it reconstructs passes through the bottleneck
(the grid shrinks by the product of ``anomaly.strides``). Trained only on normal anatomy, it
reconstructs what it has seen and smooths away what it has not: the reconstruction error is
large where a scan departs from normal.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from medimg.config.generative import AnomalyConfig
from medimg.models.cvae import EpochPlan, train_epochs

if TYPE_CHECKING:
    from medimg.generative.checkpoint import EpochCheckpoint

log = logging.getLogger(__name__)


def build_autoencoder(cfg: AnomalyConfig, in_channels: int = 1) -> nn.Module:
    """The autoencoder ``cfg`` describes (3D, L1-trained, instance norm, PReLU).

    Example:
        >>> net = build_autoencoder(AnomalyConfig(channels=(4, 8), strides=(2, 2)))
        >>> tuple(net(torch.zeros(1, 1, 16, 16, 8)).shape)
        (1, 1, 16, 16, 8)
    """
    from monai.networks.nets import AutoEncoder

    return AutoEncoder(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=tuple(cfg.channels),
        strides=tuple(cfg.strides),
        num_res_units=1,
    )


@dataclass
class TrainedAutoencoder:
    """The trained network and its loss history (one mean L1 loss per epoch)."""

    net: nn.Module
    losses: list[float]
    seconds: float


def train_autoencoder(
    net: nn.Module,
    images: Sequence[torch.Tensor],
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 2,
    seed: int = 0,
    on_epoch: object = None,
    checkpoint: EpochCheckpoint | None = None,
) -> TrainedAutoencoder:
    """Train ``net`` to reconstruct ``images`` (each ``(C, X, Y, Z)``, one shape) with an L1 loss.

    No augmentation: flips or rotations would teach the network anatomy that normal scans do not
    have. The learning rate follows a cosine schedule; ``on_epoch(epoch, loss)`` is called after
    each epoch (MLflow logging). With ``checkpoint``, the state is saved after every epoch and a
    saved one is resumed from (:mod:`medimg.generative.checkpoint`).

    Example:
        >>> imgs = [torch.rand(1, 16, 16, 8) for _ in range(3)]
        >>> net = build_autoencoder(AnomalyConfig(channels=(4, 8), strides=(2, 2)))
        >>> len(train_autoencoder(net, imgs, epochs=2).losses)
        2
    """
    if not images:
        raise ValueError("train_autoencoder needs at least one image")
    data = torch.stack(list(images))

    def epoch_loss(gen: torch.Generator, optimisation: tuple[Any, Any]) -> float:
        opt, sched = optimisation
        order = torch.randperm(len(data), generator=gen)
        total = 0.0
        for start in range(0, len(data), batch_size):
            batch = data[order[start : start + batch_size]]
            loss = nn.functional.l1_loss(net(batch), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
        return total / len(data)

    losses, seconds = train_epochs(
        net, epoch_loss, EpochPlan(epochs, math.ceil(len(data) / batch_size), lr, seed),
        on_epoch if callable(on_epoch) else None, checkpoint,
        (log, "autoencoder: epochs %d-%d in %.1f s, final L1 %.4f"),
    )  # fmt: skip
    return TrainedAutoencoder(net, losses, seconds)
