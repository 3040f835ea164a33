"""Saliency maps as data: the :class:`SaliencyMap` record, the method registry and the voxel budget.

Every method takes a model and a ``(1, C, D, H, W)`` tensor and returns a float32 map on the
input grid. :func:`compute_saliency` is the one entry point: it looks the method up by name,
and when the input has more voxels than ``voxel_budget`` it computes the map on a coarser grid
and resamples it back, saying so in the map's ``grid_note``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medimg.errors import ConfigError

#: Inputs above this many voxels are explained on a coarser grid (about 4 M voxels, e.g. 160^3).
DEFAULT_VOXEL_BUDGET = 4_194_304


@dataclass
class SaliencyMap:
    """A saliency (or uncertainty) map on the grid of the tensor that was explained.

    Attributes:
        array: float32 array ``(D, H, W)``, same spatial shape as the explained input.
        method: registry name of the method (``"gradcam"``, ``"occlusion"``...).
        params: the parameters the method ran with (layer, steps, target...), for the report.
        target: what was explained, e.g. ``{"class": 1}`` or ``{"label": 2, "region": "predicted"}``.
        grid_note: empty when computed at full resolution, else how the grid was coarsened.

    Example:
        >>> m = SaliencyMap(np.zeros((4, 4, 4), np.float32), "gradcam")
        >>> m.peak_index
        (0, 0, 0)
    """

    array: np.ndarray
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    target: dict[str, Any] = field(default_factory=dict)
    grid_note: str = ""

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array, dtype=np.float32)

    @property
    def peak_index(self) -> tuple[int, int, int]:
        """Voxel index of the map's maximum."""
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(self.array)), self.array.shape))

    def normalised(self) -> np.ndarray:
        """The map scaled to ``[0, 1]`` (all zeros when the map is constant)."""
        a = self.array
        lo, hi = float(a.min()), float(a.max())
        return np.zeros_like(a) if hi - lo < 1e-12 else (a - lo) / (hi - lo)


MethodFn = Callable[..., SaliencyMap]
_METHODS: dict[str, tuple[MethodFn, str]] = {}


def register_method(name: str, task: str) -> Callable[[MethodFn], MethodFn]:
    """Register a saliency method under ``name`` for ``task`` (``classification`` or ``segmentation``).

    Refuses to overwrite an existing name silently.

    Example:
        >>> @register_method("my_map", "classification")  # doctest: +SKIP
        ... def my_map(model, x, target_class=None): ...
    """

    def decorator(fn: MethodFn) -> MethodFn:
        if name in _METHODS:
            raise ValueError(f"saliency method {name!r} is already registered")
        _METHODS[name] = (fn, task)
        return fn

    return decorator


def available_methods(task: str | None = None) -> list[str]:
    """Names of the registered methods, optionally only those for ``task``.

    Example:
        >>> "gradcam" in available_methods("classification")  # doctest: +SKIP
        True
    """
    _ensure_loaded()
    return sorted(n for n, (_, t) in _METHODS.items() if task is None or t == task)


def _ensure_loaded() -> None:
    # Importing the method modules fills the registry.
    from medimg.explain import attribution, cam, uncertainty  # noqa: F401


def get_method(name: str) -> tuple[MethodFn, str]:
    """Return ``(function, task)`` for a method name; unknown names raise :class:`ConfigError`."""
    _ensure_loaded()
    if name not in _METHODS:
        raise ConfigError(f"unknown saliency method {name!r}; expected one of {sorted(_METHODS)}")
    return _METHODS[name]


def method_slug(method: str) -> str:
    """File- and metric-safe form of a method name.

    Example:
        >>> method_slug("gradcam++"), method_slug("integrated-gradients")
        ('gradcam_pp', 'integrated_gradients')
    """
    return method.replace("++", "_pp").replace("-", "_")


def coarse_shape(shape: tuple[int, ...], voxel_budget: int, multiple: int = 1) -> tuple[int, ...]:
    """The spatial shape, shrunk isotropically so that it holds at most ``voxel_budget`` voxels.

    Each side is rounded down to a multiple of ``multiple`` (networks with ``n`` poolings need
    sides divisible by ``2**n``) and is at least ``multiple``.

    Example:
        >>> coarse_shape((256, 256, 128), 1_000_000, multiple=16)
        (112, 112, 48)
    """
    n = int(np.prod(shape))
    if n <= voxel_budget:
        return tuple(shape)
    factor = (voxel_budget / n) ** (1.0 / len(shape))
    return tuple(max(multiple, int(s * factor) // multiple * multiple) for s in shape)


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


def place_on_grid(
    array: np.ndarray, shape: tuple[int, ...], stride: tuple[float, ...], offset: tuple[float, ...]
) -> np.ndarray:
    """Resample a feature map whose cell ``i`` is centred on input voxel ``stride * i + offset``.

    Linear interpolation along each axis in turn (memory: the output, not a sampling grid);
    voxels beyond the first or last cell centre take that cell's value. With
    ``offset = (stride - 1) / 2`` this is :func:`upsample_to`.

    Example:
        >>> place_on_grid(np.array([[[0.0, 1.0]]]), (1, 1, 4), (1, 1, 2), (0, 0, 0))[0, 0].tolist()
        [0.0, 0.5, 1.0, 1.0]
    """
    out = np.asarray(array, dtype=np.float32)
    for axis, (size, s, o) in enumerate(zip(shape, stride, offset, strict=True)):
        n = out.shape[axis]
        u = np.clip((np.arange(size, dtype=np.float64) - o) / s, 0, n - 1)
        i0 = np.minimum(np.floor(u).astype(np.int64), max(n - 2, 0))
        i1 = np.minimum(i0 + 1, n - 1)
        w = (u - i0).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i1, axis=axis) * w
    return out.astype(np.float32)


def upsample_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a ``(D, H, W)`` array to ``shape`` trilinearly (voxel centres aligned).

    Example:
        >>> upsample_to(np.ones((2, 2, 2), np.float32), (4, 4, 4)).shape
        (4, 4, 4)
    """
    if tuple(array.shape) == tuple(shape):
        return np.asarray(array, dtype=np.float32)
    t = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
    out = F.interpolate(t, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0, 0].numpy().astype(np.float32)
