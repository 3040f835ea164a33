"""Looking a saliency method up by name and computing its map under a voxel budget.

Importing this module imports every method module, which fills the registry of
:mod:`medimg.explain.saliency`. Every method takes a model and a ``(1, C, D, H, W)`` tensor and returns a float32 map on the
input grid. :func:`compute_saliency` is the one entry point: it looks the method up by name,
and when the input has more voxels than ``voxel_budget`` it computes the map on a coarser grid
and resamples it back, saying so in the map's ``grid_note``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.errors import ConfigError
from medimg.explain import attribution, cam, uncertainty  # noqa: F401  (fills the registry)
from medimg.explain.grids import coarse_shape, place_on_grid, upsample_to
from medimg.explain.saliency import MethodFn, SaliencyMap, method_slug, register_method, registered_methods

__all__ = [
    "DEFAULT_VOXEL_BUDGET",
    "SaliencyMap",
    "available_methods",
    "coarse_shape",
    "compute_saliency",
    "get_method",
    "method_slug",
    "place_on_grid",
    "register_method",
    "upsample_to",
]

#: Inputs above this many voxels are explained on a coarser grid (about 4 M voxels, e.g. 160^3).
DEFAULT_VOXEL_BUDGET = 4_194_304


def available_methods(task: str | None = None) -> list[str]:
    """Names of the registered methods, optionally only those for ``task``.

    Example:
        >>> "gradcam" in available_methods("classification")  # doctest: +SKIP
        True
    """
    return sorted(n for n, (_, t) in registered_methods().items() if task is None or t == task)


def get_method(name: str) -> tuple[MethodFn, str]:
    """Return ``(function, task)`` for a method name; unknown names raise :class:`ConfigError`."""
    methods = registered_methods()
    if name not in methods:
        raise ConfigError(f"unknown saliency method {name!r}; expected one of {sorted(methods)}")
    return methods[name]


def compute_saliency(
    model: torch.nn.Module,
    x: torch.Tensor,
    method: str,
    *,
    voxel_budget: int = DEFAULT_VOXEL_BUDGET,
    size_multiple: int = 16,
    **params: Any,
) -> SaliencyMap:
    """Compute the saliency map ``method`` for ``x`` under a voxel budget.

    Args:
        model: any network; classification models return ``(1, K)`` logits, segmentation
            models ``(1, K, D, H, W)`` logits.
        x: input tensor ``(1, C, D, H, W)``.
        method: a name from :func:`available_methods`.
        voxel_budget: above this many voxels the input is resampled (trilinear) to a coarser
            grid, the map is computed there and resampled back; ``grid_note`` says so.
        size_multiple: the coarse grid's sides are multiples of this (network downsampling).
        **params: passed to the method (``target_class``, ``layer``, ``steps``, ``label``...).

    Returns:
        A :class:`SaliencyMap` whose array has ``x``'s spatial shape.

    Example:
        >>> m = compute_saliency(model, x, "gradcam", target_class=1)  # doctest: +SKIP
        >>> m.array.shape == tuple(x.shape[2:])  # doctest: +SKIP
        True
    """
    fn, _task = get_method(method)
    if x.ndim != 5 or x.shape[0] != 1:
        raise ValueError(f"expected an input of shape (1, C, D, H, W), got {tuple(x.shape)}")
    shape = tuple(int(s) for s in x.shape[2:])
    small = coarse_shape(shape, voxel_budget, size_multiple)
    if small == shape:
        return fn(model, x, **params)
    x_small = F.interpolate(x.detach().float(), size=small, mode="trilinear", align_corners=False)
    region = params.get("region")
    if region is not None:
        r = torch.as_tensor(np.asarray(region), dtype=torch.float32)[None, None]
        params["region"] = F.interpolate(r, size=small, mode="nearest")[0, 0].numpy() > 0.5
    result = fn(model, x_small, **params)
    result.array = upsample_to(result.array, shape)
    result.grid_note = (
        f"computed on a {'x'.join(map(str, small))} grid (input {'x'.join(map(str, shape))} voxels exceeds "
        f"the budget of {voxel_budget} voxels), resampled back trilinearly"
    )
    return result
