"""Input attributions for segmentation networks: integrated gradients and SmoothGrad of a label's region.

The target is Seg-Grad-CAM's (:func:`medimg.explain.targets.region_label_score`): the logits of
``label`` summed inside ``region``, a boolean mask fixed before the attribution starts (by
default the voxels the network predicts as ``label`` on the unchanged input), so every point of
the integration path or every noisy copy explains the same voxels. Over a whole case these run
window by window (:mod:`medimg.explain.windows`), like prediction.

Every method here takes the same target arguments first: ``model`` (a segmentation network
returning ``(B, K, D, H, W)`` logits), ``x`` (the input, ``(1, C, D, H, W)``), ``label`` (the
output channel to explain) and ``region`` (a boolean ``(D, H, W)`` mask; ``None``: the voxels
predicted as ``label``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from medimg.explain.attribution import noisy_gradient_magnitude, path_attribution, reduce_channels
from medimg.explain.saliency import SaliencyMap, register_method
from medimg.explain.targets import ScoreFn, region_label_score


def fixed_region(
    model: torch.nn.Module, x: torch.Tensor, label: int, region: np.ndarray | None
) -> np.ndarray:
    """``region``, or the voxels ``model`` predicts as ``label`` for ``x`` (all voxels when none).

    Example:
        >>> fixed_region(torch.nn.Conv3d(1, 2, 1), torch.zeros(1, 1, 2, 2, 2), 1, np.ones((2, 2, 2), bool)).sum()
        np.int64(8)
    """
    if region is not None:
        return np.asarray(region, dtype=bool)
    with torch.no_grad():
        logits = model(x)
    pred = logits[0, 0] > 0 if logits.shape[1] == 1 else logits[0].argmax(dim=0) == label
    found = pred.cpu().numpy()
    return found if found.any() else np.ones_like(found)


def _region_target(
    model: torch.nn.Module, x: torch.Tensor, label: int, region: np.ndarray | None
) -> tuple[ScoreFn, dict[str, Any]]:
    score = region_label_score(label, fixed_region(model, x, label, region))
    return score, {"label": int(label), "region": "predicted" if region is None else "given"}


@register_method("seg-integrated-gradients", "segmentation")
def seg_integrated_gradients(
    model: torch.nn.Module,
    x: torch.Tensor,
    label: int = 1,
    region: np.ndarray | None = None,
    steps: int = 16,
    baseline: float = 0.0,
    batch_size: int = 4,
    mode: str = "positive",
) -> SaliencyMap:
    """Integrated gradients (Sundararajan et al. 2017) of ``label``'s logits summed inside ``region``.

    ``model``, ``x``, ``label`` and ``region`` are the target's, as for every method here.

    Args:
        steps: points on the straight path from the baseline image to ``x`` (midpoint rule).
        baseline: intensity of the reference image (0 = the mean after z-scoring).
        batch_size: path points per forward pass (memory bound).
        mode: ``positive`` (evidence for the label), ``absolute`` or ``signed``.

    Example:
        >>> m = seg_integrated_gradients(unet, x, label=1, steps=8)  # doctest: +SKIP
    """
    score, target = _region_target(model, x, label, region)
    attr = path_attribution(model, x, score, steps, baseline, batch_size)
    params = {"steps": steps, "baseline": baseline, "mode": mode}
    return SaliencyMap(reduce_channels(attr, mode), "seg-integrated-gradients", params, target)


@register_method("seg-smoothgrad", "segmentation")
def seg_smoothgrad(
    model: torch.nn.Module,
    x: torch.Tensor,
    label: int = 1,
    region: np.ndarray | None = None,
    samples: int = 16,
    noise_level: float = 0.15,
    batch_size: int = 4,
    seed: int = 0,
) -> SaliencyMap:
    """SmoothGrad (Smilkov et al. 2017) of ``label``'s logits summed inside ``region``.

    ``model``, ``x``, ``label`` and ``region`` are the target's, as for every method here.

    Args:
        samples: number of noisy copies.
        noise_level: noise standard deviation as a fraction of the input's intensity range.
        batch_size: copies per forward pass.
        seed: random seed (maps are reproducible).

    Example:
        >>> m = seg_smoothgrad(unet, x, label=1, samples=8)  # doctest: +SKIP
    """
    score, target = _region_target(model, x, label, region)
    total = noisy_gradient_magnitude(model, x, score, samples, noise_level, batch_size, seed)
    params = {"samples": samples, "noise_level": noise_level, "seed": seed}
    return SaliencyMap(reduce_channels(total, "absolute"), "seg-smoothgrad", params, target)
