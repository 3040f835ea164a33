"""Grad-CAM, Grad-CAM++ and Seg-Grad-CAM on 3D networks.

The maths follows MONAI's ``monai.visualize.GradCAM``/``GradCAMpp``; the hooks live only for
one call (:func:`medimg.explain.layers.capture_layer`) and the target is any scalar score of
the logits, which is what Seg-Grad-CAM needs (a label's logits summed inside a region).
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
from medimg.explain.saliency import SaliencyMap, register_method
from medimg.explain.targets import ScoreFn, class_logit_score, region_label_score, resolve_target_class


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


@register_method("gradcam", "classification")
def grad_cam(
    model: torch.nn.Module, x: torch.Tensor, target_class: int | None = None, layer: str | None = None
) -> SaliencyMap:
    """Grad-CAM (Selvaraju et al. 2017) for one class of a classifier.

    Args:
        model: classifier returning ``(1, K)`` logits (``K = 1``: binary, sigmoid).
        x: input ``(1, C, D, H, W)``.
        target_class: class to explain; ``None`` explains the predicted class.
        layer: module name; default from :func:`default_target_layer`.

    Example:
        >>> m = grad_cam(model, x, target_class=1)  # doctest: +SKIP
        >>> m.array.shape == tuple(x.shape[2:])  # doctest: +SKIP
        True
    """
    return _class_cam(model, x, target_class, layer, plus=False)


@register_method("gradcam++", "classification")
def grad_cam_pp(
    model: torch.nn.Module, x: torch.Tensor, target_class: int | None = None, layer: str | None = None
) -> SaliencyMap:
    """Grad-CAM++ (Chattopadhyay et al. 2018): like :func:`grad_cam`, with pixel-wise weights.

    Example:
        >>> m = grad_cam_pp(model, x)  # doctest: +SKIP
    """
    return _class_cam(model, x, target_class, layer, plus=True)


def _class_cam(
    model: torch.nn.Module, x: torch.Tensor, target_class: int | None, layer: str | None, plus: bool
) -> SaliencyMap:
    cls = resolve_target_class(model, x, target_class)
    layer = layer or default_target_layer(model, x)
    array, grid = _weighted_activation(model, x, class_logit_score(cls), layer, plus)
    name = "gradcam++" if plus else "gradcam"
    return SaliencyMap(
        array, name, params={"layer": layer, "feature_grid": grid.as_params()}, target={"class": cls}
    )


@register_method("seg-gradcam", "segmentation")
def seg_grad_cam(
    model: torch.nn.Module,
    x: torch.Tensor,
    label: int = 1,
    region: np.ndarray | None = None,
    layer: str | None = None,
) -> SaliencyMap:
    """Seg-Grad-CAM (Vinogradova et al. 2020) for one label of a segmentation network.

    The target is the sum of ``label``'s logits inside ``region`` (a boolean ``(D, H, W)``
    mask on the input grid), or inside the voxels the network predicts as ``label``.

    Args:
        model: segmentation network returning ``(1, K, D, H, W)`` logits.
        x: input ``(1, C, D, H, W)``.
        label: output channel to explain.
        region: optional mask; ``None`` uses the predicted region.
        layer: module name; default is the deepest convolution (bottleneck).

    Example:
        >>> m = seg_grad_cam(unet, x, label=1)  # doctest: +SKIP
    """
    layer = layer or default_target_layer(model, x, task="segmentation")
    array, grid = _weighted_activation(model, x, region_label_score(label, region), layer, plus=False)
    target = {"label": int(label), "region": "predicted" if region is None else "given"}
    params = {"layer": layer, "feature_grid": grid.as_params()}
    return SaliencyMap(array, "seg-gradcam", params=params, target=target)
