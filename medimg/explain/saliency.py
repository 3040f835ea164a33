"""A saliency map as data (:class:`SaliencyMap`) and the registry the methods register in.

The method modules (``cam``, ``attribution``, ``uncertainty``) import this module to register
themselves; :mod:`medimg.explain.maps` imports them, so nothing here imports a method.

An algorithm (Grad-CAM, integrated gradients...) is written once, for a :class:`Target`, and
registered under one method name per task (:func:`register_algorithm`): ``integrated-gradients``
explains a class, ``seg-integrated-gradients`` a label in a region, with the same code.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch

from medimg.explain.targets import TARGETS


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


class RawMap(NamedTuple):
    """What an algorithm computes: the map and the parameters it records (the registry adds the rest)."""

    array: np.ndarray
    params: dict[str, Any]


Algorithm = Callable[..., RawMap]


class AlgorithmMethod:
    """One algorithm registered under one method name: ``method(model, x, **params) -> SaliencyMap``.

    The task's target parameters (``target_class``; ``label``, ``region``: the keywords of its
    resolver in :data:`medimg.explain.targets.TARGETS`) become a :class:`Target`; the others go
    to ``algorithm(target, **params)`` with this name's defaults. ``inspect.signature`` lists
    both, with those defaults.

    Example:
        >>> def peak(target, scale=1.0):
        ...     return RawMap(target.x[0, 0].numpy() * scale, {"scale": scale})
        >>> m = AlgorithmMethod("peak", "classification", peak, {"scale": 2.0})
        >>> {n: p.default for n, p in list(inspect.signature(m).parameters.items())[2:]}
        {'target_class': None, 'scale': 2.0}
        >>> r = m(torch.nn.Flatten(), torch.ones(1, 1, 2, 1, 1), target_class=1)
        >>> r.method, r.params, r.target, r.array.tolist()
        ('peak', {'scale': 2.0}, {'class': 1}, [[[2.0]], [[2.0]]])
    """

    def __init__(self, name: str, task: str, algorithm: Algorithm, defaults: dict[str, Any]) -> None:
        if task not in TARGETS:
            raise ValueError(f"no target is defined for task {task!r}; expected one of {sorted(TARGETS)}")
        self.name, self.task, self.algorithm, self.resolve = name, task, algorithm, TARGETS[task]
        self.__doc__ = algorithm.__doc__
        given = list(inspect.signature(self.resolve).parameters.values())
        own = list(inspect.signature(algorithm).parameters.values())[1:]  # after the target
        unknown = set(defaults) - {p.name for p in own}
        if unknown:
            raise ValueError(
                f"defaults {sorted(unknown)} of {name!r} are not parameters of {algorithm.__name__}"
            )
        keyword = inspect.Parameter.KEYWORD_ONLY
        rest = [p.replace(kind=keyword) for p in given[2:]]
        rest += [p.replace(kind=keyword, default=defaults.get(p.name, p.default)) for p in own]
        self.__signature__ = inspect.Signature([*given[:2], *rest])
        self._target_names = [p.name for p in given]

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, **params: Any) -> SaliencyMap:
        bound = self.__signature__.bind(model, x, **params)
        bound.apply_defaults()
        args = dict(bound.arguments)
        target = self.resolve(**{n: args.pop(n) for n in self._target_names})
        raw = self.algorithm(target, **args)
        return SaliencyMap(raw.array, self.name, raw.params, target.description)


def register_algorithm(
    names: dict[str, str], defaults: dict[str, dict[str, Any]] | None = None
) -> Callable[[Algorithm], Algorithm]:
    """Register ``algorithm(target, **params) -> RawMap`` as one method per task (:class:`AlgorithmMethod`).

    Args:
        names: ``{method name: task}``, e.g. ``{"smoothgrad": "classification", "seg-smoothgrad":
            "segmentation"}``.
        defaults: ``{method name: {parameter: default}}`` where a name's defaults differ from
            the algorithm's own.

    Example:
        >>> @register_algorithm({"my-map": "classification", "seg-my-map": "segmentation"})  # doctest: +SKIP
        ... def my_map(target, steps=8): ...
    """
    defaults = defaults or {}
    if set(defaults) - set(names):
        raise ValueError(
            f"defaults for {sorted(set(defaults) - set(names))}, which are not among {sorted(names)}"
        )

    def decorator(algorithm: Algorithm) -> Algorithm:
        for name, task in names.items():
            register_method(name, task)(AlgorithmMethod(name, task, algorithm, defaults.get(name, {})))
        return algorithm

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
