"""A saliency map as data (:class:`SaliencyMap`) and the registry the methods register in.

The method modules (``cam``, ``attribution``, ``uncertainty``) import this module to register
themselves; :mod:`medimg.explain.maps` imports them, so nothing here imports a method.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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


def registered_methods() -> dict[str, tuple[MethodFn, str]]:
    """``{name: (function, task)}`` of the methods registered so far (a copy)."""
    return dict(_METHODS)


def method_slug(method: str) -> str:
    """File- and metric-safe form of a method name.

    Example:
        >>> method_slug("gradcam++"), method_slug("integrated-gradients")
        ('gradcam_pp', 'integrated_gradients')
    """
    return method.replace("++", "_pp").replace("-", "_")
