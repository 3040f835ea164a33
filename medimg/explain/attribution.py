"""Input attributions for classifiers: integrated gradients, SmoothGrad and occlusion sensitivity.

Integrated gradients and SmoothGrad are written on plain torch (batched in chunks so memory
stays bounded); occlusion uses MONAI's ``OcclusionSensitivity``. Each returns one map over
the input grid: channel contributions are summed, and by default only evidence *for* the
target class is kept (``mode="positive"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import torch

from medimg.errors import ConfigError
from medimg.explain.saliency import SaliencyMap, register_method
from medimg.explain.targets import ScoreFn, class_logit_score, class_probabilities, resolve_target_class

_MODES = ("positive", "absolute", "signed")


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def _input_gradients(model: torch.nn.Module, batch: torch.Tensor, score: ScoreFn) -> torch.Tensor:
    batch = batch.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(score(model(batch)).sum(), batch)
    return grad.detach()


def path_attribution(
    model: torch.nn.Module, x: torch.Tensor, score: ScoreFn, steps: int, baseline: float, batch_size: int
) -> torch.Tensor:
    """Integrated gradients of ``score`` for ``x`` ``(1, C, ...)``: ``(C, ...)``, midpoint rule.

    Example:
        >>> net = torch.nn.Conv3d(1, 1, 1, bias=False)
        >>> a = path_attribution(net, torch.ones(1, 1, 2, 2, 2), lambda y: y.flatten(1).sum(1), 4, 0.0, 2)
        >>> round(float(a.sum()), 4) == round(float(net.weight.sum()) * 8, 4)  # completeness
        True
    """
    x = x.detach().float()
    base = torch.full_like(x, float(baseline))
    alphas = ((torch.arange(steps, dtype=torch.float32) + 0.5) / steps).to(x.device)
    total = torch.zeros_like(x[0])
    for part in _chunks(steps, batch_size):
        a = alphas[part].view(-1, *([1] * (x.ndim - 1)))
        total += _input_gradients(model, base + a * (x - base), score).sum(dim=0)
    return (x[0] - base[0]) * total / steps


def noisy_gradient_magnitude(
    model: torch.nn.Module,
    x: torch.Tensor,
    score: ScoreFn,
    samples: int,
    noise_level: float,
    batch_size: int,
    seed: int,
) -> torch.Tensor:
    """SmoothGrad: the mean absolute input gradient of ``score`` over noisy copies of ``x``: ``(C, ...)``."""
    x = x.detach().float()
    sigma = noise_level * float(x.max() - x.min())
    gen = torch.Generator().manual_seed(seed)
    total = torch.zeros_like(x[0])
    for part in _chunks(samples, batch_size):
        n = part.stop - part.start
        noise = torch.randn((n, *x.shape[1:]), generator=gen) * sigma
        total += _input_gradients(model, x + noise.to(x.device), score).abs().sum(dim=0)
    return total / samples


def reduce_channels(attr: torch.Tensor, mode: str) -> np.ndarray:
    """One map from a ``(C, ...)`` attribution: channels summed, then ``positive``/``absolute``/``signed``."""
    if mode not in _MODES:
        raise ConfigError(f"attribution mode {mode!r} unknown; expected one of {_MODES}")
    if mode == "absolute":
        attr = attr.abs()
    summed = attr.sum(dim=0)
    if mode == "positive":
        summed = summed.clamp(min=0)
    return summed.cpu().numpy().astype(np.float32)


@register_method("integrated-gradients", "classification")
def integrated_gradients(
    model: torch.nn.Module,
    x: torch.Tensor,
    target_class: int | None = None,
    steps: int = 32,
    baseline: float = 0.0,
    batch_size: int = 8,
    mode: str = "positive",
) -> SaliencyMap:
    """Integrated gradients (Sundararajan et al. 2017) from a constant baseline image.

    Uses the midpoint rule over ``steps`` points on the straight path baseline -> ``x``.

    Args:
        model: classifier returning ``(B, K)`` logits.
        x: input ``(1, C, D, H, W)``.
        target_class: class to explain (``None``: the predicted class).
        steps: number of path points.
        baseline: intensity of the reference image (0 = background after z-scoring).
        batch_size: path points per forward pass (memory bound).
        mode: ``positive`` (evidence for the class), ``absolute`` or ``signed``.

    Example:
        >>> m = integrated_gradients(model, x, target_class=1, steps=16)  # doctest: +SKIP
    """
    cls = resolve_target_class(model, x, target_class)
    attr = path_attribution(model, x, class_logit_score(cls), steps, baseline, batch_size)
    params = {"steps": steps, "baseline": baseline, "mode": mode}
    return SaliencyMap(reduce_channels(attr, mode), "integrated-gradients", params, {"class": cls})


@register_method("smoothgrad", "classification")
def smoothgrad(
    model: torch.nn.Module,
    x: torch.Tensor,
    target_class: int | None = None,
    samples: int = 16,
    noise_level: float = 0.15,
    batch_size: int = 8,
    seed: int = 0,
) -> SaliencyMap:
    """SmoothGrad (Smilkov et al. 2017): input-gradient magnitude averaged over noisy copies.

    Args:
        model: classifier returning ``(B, K)`` logits.
        x: input ``(1, C, D, H, W)``.
        target_class: class to explain (``None``: the predicted class).
        samples: number of noisy copies.
        noise_level: noise standard deviation as a fraction of the input's intensity range.
        batch_size: copies per forward pass.
        seed: random seed (maps are reproducible).

    Example:
        >>> m = smoothgrad(model, x, samples=8)  # doctest: +SKIP
    """
    cls = resolve_target_class(model, x, target_class)
    total = noisy_gradient_magnitude(model, x, class_logit_score(cls), samples, noise_level, batch_size, seed)
    params = {"samples": samples, "noise_level": noise_level, "seed": seed}
    return SaliencyMap(reduce_channels(total, "absolute"), "smoothgrad", params, {"class": cls})


@register_method("occlusion", "classification")
def occlusion_sensitivity(
    model: torch.nn.Module,
    x: torch.Tensor,
    target_class: int | None = None,
    mask_size: int | None = None,
    overlap: float = 0.5,
    batch_size: int = 8,
    fill: str = "gaussian",
) -> SaliencyMap:
    """Occlusion sensitivity: the drop in the target probability when a box around a voxel is hidden.

    Wraps ``monai.visualize.OcclusionSensitivity``; positive values mark regions whose
    occlusion lowers the probability of ``target_class``.

    Args:
        model: classifier returning ``(B, K)`` logits.
        x: input ``(1, C, D, H, W)``.
        target_class: class to explain (``None``: the predicted class).
        mask_size: side of the occluding box in voxels (default: a quarter of the smallest side, >= 3).
        overlap: overlap of neighbouring boxes, in ``[0, 1)``.
        batch_size: occluded copies per forward pass.
        fill: ``gaussian``, ``mean_img`` or ``mean_patch`` (MONAI's modes).

    Example:
        >>> m = occlusion_sensitivity(model, x, mask_size=6)  # doctest: +SKIP
    """
    from monai.visualize import OcclusionSensitivity

    cls = resolve_target_class(model, x, target_class)
    x = x.detach().float()
    size = mask_size or max(3, min(int(s) for s in x.shape[2:]) // 4)
    occ = OcclusionSensitivity(
        model,
        mask_size=size,
        n_batch=batch_size,
        verbose=False,
        mode=fill,
        overlap=overlap,
        activate=class_probabilities,
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's indexing warnings, not the user's concern
        base = float(class_probabilities(model(x))[0, cls])
        occ_map, _ = occ(x)
    drop = base - occ_map[0, cls]  # (B, K, D, H, W): probability of each class with the box hidden
    params = {"mask_size": size, "overlap": overlap, "fill": fill}
    return SaliencyMap(torch.as_tensor(drop).cpu().numpy(), "occlusion", params, {"class": cls})
