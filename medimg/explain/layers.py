"""Choosing the layer a Grad-CAM style map is read from, and capturing its activations and gradients.

Defaults: the layer a network names as its ``cam_layer`` attribute (medimg's ``patchnet``: its
last convolution); per network family: MONAI ``DenseNet*`` -> ``class_layers.relu`` (the last feature map
after the final norm/ReLU), ResNet-like -> ``layer4``, otherwise the last 3D convolution; a
layer whose feature map is too small to localise (under 4 voxels a side for this input) gives
way to the last convolution that is large enough. For segmentation networks (encoder-decoder)
the deepest convolution (fewest output voxels) at least 4 voxels a side, i.e. the bottleneck, is the default. Both are
found with one forward pass with temporary hooks.

:func:`feature_grid` traces where a layer's cells sit on the input grid, so that a map read
from that layer is drawn where its cells look: a stride-4 layer of "same"-padded convolutions
has cell ``i`` centred on voxel ``4i``, not ``4i + 1.5`` as plain resizing assumes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from medimg.errors import ConfigError
from medimg.tasks import get_task

_CONV_TYPES = (nn.Conv3d, nn.ConvTranspose3d, nn.Conv2d)
# Per family, the preferred layer first, then shallower (larger) fallbacks.
_FAMILY_CHAINS = (("class_layers.relu",), ("layer4", "layer3", "layer2", "layer1"))


def find_layer(model: nn.Module, name: str) -> nn.Module:
    """The submodule called ``name``; unknown names raise :class:`ConfigError` listing candidates.

    Example:
        >>> find_layer(torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3)), "0")
        Conv3d(1, 2, kernel_size=(3, 3, 3), stride=(1, 1, 1))
    """
    modules = dict(model.named_modules())
    if name not in modules:
        convs = [n for n, m in modules.items() if isinstance(m, _CONV_TYPES)][-5:]
        raise ConfigError(f"layer {name!r} not found in {type(model).__name__}; last conv layers are {convs}")
    return modules[name]


def default_target_layer(
    model: nn.Module, x: torch.Tensor | None = None, task: str = "classification", min_side: int = 4
) -> str:
    """A sensible layer to explain for ``model``.

    Classification: the family default (``class_layers.relu`` for MONAI DenseNets, ``layer4``
    for ResNets) or else the last convolution; when an example input ``x`` is given and that
    layer's feature map is smaller than ``min_side`` voxels along an axis (a small input through
    a deep network: a 1x1x1 map cannot localise anything), the last convolution whose map is at
    least ``min_side`` per axis is used instead. Segmentation: the deepest convolution (fewest
    output voxels), i.e. the bottleneck, among those at least ``min_side`` voxels a side for ``x``
    (a window through a stride-32 network has a 1-voxel bottleneck, which cannot localise).

    Args:
        model: the network.
        x: an example input (required for ``task="segmentation"``).
        task: ``"classification"`` or ``"segmentation"``.
        min_side: smallest useful feature-map side, in voxels.

    Example:
        >>> from monai.networks.nets import DenseNet121
        >>> default_target_layer(DenseNet121(spatial_dims=3, in_channels=1, out_channels=2))
        'class_layers.relu'
    """
    names = dict(model.named_modules())
    convs = [n for n, m in names.items() if isinstance(m, _CONV_TYPES)]
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no convolution layer; pass a layer name explicitly")
    if get_task(task).dense:  # a map per voxel: the bottleneck that still localises
        if x is None:
            raise ValueError("default_target_layer needs an example input for segmentation networks")
        shapes = _output_shapes(model, x, convs)
        usable = {n: s for n, s in shapes.items() if min(s) >= min_side} or shapes
        smallest = min(int(torch.Size(s).numel()) for s in usable.values())
        return [n for n in convs if n in usable and int(torch.Size(usable[n]).numel()) == smallest][-1]
    own = getattr(model, "cam_layer", None)  # a network may name its own layer (patchnet does)
    chain = [own] if isinstance(own, str) and own in names else []
    chain = chain or next(([n for n in c if n in names] for c in _FAMILY_CHAINS if c[0] in names), [])
    plain = [n for n in convs if "downsample" not in n and "shortcut" not in n] or convs
    candidates = chain + plain[::-1]  # preferred first, then from the deepest convolution up
    if x is None:
        return candidates[0]
    shapes = _output_shapes(model, x, candidates)
    usable = [n for n in candidates if n in shapes and min(shapes[n]) >= min_side]
    return usable[0] if usable else candidates[0]


def _output_shapes(model: nn.Module, x: torch.Tensor, layers: list[str]) -> dict[str, tuple[int, ...]]:
    """Spatial output shape of each named layer for input ``x`` (first call of each layer)."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(model.named_modules())
    handles = []
    for name in dict.fromkeys(layers):

        def hook(_m: nn.Module, _i: Any, out: Any, name: str = name) -> None:
            out = out[0] if isinstance(out, (tuple, list)) else out
            shapes.setdefault(name, tuple(int(s) for s in out.shape[2:]))

        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return shapes


