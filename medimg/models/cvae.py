"""A class-conditional variational autoencoder for 3D volumes, small enough to train on a CPU.

The encoder reads the image with its class (one-hot channels) and halves the grid twice; a
fully connected layer gives the mean and log-variance of a ``latent_dim`` vector. The decoder
reads a latent vector with the class and grows it back to the grid. Sampling a case of class
``c`` is decoding ``z ~ N(0, I)`` with class ``c``. The grid must be divisible by 4.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

log = logging.getLogger(__name__)

SIGMA = 0.1  # the decoder's noise level: the squared error is scaled by 1 / (2 sigma^2)


def _block(cin: int, cout: int, kind: str = "same") -> nn.Sequential:
    """A convolution (``same``), a strided one (``down``, halves the grid) or a transposed one (``up``)."""
    conv: nn.Module
    if kind == "up":
        conv = nn.ConvTranspose3d(cin, cout, 4, stride=2, padding=1)
    elif kind == "down":
        conv = nn.Conv3d(cin, cout, 4, stride=2, padding=1)
    else:
        conv = nn.Conv3d(cin, cout, 3, padding=1)
    return nn.Sequential(conv, nn.InstanceNorm3d(cout, affine=True), nn.LeakyReLU(0.2))


class ConditionalVAE(nn.Module):
    """``encode(x, y) -> (mu, logvar)``, ``decode(z, y) -> image``; ``forward`` returns all three.

    Every layer but the decoder's last runs on half or a quarter of the grid (CPU budget): the
    encoder's first convolution is strided, the decoder's last is a transposed one.

    Example:
        >>> net = ConditionalVAE((8, 8, 8), num_classes=2, channels=(4, 8), latent_dim=4)
        >>> rec, mu, logvar = net(torch.zeros(3, 1, 8, 8, 8), torch.tensor([0, 1, 1]))
        >>> tuple(rec.shape), tuple(mu.shape)
        ((3, 1, 8, 8, 8), (3, 4))
    """

    def __init__(
        self,
        grid: Sequence[int],
        num_classes: int,
        channels: Sequence[int] = (16, 32),
        latent_dim: int = 32,
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if any(int(g) % 4 for g in grid):
            raise ValueError(f"grid {list(grid)}: each size must be divisible by 4")
        c1, c2 = (int(c) for c in channels)
        self.grid = tuple(int(g) for g in grid)
        self.small = tuple(g // 4 for g in self.grid)
        self.num_classes, self.latent_dim, self.c2 = int(num_classes), int(latent_dim), c2
        k = self.num_classes
        self.encoder = nn.Sequential(_block(in_channels + k, c1, "down"), _block(c1, c2, "down"))
        flat = c2 * math.prod(self.small)
        self.to_latent = nn.Linear(flat, 2 * self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim + k, flat)
        self.decoder = nn.Sequential(
            _block(c2 + k, c2),
            _block(c2, c1, "up"),
            nn.ConvTranspose3d(c1, in_channels, 4, stride=2, padding=1),
        )

    def _onehot(self, y: torch.Tensor, shape: Sequence[int] | None = None) -> torch.Tensor:
        hot = nn.functional.one_hot(y.long(), self.num_classes).float()
        if shape is None:
            return hot
        return hot.view(*hot.shape, 1, 1, 1).expand(-1, -1, *shape)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of the latent vector of images ``x`` of classes ``y``."""
        h = self.encoder(torch.cat([x, self._onehot(y, x.shape[2:])], dim=1))
        mu, logvar = self.to_latent(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Images of classes ``y`` decoded from latent vectors ``z``."""
        h = self.from_latent(torch.cat([z, self._onehot(y)], dim=1)).view(-1, self.c2, *self.small)
        return self.decoder(torch.cat([h, self._onehot(y, self.small)], dim=1))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.decode(z, y), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, class_index: int, seed: int) -> torch.Tensor:
        """``n`` images of class ``class_index`` from ``z ~ N(0, I)``; the same seed gives the same images."""
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(n, self.latent_dim, generator=gen)
        y = torch.full((n,), int(class_index), dtype=torch.long)
        was = self.training
        self.eval()
        out = self.decode(z, y)
        self.train(was)
        return out


def vae_loss(
    rec: torch.Tensor, x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The negative ELBO per case (Gaussian decoder with sigma :data:`SIGMA`): total, error, KL.

    Example:
        >>> x = torch.zeros(2, 1, 4, 4, 4)
        >>> [float(t) for t in vae_loss(x, x, torch.zeros(2, 3), torch.zeros(2, 3), 1.0)]
        [0.0, 0.0, 0.0]
    """
    err = ((rec - x) ** 2).flatten(1).sum(1).mean() / (2 * SIGMA**2)
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp())).sum(1).mean()
    return err + beta * kl, err, kl


class EpochState(Protocol):
    """Where the loop's state goes after each epoch (:class:`medimg.generative.checkpoint.EpochCheckpoint`)."""

    def restore(self, parts: dict[str, Any]) -> tuple[int, list[float], dict[str, Any]]: ...

    def save(self, epoch: int, parts: dict[str, Any], rng: dict[str, Any], losses: list[float]) -> Any: ...


@dataclass
class TrainedVAE:
    """The trained network, its loss per epoch (negative ELBO per case) and the time it took."""

    net: ConditionalVAE
    losses: list[float]
    seconds: float


