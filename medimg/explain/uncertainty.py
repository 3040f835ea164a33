"""Voxel-wise uncertainty of a segmentation network: flip test-time augmentation or MC dropout.

Both return the variance, over the passes, of the softmax probability of one label (sigmoid
for single-channel outputs). High values mark voxels where the network's answer depends on
an arbitrary choice (orientation of the input, the dropout mask).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch import nn

from medimg.errors import ConfigError
from medimg.explain.saliency import SaliencyMap, register_method

_DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


def _label_probability(logits: torch.Tensor, label: int) -> torch.Tensor:
    if logits.ndim != 5:
        raise ValueError(f"segmentation logits must be (B, K, D, H, W), got shape {tuple(logits.shape)}")
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return p if label == 1 else 1 - p
    if not 0 <= label < logits.shape[1]:
        raise ConfigError(f"label {label} does not exist; the model outputs {logits.shape[1]} channels")
    return torch.softmax(logits, dim=1)[:, label]


def flip_sets(max_passes: int = 8) -> list[tuple[int, ...]]:
    """Spatial flip combinations used by the flip TTA (identity first), at most ``max_passes``.

    Example:
        >>> flip_sets(4)
        [(), (2,), (3,), (4,)]
    """
    combos = [c for r in range(4) for c in itertools.combinations((2, 3, 4), r)]
    return combos[:max_passes]


def _flip_passes(model: nn.Module, x: torch.Tensor, label: int, passes: int) -> list[torch.Tensor]:
    probs = []
    with torch.no_grad():
        for dims in flip_sets(passes):
            xi = torch.flip(x, dims) if dims else x
            out = model(xi)
            out = torch.flip(out, dims) if dims else out
            probs.append(_label_probability(out, label)[0])
    return probs


def _dropout_passes(
    model: nn.Module, x: torch.Tensor, label: int, passes: int, seed: int
) -> list[torch.Tensor]:
    dropouts = [m for m in model.modules() if isinstance(m, _DROPOUT_TYPES) and m.p > 0]
    if not dropouts:
        raise ConfigError(
            f"{type(model).__name__} has no dropout layer with p > 0; use the flip uncertainty (mode='flip')"
        )
    was_training = [m.training for m in dropouts]
    torch.manual_seed(seed)
    probs = []
    try:
        for m in dropouts:
            m.train()
        with torch.no_grad():
            for _ in range(passes):
                probs.append(_label_probability(model(x), label)[0])
    finally:
        for m, t in zip(dropouts, was_training, strict=True):
            m.train(t)
    return probs


@register_method("uncertainty", "segmentation")
def uncertainty_map(
    model: nn.Module,
    x: torch.Tensor,
    label: int = 1,
    mode: str = "flip",
    passes: int = 8,
    seed: int = 0,
) -> SaliencyMap:
    """Variance of the probability of ``label`` over test-time flips or MC-dropout passes.

    Args:
        model: segmentation network returning ``(1, K, D, H, W)`` logits.
        x: input ``(1, C, D, H, W)``.
        label: output channel whose probability is examined.
        mode: ``"flip"`` (all combinations of axis flips, up to ``passes``) or ``"mc-dropout"``
            (dropout layers switched on, everything else stays in eval mode).
        passes: number of forward passes.
        seed: random seed for MC dropout.

    Example:
        >>> m = uncertainty_map(unet, x, label=1, mode="flip")  # doctest: +SKIP
        >>> float(m.array.max()) <= 0.25  # variance of a probability  # doctest: +SKIP
        True
    """
    x = x.detach().float()
    if mode == "flip":
        probs = _flip_passes(model, x, label, passes)
    elif mode == "mc-dropout":
        probs = _dropout_passes(model, x, label, passes, seed)
    else:
        raise ConfigError(f"uncertainty mode {mode!r} unknown; expected 'flip' or 'mc-dropout'")
    stack = torch.stack(probs)
    var = stack.var(dim=0, unbiased=False).cpu().numpy().astype(np.float32)
    params = {"mode": mode, "passes": len(probs)}
    return SaliencyMap(var, "uncertainty", params, {"label": int(label)})