@contextlib.contextmanager
def capture_layer(model: nn.Module, name: str) -> Iterator[dict[str, torch.Tensor]]:
    """Record the activation and the gradient of layer ``name`` during one forward/backward.

    The hooks are removed on exit (MONAI's ``ModelWithHooks`` leaves them registered, which
    stacks up over a cohort and leaks into deep copies used by the sanity checks). The gradient
    is taken with a tensor hook, so in-place activations after the layer are harmless.

    Example:
        >>> with capture_layer(model, "layer4") as store:  # doctest: +SKIP
        ...     model(x)[:, 1].sum().backward()
        >>> store["activation"].shape, store["gradient"].shape  # doctest: +SKIP
    """
    store: dict[str, torch.Tensor] = {}
    layer = find_layer(model, name)

    def forward_hook(_m: nn.Module, _i: Any, out: Any) -> None:
        out = out[0] if isinstance(out, (tuple, list)) else out
        store["activation"] = out.detach().clone()
        if out.requires_grad:
            out.register_hook(lambda g: store.__setitem__("gradient", g.detach().clone()))

    handle = layer.register_forward_hook(forward_hook)
    try:
        yield store
    finally:
        handle.remove()


@dataclass(frozen=True)
class FeatureGrid:
    """Where a layer's cells sit on the input grid: cell ``i`` is centred on voxel ``stride * i + offset``.

    ``traced`` is False when the layer's grid could not be traced from the network's
    convolutions and poolings (an operation outside modules changed it); the grid then
    assumes that cells tile the input (``offset = (stride - 1) / 2``, plain resizing).
    """

    stride: tuple[float, ...]
    offset: tuple[float, ...]
    traced: bool

    def as_params(self) -> dict[str, Any]:
        """The grid as report parameters."""
        return {
            "stride": [round(s, 3) for s in self.stride],
            "offset": [round(o, 3) for o in self.offset],
            "alignment": "traced" if self.traced else "assumed (cells tile the input)",
        }


_POOLS = (nn.MaxPool3d, nn.AvgPool3d, nn.MaxPool2d, nn.AvgPool2d)
_TRANSPOSED = (nn.ConvTranspose3d, nn.ConvTranspose2d)


def feature_grid(model: nn.Module, layer: str, x: torch.Tensor) -> FeatureGrid:
    """Where the cells of ``layer`` sit on the grid of input ``x`` (``(1, C, *spatial)``).

    Traced in one forward pass: every convolution and pooling maps its input's grid to its
    output's (a kernel ``k`` with stride ``s``, padding ``p`` and dilation ``d`` centres output
    cell ``i`` on input cell ``s*i + d*(k-1)/2 - p``; transposed convolutions the inverse).
    Grids are keyed by spatial shape, so residual additions and concatenations, which keep
    shapes, need no tracing. A shape reached with two different grids, or only through
    operations outside modules, falls back to the tiling assumption (:class:`FeatureGrid`).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, stride=2, padding=1), torch.nn.MaxPool3d(2))
        >>> feature_grid(net, "1", torch.zeros(1, 1, 16, 16, 16))
        FeatureGrid(stride=(4.0, 4.0, 4.0), offset=(1.0, 1.0, 1.0), traced=True)
    """
    with tracing_grid(model, layer, x) as grid, torch.no_grad():
        model(x)
    return grid()


@contextlib.contextmanager
def tracing_grid(model: nn.Module, layer: str, x: torch.Tensor) -> Iterator[Callable[[], FeatureGrid]]:
    """:func:`feature_grid` traced during a forward pass the caller runs anyway (Grad-CAM's own).

    Yields a function that returns the grid once the forward pass with input ``x`` is done.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, stride=2, padding=1))
        >>> x = torch.zeros(1, 1, 8, 8, 8)
        >>> with tracing_grid(net, "0", x) as grid:
        ...     _ = net(x)
        >>> grid().stride
        (2.0, 2.0, 2.0)
    """
    tracer = _GridTracer(layer, tuple(int(s) for s in x.shape[2:]))
    handles = [
        m.register_forward_hook(tracer.hook) for m in model.modules() if isinstance(m, _CONV_TYPES + _POOLS)
    ]
    handles.append(find_layer(model, layer).register_forward_hook(tracer.target_hook))
    try:
        yield tracer.result
    finally:
        for h in handles:
            h.remove()


