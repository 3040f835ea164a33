"""Classifiers built on a segmentation network's encoder, with the *same* key names.

``segresnet-classifier`` keeps SegResNet's ``convInit`` and ``down_layers``;
``swinunetr-classifier`` keeps Swin UNETR's ``swinViT``. Weights of the matching
segmentation network (trained or self-supervised) therefore load into the
classifier's encoder without any key mapping, and a ``fc`` head is added:
the segmentation encoder is reused for classification. The other way round,
a ResNet classifier's weights load into ``flexunet`` with ``add_prefix: "encoder."``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from monai.networks import nets
from torch import nn

from medimg.models.networks import register_network
from medimg.models.segmentation_nets import SEGRESNET_ENCODER, SWINUNETR_ENCODER


class SegResNetClassifier(nn.Module):
    """SegResNet encoder (``convInit``, ``down_layers``), global average pooling, linear ``fc``.

    Example:
        >>> net = SegResNetClassifier(3, 1, 2, init_filters=4, norm=("GROUP", {"num_groups": 2}))
        >>> net(torch.rand(1, 1, 16, 16, 16)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.0, **params: Any
    ):
        super().__init__()
        seg = nets.SegResNet(spatial_dims=spatial_dims, in_channels=in_channels, out_channels=1, **params)
        self.convInit = seg.convInit
        self.down_layers = seg.down_layers
        width = seg.init_filters * 2 ** (len(seg.blocks_down) - 1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convInit(x)
        for down in self.down_layers:
            x = down(x)
        return self.fc(self.dropout(x.flatten(2).mean(-1)))


class SwinClassifier(nn.Module):
    """Swin UNETR's transformer encoder (``swinViT``), global average pooling, linear ``fc``.

    Example:
        >>> net = SwinClassifier(3, 1, 2, feature_size=12, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1))
        >>> net(torch.rand(1, 1, 32, 32, 32)).shape
        torch.Size([1, 2])
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, dropout: float = 0.0, **params: Any
    ):
        super().__init__()
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
        seg = nets.SwinUNETR(in_channels=in_channels, out_channels=1, spatial_dims=spatial_dims, **params)
        self.swinViT = seg.swinViT
        self.normalize = seg.normalize
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(16 * params.get("feature_size", 24), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deepest = self.swinViT(x, self.normalize)[-1]
        return self.fc(self.dropout(deepest.flatten(2).mean(-1)))


def _register_classifier(
    name: str, encoder: dict[str, Any], description: str, build: Callable[..., nn.Module]
) -> None:
    """Register an encoder classifier: the segmentation encoder's defaults, no dropout, the ``fc`` head."""
    register_network(
        name,
        task="classification",
        defaults={**encoder, "dropout": 0.0},
        head=("fc",),
        description=description,
    )(build)


_register_classifier(
    "segresnet-classifier",
    SEGRESNET_ENCODER,
    "SegResNet encoder + linear head; loads segresnet weights as they are.",
    lambda dims, cin, cout, **p: SegResNetClassifier(
        dims, cin, cout, **{**p, "blocks_down": tuple(p["blocks_down"])}
    ),
)
_register_classifier(
    "swinunetr-classifier",
    SWINUNETR_ENCODER,
    "Swin UNETR transformer encoder + linear head; loads swinunetr (and SSL) weights as they are.",
    lambda dims, cin, cout, **p: SwinClassifier(dims, cin, cout, **p),
)
