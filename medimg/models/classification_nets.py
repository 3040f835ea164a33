"""Classification networks (MONAI implementations) registered under medimg names.

``densenet121``, ``resnet10`` … ``resnet200`` and ``efficientnet-b0`` … ``efficientnet-b7``.

The ResNets keep MONAI's module names, which are the MedicalNet names (Chen et
al., *Med3D*): a MedicalNet checkpoint loads after stripping its ``module.``
prefix. Their shortcut type and downsample bias default to the MedicalNet
choice for each depth, so the published weights fit without extra settings.
"""

from __future__ import annotations

from typing import Any

from monai.networks import nets
from torch import nn

from medimg.models.networks import register_network

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
    params["block_config"] = tuple(params["block_config"])
    return nets.DenseNet121(spatial_dims, in_channels, out_channels, pretrained=False, **params)


def medicalnet_resnet_args(depth: int) -> dict[str, Any]:
    """Shortcut type and downsample bias that MedicalNet used for a ResNet depth.

    Example:
        >>> medicalnet_resnet_args(18)
        {'shortcut_type': 'A', 'bias_downsample': True}
    """
    short = depth in (18, 34)
    return {"shortcut_type": "A" if short else "B", "bias_downsample": short}


def _register_resnet(depth: int) -> None:
    block, layers = RESNET_LAYERS[depth]

    def build(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
        return nets.ResNet(
            block,
            layers,
            [64, 128, 256, 512],
            spatial_dims=spatial_dims,
            n_input_channels=in_channels,
            num_classes=out_channels,
            **params,
        )

    build.__name__ = build.__qualname__ = f"build_resnet{depth}"
    build.__doc__ = f"Build a MONAI ResNet-{depth} with MedicalNet-compatible module names."
    register_network(
        f"resnet{depth}",
        task="classification",
        defaults={
            "conv1_t_size": 7,
            "conv1_t_stride": 1,
            "no_max_pool": False,
            "widen_factor": 1.0,
            "act": ("relu", {"inplace": True}),
            "norm": "batch",
            **medicalnet_resnet_args(depth),
        },
        head=("fc",),
        description=f"MONAI ResNet-{depth}, MedicalNet-compatible keys ({block} blocks {layers}).",
    )(build)


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

    build.__name__ = build.__qualname__ = f"build_efficientnet_{variant}"
    build.__doc__ = f"Build MONAI's EfficientNet-{variant.upper()} (never downloads)."
    register_network(
        model_name,
        task="classification",
        defaults={"norm": ("batch", {"eps": 0.001, "momentum": 0.01})},
        head=("_fc",),
        description=f"MONAI EfficientNet-{variant.upper()} (2D or 3D).",
    )(build)


for _variant in ("b0", "b1", "b2", "b3", "b4", "b5", "b6", "b7"):
    _register_efficientnet(_variant)