def class_weights(labels: torch.Tensor, num_classes: int, balance: bool) -> torch.Tensor:
    """Sampling weight of each case: equal per class when ``balance`` (absent classes get none).

    Example:
        >>> [round(w, 3) for w in class_weights(torch.tensor([0, 0, 0, 1]), 2, True).tolist()]
        [0.667, 0.667, 0.667, 2.0]
    """
    if not balance:
        return torch.ones(len(labels))
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    present = int((counts > 0).sum())
    per_class = torch.where(counts > 0, len(labels) / (present * counts.clamp(min=1)), torch.zeros(()))
    return per_class[labels.long()]


def _vae_step(
    net: ConditionalVAE,
    images: torch.Tensor,
    labels: torch.Tensor,
    idx: torch.Tensor,
    optimisation: tuple[Any, Any],
    gen: torch.Generator,
    flip: bool,
    beta: float,
) -> float:
    """One optimiser step on the cases ``idx`` (each axis flipped at random when ``flip``); the
    batch's summed loss."""
    opt, sched = optimisation
    x = images[idx]
    flips = [d + 2 for d in range(3) if flip and torch.rand((), generator=gen) < 0.5]
    x = x.flip(flips) if flips else x
    rec, mu, logvar = net(x, labels[idx])
    loss, _, _ = vae_loss(rec, x, mu, logvar, beta)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    sched.step()
    return float(loss.detach()) * len(idx)


def train_vae(
    net: ConditionalVAE,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 8,
    beta: float = 1.0,
    balance: bool = True,
    flip: bool = True,
    seed: int = 0,
    on_epoch: Callable[[int, float], None] | None = None,
    checkpoint: EpochState | None = None,
) -> TrainedVAE:
    """Train ``net`` on ``images`` ``(N, C, X, Y, Z)`` of classes ``labels`` ``(N,)``.

    Each epoch draws ``N`` cases (with replacement, weighted by :func:`class_weights`), with a
    random flip along each axis when ``flip``; AdamW with a cosine learning-rate schedule. With
    ``checkpoint``, the state (network, optimiser, schedule, losses, torch's random state and the
    loop's generator, which draws the cases and the flips) is saved after every epoch and a saved one
    is resumed from: the epochs it holds are not run again (:mod:`medimg.generative.checkpoint`).

    Example:
        >>> net = ConditionalVAE((8, 8, 8), 2, (4, 8), 4)
        >>> len(train_vae(net, torch.rand(4, 1, 8, 8, 8), torch.tensor([0, 0, 1, 1]), epochs=2).losses)
        2
    """
    if len(images) == 0:
        raise ValueError("train_vae needs at least one image")
    torch.manual_seed(seed)
    weights = class_weights(labels, net.num_classes, balance)

    def epoch_loss(gen: torch.Generator, optimisation: tuple[Any, Any]) -> float:
        order = torch.multinomial(weights, len(images), replacement=True, generator=gen)
        total = sum(
            _vae_step(net, images, labels, order[start : start + batch_size], optimisation, gen, flip, beta)
            for start in range(0, len(order), batch_size)
        )
        return total / len(order)

    losses, seconds = train_epochs(
        net, epoch_loss, EpochPlan(epochs, math.ceil(len(images) / batch_size), lr, seed),
        on_epoch, checkpoint, (log, "conditional VAE: epochs %d-%d in %.1f s, loss %.2f"),
    )  # fmt: skip
    return TrainedVAE(net, losses, seconds)


@dataclass(frozen=True)
class EpochPlan:
    """How long and how fast :func:`train_epochs` trains: epochs, optimiser steps per epoch, the
    peak learning rate and the seed of the loop's generator."""

    epochs: int
    steps_per_epoch: int
    lr: float
    seed: int


def train_epochs(
    net: nn.Module,
    epoch_loss: Callable[[torch.Generator, tuple[Any, Any]], float],
    plan: EpochPlan,
    on_epoch: Callable[[int, float], None] | None,
    checkpoint: EpochState | None,
    report: tuple[logging.Logger, str],
) -> tuple[list[float], float]:
    """The generative models' epoch loop: the losses per epoch and the seconds it took.

    AdamW (weight decay 1e-5) with a cosine learning-rate schedule over all the steps;
    ``epoch_loss(gen, (optimiser, schedule))`` trains one epoch, drawing from the loop's generator,
    and returns its mean loss; ``on_epoch(epoch, loss)`` follows. With ``checkpoint``, the state
    (network, optimiser, schedule, losses, the loop's generator) is saved after every epoch and a
    saved one is resumed from. ``report`` is the logger and message (first epoch, epochs, seconds,
    last loss) of the summary line.

    Example:
        >>> net = nn.Linear(2, 1)
        >>> step = lambda gen, opt: float(torch.rand((), generator=gen))
        >>> losses, _ = train_epochs(net, step, EpochPlan(3, 1, 1e-3, 0), None, None, (log, "%d %d %.1f %.2f"))
        >>> len(losses), net.training
        (3, False)
    """
    gen = torch.Generator().manual_seed(plan.seed)
    opt = torch.optim.AdamW(net.parameters(), lr=plan.lr, weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(plan.epochs * plan.steps_per_epoch, 1))
    losses: list[float] = []
    first, t0 = 0, time.perf_counter()
    parts = {"net": net, "optimizer": opt, "scheduler": sched}
    if checkpoint is not None:
        first, losses, saved = checkpoint.restore(parts)
        if "loop" in saved:
            gen.set_state(saved["loop"])
    net.train()
    for epoch in range(first, plan.epochs):
        losses.append(epoch_loss(gen, (opt, sched)))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
        if checkpoint is not None:
            checkpoint.save(epoch, parts, {"loop": gen.get_state()}, losses)
    net.eval()
    logger, message = report
    logger.info(message, first, plan.epochs, time.perf_counter() - t0, losses[-1] if losses else float("nan"))
    return losses, time.perf_counter() - t0