_Grid = tuple[tuple[float, ...], tuple[float, ...]]  # (stride, offset) per axis, in input voxels


class _GridTracer:
    """Forward hooks that follow the input grid through every convolution and pooling layer."""

    def __init__(self, layer: str, shape: tuple[int, ...]) -> None:
        self.layer = layer
        self.shape = shape
        self.nd = len(shape)
        self.grids: dict[tuple[int, ...], _Grid | None] = {shape: ((1.0,) * self.nd, (0.0,) * self.nd)}
        self.target: dict[str, tuple[int, ...]] = {}

    def per_axis(self, v: Any) -> tuple[float, ...]:
        return tuple(float(a) for a in v) if isinstance(v, (tuple, list)) else (float(v),) * self.nd

    def record(self, out_shape: tuple[int, ...], grid: _Grid | None) -> None:
        grids = self.grids
        if out_shape not in grids:
            grids[out_shape] = grid
        elif grids[out_shape] is not None and grid is not None and not _close(grids[out_shape], grid):
            grids[out_shape] = None  # two grids for one shape: ambiguous

    def hook(self, m: nn.Module, inputs: Any, out: Any) -> None:
        src = inputs[0] if isinstance(inputs, (tuple, list)) and inputs else None
        out = out[0] if isinstance(out, (tuple, list)) else out
        if not isinstance(src, torch.Tensor) or not isinstance(out, torch.Tensor) or out.ndim != self.nd + 2:
            return
        s_in = tuple(int(v) for v in src.shape[2:])
        s_out = tuple(int(v) for v in out.shape[2:])
        base = self.grids.get(s_in)
        if base is None:
            self.record(s_out, None)
            return
        self.record(s_out, self.layer_grid(m, base))

    def layer_grid(self, m: nn.Module, base: _Grid) -> _Grid:
        """The grid of layer ``m``'s output, from the grid of its input, kernel, stride, dilation, padding."""
        per_axis = self.per_axis
        stride_in, off_in = base
        k, st = per_axis(m.kernel_size), per_axis(m.stride if m.stride is not None else m.kernel_size)
        dil, raw_pad = per_axis(getattr(m, "dilation", 1)), getattr(m, "padding", 0)
        if raw_pad == "same":  # keeps each output cell on its input cell
            pad = tuple(d * (kk - 1) / 2 for d, kk in zip(dil, k, strict=True))
        else:
            pad = per_axis(0 if raw_pad == "valid" else raw_pad)
        if isinstance(m, _TRANSPOSED):
            stride = tuple(a / b for a, b in zip(stride_in, st, strict=True))
            offset = tuple(
                o + a * (p - d * (kk - 1) / 2) / b
                for o, a, p, d, kk, b in zip(off_in, stride_in, pad, dil, k, st, strict=True)
            )
        else:
            stride = tuple(a * b for a, b in zip(stride_in, st, strict=True))
            offset = tuple(
                o + a * (d * (kk - 1) / 2 - p)
                for o, a, p, d, kk in zip(off_in, stride_in, pad, dil, k, strict=True)
            )
        return stride, offset

    def target_hook(self, _m: nn.Module, _i: Any, out: Any) -> None:
        out = out[0] if isinstance(out, (tuple, list)) else out
        self.target.setdefault("shape", tuple(int(v) for v in out.shape[2:]))

    def result(self) -> FeatureGrid:
        if "shape" not in self.target:
            raise RuntimeError(
                f"layer {self.layer!r} did not run in the forward pass; choose a layer the network uses"
            )
        n_out = self.target["shape"]
        found = self.grids.get(n_out)
        if found is not None:
            return FeatureGrid(found[0], found[1], True)
        stride = tuple(a / b for a, b in zip(self.shape, n_out, strict=True))
        return FeatureGrid(stride, tuple((s - 1) / 2 for s in stride), False)


def _close(
    a: tuple[tuple[float, ...], tuple[float, ...]], b: tuple[tuple[float, ...], tuple[float, ...]]
) -> bool:
    return all(abs(u - v) < 1e-6 for x, y in zip(a, b, strict=True) for u, v in zip(x, y, strict=True))
