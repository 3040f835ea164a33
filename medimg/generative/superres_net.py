"""The super-resolution network: a residual 3D CNN on top of linear interpolation.

The input is the thick scan interpolated linearly onto the thin grid; the network adds what
interpolation cannot recover (a residual), so an untrained network equals the trilinear baseline.
Intensities are scaled by the thick scan's own 1st/99th percentiles (the only image there is when a
real thick series is super-resolved) and scaled back afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

from medimg.generative.checkpoint import EpochCheckpoint, numpy_rng_state, set_numpy_rng_state
from medimg.generative.slices import interpolate_thin, simulate_thick

log = logging.getLogger(__name__)


class ResidualSR(nn.Module):
    """``x + f(x)``: ``layers`` 3x3x3 convolutions with ``features`` channels, ReLU between them.

    Example:
        >>> net = ResidualSR(features=4, layers=2)
        >>> tuple(net(torch.zeros(1, 1, 8, 8, 8)).shape)
        (1, 1, 8, 8, 8)
    """

    def __init__(self, features: int = 32, layers: int = 6) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv3d(1, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(layers - 2):
            mods += [nn.Conv3d(features, features, 3, padding=1), nn.ReLU(inplace=True)]
        mods.append(nn.Conv3d(features, 1, 3, padding=1))
        self.body = nn.Sequential(*mods)
        nn.init.zeros_(mods[-1].weight)  # starts as the identity: the linear-interpolation baseline
        nn.init.zeros_(mods[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def intensity_scale(thick: np.ndarray) -> tuple[float, float]:
    """``(offset, scale)`` from the thick scan's 1st and 99th percentiles.

    Example:
        >>> intensity_scale(np.arange(101.0))
        (1.0, 98.0)
    """
    lo, hi = np.percentile(thick, [1, 99])
    return float(lo), float(max(hi - lo, 1e-6))


def training_pair(thin: np.ndarray, axis: int, factor: int, profile: str) -> tuple[np.ndarray, np.ndarray]:
    """``(input, target)`` on the thin grid, scaled: linear interpolation of the simulated thick scan, and the thin scan."""
    thick = simulate_thick(thin, axis, factor, profile)  # type: ignore[arg-type]
    lo, scale = intensity_scale(thick)
    return (interpolate_thin(thick, axis, factor) - lo) / scale, (thin - lo) / scale


def random_patch(
    pair: tuple[np.ndarray, np.ndarray], size: Sequence[int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The same random crop of input and target (padded by edge values when the scan is smaller)."""
    x, y = pair
    pad = [(0, max(0, s - n)) for s, n in zip(size, x.shape, strict=True)]
    if any(p[1] for p in pad):
        x, y = np.pad(x, pad, mode="edge"), np.pad(y, pad, mode="edge")
    start = [int(rng.integers(0, n - s + 1)) for s, n in zip(size, x.shape, strict=True)]
    sl = tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))
    return x[sl], y[sl]


def train_superres(
    net: nn.Module,
    pairs: Sequence[tuple[np.ndarray, np.ndarray]],
    patch_size: Sequence[int],
    epochs: int,
    patches_per_epoch: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int, float], None] | None = None,
    checkpoint: EpochCheckpoint | None = None,
) -> list[float]:
    """Train on random patches of the training pairs with an L1 loss; the mean loss of each epoch.

    With ``checkpoint``, the state is saved after every epoch and a saved one is resumed from (the
    epochs already done are not run again; see :mod:`medimg.generative.checkpoint`).

    Example:
        >>> pairs = [training_pair(np.random.rand(16, 16, 16).astype(np.float32), 2, 4, "box")]
        >>> len(train_superres(ResidualSR(4, 2), pairs, (8, 8, 8), 2, 4, 2, 1e-3, 0))
        2
    """
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    losses: list[float] = []
    first, t0 = 0, time.perf_counter()
    parts = {"net": net, "optimizer": opt, "scheduler": sched}
    if checkpoint is not None:
        first, losses, saved = checkpoint.restore(parts)
        set_numpy_rng_state(rng, saved)
    net.train()
    for epoch in range(first, epochs):
        total, count = 0.0, 0
        for _ in range(max(1, patches_per_epoch // batch_size)):
            batch = [
                random_patch(pairs[int(rng.integers(len(pairs)))], patch_size, rng) for _ in range(batch_size)
            ]
            x = torch.as_tensor(np.stack([b[0] for b in batch]))[:, None]
            y = torch.as_tensor(np.stack([b[1] for b in batch]))[:, None]
            loss = nn.functional.l1_loss(net(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()), count + 1
        sched.step()
        losses.append(total / count)
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
        if checkpoint is not None:
            checkpoint.save(epoch, parts, numpy_rng_state(rng), losses)
    net.eval()
    log.info("superres: epochs %d-%d in %.1f s, final L1 %.4f", first, epochs, time.perf_counter() - t0,
             losses[-1] if losses else float("nan"))  # fmt: skip
    return losses


@torch.no_grad()
def super_resolve_array(
    net: nn.Module, thick: np.ndarray, axis: int, factor: int, roi: Sequence[int] = (64, 64, 64)
) -> np.ndarray:
    """The thin-grid array of a thick scan: linear interpolation, the network's residual, scaled back.

    Example:
        >>> out = super_resolve_array(ResidualSR(4, 2), np.random.rand(8, 8, 2).astype(np.float32), 2, 4)
        >>> out.shape
        (8, 8, 8)
    """
    from monai.inferers import sliding_window_inference

    lo, scale = intensity_scale(thick)
    x = torch.as_tensor((interpolate_thin(thick, axis, factor) - lo) / scale)[None, None]
    net.eval()
    roi_size = [min(int(r), int(n)) for r, n in zip(roi, x.shape[2:], strict=True)]
    y = sliding_window_inference(x, roi_size, 4, net, overlap=0.25, mode="gaussian")
    return (y[0, 0].numpy() * scale + lo).astype(np.float32)
