"""Classification networks (MONAI implementations) registered under medimg names.

``densenet121``, ``resnet10`` … ``resnet200`` and ``efficientnet-b0`` … ``efficientnet-b7``.

The ResNets keep MONAI's module names, which are the MedicalNet names (Chen et
al., *Med3D*): a MedicalNet checkpoint loads after stripping its ``module.``
prefix. Their shortcut type and downsample bias default to the MedicalNet
choice for each depth, so the published weights fit without extra settings.

``output_stride`` keeps the last feature map fine (dilated instead of strided layers, as in
DeepLab; the weights are the same tensors), so that maps read from ``layer4`` can show small
structures (see :class:`LocalResNet`).

``patchnet`` is a small classifier for findings that sit in one place (a lesion): a bounded
receptive field and channel-wise global max pooling, so that the class is decided where the
finding is and a Grad-CAM map points there (see :class:`PatchNet`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from monai.networks import nets
from torch import nn

from medimg.errors import ConfigError
from medimg.models.networks import as_tuples, register_network

RESNET_LAYERS: dict[int, tuple[str, list[int]]] = {
    10: ("basic", [1, 1, 1, 1]),
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
    200: ("bottleneck", [3, 24, 36, 3]),
}


@register_network(
    "densenet121",
    task="classification",
    defaults={"init_features": 64, "growth_rate": 32, "block_config": (6, 12, 24, 16), "dropout_prob": 0.0},
    head=("class_layers",),
    description="MONAI DenseNet-121 (2D or 3D).",
)
def build_densenet121(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
    """Build MONAI's ``DenseNet121`` (never downloads: ``pretrained`` is always off)."""
    params = as_tuples(params, "block_config")
    return nets.DenseNet121(spatial_dims, in_channels, out_channels, pretrained=False, **params)


def medicalnet_resnet_args(depth: int) -> dict[str, Any]:
    """Shortcut type and downsample bias that MedicalNet used for a ResNet depth.

    Example:
        >>> medicalnet_resnet_args(18)
        {'shortcut_type': 'A', 'bias_downsample': True}
    """
    short = depth in (18, 34)
    return {"shortcut_type": "A" if short else "B", "bias_downsample": short}


