"""Grad-CAM, Grad-CAM++ and Seg-Grad-CAM on 3D networks.

The maths follows MONAI's ``monai.visualize.GradCAM``/``GradCAMpp``; the hooks live only for
one call (:func:`medimg.explain.layers.capture_layer`) and the target is any scalar score of
the logits (:class:`medimg.explain.targets.Target`), so one implementation serves a class
(``gradcam``) and Seg-Grad-CAM's label's logits summed inside a region (``seg-gradcam``).
The map is the ReLU of the weighted activation sum, resampled trilinearly to the input grid
with each cell placed where its receptive field is centred (:func:`feature_grid`, traced
from the network's convolutions and poolings during the same forward pass); its values are not
rescaled (reports rescale for display).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from medimg.explain.grids import place_on_grid
from medimg.explain.layers import FeatureGrid, capture_layer, default_target_layer, tracing_grid
from medimg.explain.saliency import RawMap, register_algorithm
from medimg.explain.targets import ScoreFn, Target


def _weighted_activation(
    model: torch.nn.Module, x: torch.Tensor, score_fn: ScoreFn, layer: str, plus: bool
) -> tuple[np.ndarray, FeatureGrid]:
    x = x.detach().clone().float().requires_grad_(True)
    with torch.enable_grad(), capture_layer(model, layer) as store, tracing_grid(model, layer, x) as traced:
        model.zero_grad(set_to_none=True)
        score = score_fn(model(x)).sum()
        score.backward()
    model.zero_grad(set_to_none=True)
    grid = traced()
    if "gradient" not in store:
        raise RuntimeError(f"no gradient reached layer {layer!r}; is it used by the forward pass?")
    acti, grad = store["activation"], store["gradient"]
    dims = tuple(range(2, grad.ndim))
    if plus:
        # Grad-CAM++ (Chattopadhyay et al. 2018). The exp(score) factor of the original is a
        # positive constant per image and is left out: it does not change the map's shape.
        g2, g3 = grad.pow(2), grad.pow(3)
        denom = 2 * g2 + (acti * g3).sum(dim=dims, keepdim=True)
        denom = torch.where(denom != 0, denom, torch.ones_like(denom))
        alpha = g2 / (denom + 1e-7)
        weights = (alpha * F.relu(grad)).sum(dim=dims, keepdim=True)
    else:
        weights = grad.mean(dim=dims, keepdim=True)
    cam = F.relu((weights * acti).sum(dim=1))[0]
    if cam.ndim == 2:  # a 2D layer inside a 3D model is not expected, but keep the shape honest
        cam = cam[None]
    shape = tuple(int(s) for s in x.shape[2:])
    return place_on_grid(cam.cpu().numpy(), shape, grid.stride, grid.offset), grid


@register_algorithm({"gradcam": "classification", "seg-gradcam": "segmentation"})
def grad_cam(target: Target, layer: str | None = None) -> RawMap:
    """Grad-CAM (Selvaraju et al. 2017) of a class; Seg-Grad-CAM (Vinogradova et al. 2020) of a label.

    ``gradcam`` explains the logit of a class, ``seg-gradcam`` the sum of a label's logits inside
    a region (:class:`medimg.explain.targets.Target`).

    Args:
        target: what is explained (the network, the input ``(1, C, D, H, W)`` and the score).
        layer: module name; default from :func:`default_target_layer` for the target's task
            (segmentation: the deepest convolution, the bottleneck).

    Example:
        >>> m = compute_saliency(model, x, "gradcam", target_class=1)  # doctest: +SKIP
        >>> m = compute_saliency(unet, x, "seg-gradcam", label=1)  # doctest: +SKIP
        >>> m.array.shape == tuple(x.shape[2:])  # doctest: +SKIP
        True
    """
    return _cam(target, layer, plus=False)


@register_algorithm({"gradcam++": "classification"})
def grad_cam_pp(target: Target, layer: str | None = None) -> RawMap:
    """Grad-CAM++ (Chattopadhyay et al. 2018): like :func:`grad_cam`, with pixel-wise weights.

    Example:
        >>> m = compute_saliency(model, x, "gradcam++")  # doctest: +SKIP
    """
    return _cam(target, layer, plus=True)


def _cam(target: Target, layer: str | None, plus: bool) -> RawMap:
    layer = layer or default_target_layer(target.model, target.x, task=target.task)
    array, grid = _weighted_activation(target.model, target.x, target.score, layer, plus)
    return RawMap(array, {"layer": layer, "feature_grid": grid.as_params()})
