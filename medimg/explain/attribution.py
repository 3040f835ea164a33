"""Input attributions: integrated gradients and SmoothGrad (both tasks), occlusion sensitivity (classification).

Integrated gradients and SmoothGrad are captum's (``IntegratedGradients`` with the midpoint
rule, ``NoiseTunnel`` over ``Saliency``), batched so memory stays bounded; occlusion uses
MONAI's ``OcclusionSensitivity``. Each is written once for a
:class:`medimg.explain.targets.Target`: a class's logit (``integrated-gradients``,
``smoothgrad``) or a label's logits summed inside a region fixed before the path or the noisy
copies start (``seg-integrated-gradients``, ``seg-smoothgrad``; over a whole case window by
window, :mod:`medimg.explain.windows`). Each returns one map over the input grid: channel
contributions are summed, and by default only evidence *for* the target is kept
(``mode="positive"``).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from medimg.errors import ConfigError
from medimg.explain.saliency import RawMap, register_algorithm
from medimg.explain.targets import ScoreFn, Target

_MODES = ("positive", "absolute", "signed")


def path_attribution(
    model: torch.nn.Module, x: torch.Tensor, score: ScoreFn, steps: int, baseline: float, batch_size: int
) -> torch.Tensor:
    """Integrated gradients of ``score`` for ``x`` ``(1, C, ...)``: ``(C, ...)``, midpoint rule.

    captum's ``IntegratedGradients`` (``method="riemann_middle"``) along the straight path from a
    constant ``baseline`` image, ``batch_size`` path points per forward pass.

    Example:
        >>> net = torch.nn.Conv3d(1, 1, 1, bias=False)
        >>> a = path_attribution(net, torch.ones(1, 1, 2, 2, 2), lambda y: y.flatten(1).sum(1), 4, 0.0, 2)
        >>> round(float(a.sum()), 4) == round(float(net.weight.sum()) * 8, 4)  # completeness
        True
    """
    from captum.attr import IntegratedGradients

    x = x.detach().float()
    ig = IntegratedGradients(lambda inp: score(model(inp)))
    with torch.enable_grad():
        attr = ig.attribute(
            x,
            baselines=float(baseline),
            n_steps=steps,
            method="riemann_middle",
            internal_batch_size=batch_size,
        )
    return attr.detach()[0]


def noisy_gradient_magnitude(
    model: torch.nn.Module,
    x: torch.Tensor,
    score: ScoreFn,
    samples: int,
    noise_level: float,
    batch_size: int,
    seed: int,
) -> torch.Tensor:
    """SmoothGrad: the mean absolute input gradient of ``score`` over noisy copies of ``x``: ``(C, ...)``.

    captum's ``NoiseTunnel(Saliency)`` with Gaussian noise of standard deviation ``noise_level``
    times the input's intensity range; the noise is drawn from a generator seeded with ``seed``
    (the global random state is left as it was), so a map is reproducible.
    """
    from captum.attr import NoiseTunnel, Saliency

    x = x.detach().float()
    sigma = noise_level * float(x.max() - x.min())
    tunnel = NoiseTunnel(Saliency(lambda inp: score(model(inp))))
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.enable_grad():
        torch.manual_seed(seed)
        attr = tunnel.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=samples,
            nt_samples_batch_size=batch_size,
            stdevs=sigma,
            abs=True,
        )
    return attr.detach()[0]


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


@register_algorithm(
    {"integrated-gradients": "classification", "seg-integrated-gradients": "segmentation"},
    {"seg-integrated-gradients": {"steps": 16, "batch_size": 4}},
)
def integrated_gradients(
    target: Target, steps: int = 32, baseline: float = 0.0, batch_size: int = 8, mode: str = "positive"
) -> RawMap:
    """Integrated gradients (Sundararajan et al. 2017) of the target's score from a constant baseline image.

    Uses the midpoint rule over ``steps`` points on the straight path baseline -> ``x``
    (``seg-integrated-gradients``: 16 steps, 4 per pass).

    Args:
        target: what is explained: a class's logit, or a label's logits summed inside a region.
        steps: number of path points.
        baseline: intensity of the reference image (0 = background after z-scoring).
        batch_size: path points per forward pass (memory bound).
        mode: ``positive`` (evidence for the target), ``absolute`` or ``signed``.

    Example:
        >>> m = compute_saliency(model, x, "integrated-gradients", target_class=1, steps=16)  # doctest: +SKIP
    """
    attr = path_attribution(target.model, target.x, target.score, steps, baseline, batch_size)
    return RawMap(reduce_channels(attr, mode), {"steps": steps, "baseline": baseline, "mode": mode})


@register_algorithm(
    {"smoothgrad": "classification", "seg-smoothgrad": "segmentation"}, {"seg-smoothgrad": {"batch_size": 4}}
)
def smoothgrad(
    target: Target, samples: int = 16, noise_level: float = 0.15, batch_size: int = 8, seed: int = 0
) -> RawMap:
    """SmoothGrad (Smilkov et al. 2017): input-gradient magnitude averaged over noisy copies.

    Args:
        target: what is explained: a class's logit, or a label's logits summed inside a region.
        samples: number of noisy copies.
        noise_level: noise standard deviation as a fraction of the input's intensity range.
        batch_size: copies per forward pass (``seg-smoothgrad``: 4).
        seed: random seed (maps are reproducible).

    Example:
        >>> m = compute_saliency(unet, x, "seg-smoothgrad", label=1, samples=8)  # doctest: +SKIP
    """
    model, x = target.model, target.x
    total = noisy_gradient_magnitude(model, x, target.score, samples, noise_level, batch_size, seed)
    params = {"samples": samples, "noise_level": noise_level, "seed": seed}
    return RawMap(reduce_channels(total, "absolute"), params)


@register_algorithm({"occlusion": "classification"})
def occlusion_sensitivity(
    target: Target,
    mask_size: int | None = None,
    overlap: float = 0.5,
    batch_size: int = 8,
    fill: str = "gaussian",
) -> RawMap:
    """Occlusion sensitivity: the drop in the target probability when a box around a voxel is hidden.

    Wraps ``monai.visualize.OcclusionSensitivity``; positive values mark regions whose
    occlusion lowers the target's probability.

    Args:
        target: what is explained (its probability: a class's).
        mask_size: side of the occluding box in voxels (default: a quarter of the smallest side, >= 3).
        overlap: overlap of neighbouring boxes, in ``[0, 1)``.
        batch_size: occluded copies per forward pass.
        fill: ``gaussian``, ``mean_img`` or ``mean_patch`` (MONAI's modes).

    Example:
        >>> m = compute_saliency(model, x, "occlusion", mask_size=6)  # doctest: +SKIP
    """
    from monai.visualize import OcclusionSensitivity

    x = target.x.detach().float()
    size = mask_size or max(3, min(int(s) for s in x.shape[2:]) // 4)
    occ = OcclusionSensitivity(
        target.model,
        mask_size=size,
        n_batch=batch_size,
        verbose=False,
        mode=fill,
        overlap=overlap,
        activate=lambda logits: target.probability(logits)[:, None],
    )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MONAI's indexing warnings, not the user's concern
        base = float(target.probability(target.model(x))[0])
        occ_map, _ = occ(x)
    drop = base - occ_map[0, 0]  # (B, 1, D, H, W): the target's probability with the box hidden
    params = {"mask_size": size, "overlap": overlap, "fill": fill}
    return RawMap(torch.as_tensor(drop).cpu().numpy(), params)