class LocalResNet(nets.ResNet):
    """MONAI's ``ResNet`` with a chosen output stride (input voxels per ``layer4`` voxel).

    With the default (``output_stride=None``: conv1 stride x max pool x 8) this is MONAI's
    network, operation for operation. A smaller output stride replaces the last strided layers
    by dilated ones (as in DeepLab): the module names and weight shapes do not change, so
    MedicalNet weights still load, but ``layer4`` keeps a finer grid, which is what a Grad-CAM
    map is read from. Small lesions need it: at stride 32 a 48^3 input gives ``layer4`` 2^3 cells.

    Example:
        >>> import torch
        >>> net = LocalResNet("basic", [1, 1, 1, 1], [64, 128, 256, 512], spatial_dims=3,
        ...                   n_input_channels=1, num_classes=2, widen_factor=0.25,
        ...                   conv1_t_stride=2, output_stride=4)
        >>> tuple(net.layer4(net.layer3(net.layer2(net.layer1(net.maxpool(net.act(net.bn1(
        ...     net.conv1(torch.zeros(1, 1, 48, 48, 48))))))))).shape)
        (1, 128, 12, 12, 12)
    """

    def __init__(self, *args: Any, output_stride: int | None = None, **kw: Any):
        super().__init__(*args, **kw)
        stem = int(kw.get("conv1_t_stride", 1)) * (1 if kw.get("no_max_pool", False) else 2)
        self.output_stride = stem * 8 if output_stride is None else output_stride
        allowed = [stem * 2**j for j in range(4)]
        if self.output_stride not in allowed:
            raise ConfigError(
                f"model.params.output_stride: expected one of {allowed} for this stem "
                f"(conv1_t_stride x 2 for the max pool), got {output_stride!r}"
            )
        dilation = 1
        for i, name in enumerate(("layer2", "layer3", "layer4"), start=2):
            if stem * 2 ** (i - 1) > self.output_stride:  # this layer would stride past the target
                _dilate(getattr(self, name), dilation)
                dilation *= 2
            elif dilation > 1:
                _dilate(getattr(self, name), dilation)


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """Turn ``layer``'s stride into dilation: stride 1 everywhere, 3x3x3 convolutions dilated."""
    for block in layer:
        for m in block.modules():
            if isinstance(m, (nn.Conv3d, nn.Conv2d)):
                m.stride = (1,) * len(m.stride)
                if m.kernel_size[0] > 1:
                    m.dilation = (dilation,) * len(m.dilation)
                    m.padding = tuple(dilation * (k // 2) for k in m.kernel_size)
        if hasattr(block, "stride"):
            block.stride = 1
        ds = getattr(block, "downsample", None)
        if isinstance(ds, partial):  # shortcut type A: pooled identity with zero channels
            block.downsample = partial(ds.func, *ds.args, **{**ds.keywords, "stride": 1})


def _register_generated(name: str, build: Callable[..., nn.Module], doc: str, **info: Any) -> None:
    """Name and document a builder made in a loop (``build_<name>``), then register it as ``name``."""
    build.__name__ = build.__qualname__ = "build_" + name.replace("-", "_")
    build.__doc__ = doc
    register_network(name, task="classification", **info)(build)


def _register_resnet(depth: int) -> None:
    block, layers = RESNET_LAYERS[depth]

    def build(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
        return LocalResNet(
            block,
            layers,
            [64, 128, 256, 512],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=out_channels,
            **params,
        )

    _register_generated(
        f"resnet{depth}",
        build,
        f"Build a MONAI ResNet-{depth} with MedicalNet-compatible module names.",
        defaults={
            "conv1_t_size": 7,
            "conv1_t_stride": 1,
            "no_max_pool": False,
            "widen_factor": 1.0,
            "act": ("relu", {"inplace": True}),
            "norm": "batch",
            "output_stride": None,
            **medicalnet_resnet_args(depth),
        },
        head=("fc",),
        description=f"MONAI ResNet-{depth}, MedicalNet-compatible keys ({block} blocks {layers}).",
    )


for _depth in RESNET_LAYERS:
    _register_resnet(_depth)


def _register_efficientnet(variant: str) -> None:
    model_name = f"efficientnet-{variant}"

    def build(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
        return nets.EfficientNetBN(
            model_name,
            pretrained=False,
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            num_classes=out_channels,
            **params,
        )

    _register_generated(
        model_name,
        build,
        f"Build MONAI's EfficientNet-{variant.upper()} (never downloads).",
        defaults={"norm": ("batch", {"eps": 0.001, "momentum": 0.01})},
        head=("_fc",),
        description=f"MONAI EfficientNet-{variant.upper()} (2D or 3D).",
    )


for _variant in ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"):
    _register_efficientnet(_variant)


class PatchNet(nn.Module):
    """A small fully convolutional classifier for a finding that sits in one place.

    3x3(x3) convolutions with ReLU (``channels``: one width per convolution), a 2x max pool after
    each convolution listed in ``pools``, then each feature channel's maximum over space and a
    linear layer (``fc``). The receptive field is bounded (``receptive_field`` voxels per side,
    10 for the defaults), so a cell's features only describe its own neighbourhood, and with
    ``pool="max"`` each channel's evidence comes from the one cell where it is strongest, as in
    Oquab et al. (2015), "Is object localization for free?": the finding decides the class where
    it is, which is where a Grad-CAM map read from the last convolution (``cam_layer``) peaks.
    ``pool="avg"`` gives the usual global average for comparison.

    ``input_range`` is the intensity range the preprocessing produces (``[0, 1]`` for
    ``ct_window`` and ``minmax``); the network maps it to ``[-1, 1]`` first (``null`` for inputs
    already centred, such as ``zscore``): ReLU networks train best on zero-centred inputs.

    Example:
        >>> net = PatchNet(3, 1, 2)
        >>> net(torch.zeros(2, 1, 24, 24, 24)).shape, net.receptive_field, net.output_stride, net.cam_layer
        (torch.Size([2, 2]), 10, 2, 'features.5')
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        channels: tuple[int, ...] | list[int] = (8, 16, 16),
        pools: tuple[int, ...] | list[int] = (2,),
        pool: str = "max",
        input_range: tuple[float, float] | list[float] | None = (0.0, 1.0),
    ) -> None:
        super().__init__()
        if not channels or any(int(c) < 1 for c in channels):
            raise ValueError(f"channels must be a non-empty list of positive integers, got {channels!r}")
        if any(not 1 <= int(i) < len(channels) for i in pools):
            raise ValueError(
                f"pools must list convolutions (1..{len(channels) - 1}) followed by a 2x max pool, got {pools!r}"
            )
        if pool not in ("max", "avg"):
            raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
        if input_range is not None and (
            len(input_range) != 2 or not float(input_range[0]) < float(input_range[1])
        ):
            raise ValueError(f"input_range must be [low, high] with low < high, or null; got {input_range!r}")
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        down = nn.MaxPool3d if spatial_dims == 3 else nn.MaxPool2d
        layers: list[nn.Module] = []
        width, rf, jump = in_channels, 1, 1
        last, pooled_after = len(channels), {int(p) for p in pools}
        for i, c in enumerate((int(c) for c in channels), start=1):
            layers.append(conv(width, c, 3, padding=1))
            width, rf = c, rf + 2 * jump
            if i < last:  # the last convolution's ReLU is applied in forward: Grad-CAM reads it raw
                layers.append(nn.ReLU())
                if i in pooled_after:
                    layers.append(down(2))
                    rf, jump = rf + jump, jump * 2
        self.cam_layer = f"features.{len(layers) - 1}"
        self.features = nn.Sequential(*layers)
        self.act = nn.ReLU()
        self.pool = pool
        self.receptive_field, self.output_stride = rf, jump
        lo, hi = (-1.0, 1.0) if input_range is None else (float(input_range[0]), float(input_range[1]))
        # configuration, not weights: set by the workflow, never read from a checkpoint
        self.register_buffer("input_shift", torch.tensor((lo + hi) / 2), persistent=False)
        self.register_buffer("input_scale", torch.tensor(2.0 / (hi - lo)), persistent=False)
        self.fc = nn.Linear(width, out_channels)

    def pooled_features(self, x: torch.Tensor) -> torch.Tensor:
        """Each feature channel pooled over space, ``(N, channels[-1])``: what ``fc`` reads."""
        f = self.act(self.features((x - self.input_shift) * self.input_scale)).flatten(2)
        return f.amax(dim=2) if self.pool == "max" else f.mean(dim=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pooled_features(x))


@register_network(
    "patchnet",
    task="classification",
    defaults={"channels": (8, 16, 16), "pools": (2,), "pool": "max", "input_range": (0.0, 1.0)},
    head=("fc",),
    description="Small classifier for a localised finding: bounded receptive field, global max pooling "
    "(the class is decided where the finding is; Grad-CAM points there).",
)
def build_patchnet(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
    """Build a :class:`PatchNet`."""
    return PatchNet(spatial_dims, in_channels, out_channels, **params)
