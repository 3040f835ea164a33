"""The Merlin CT encoder (an inflated 3D ResNet-152) as a classification backbone.

Merlin (Blankemeier et al., Stanford MIMI) encodes abdominal CT with an I3ResNet-152:
a torchvision ResNet-152 whose 2D kernels were inflated to 3D. Its first convolution
has a ``(3, 7, 7)`` kernel with stride ``(1, 2, 2)``; every other block matches
MONAI's ResNet bottleneck layout (``conv1..conv3``, ``bn1..bn3``, ``downsample.0/1``
without bias), so the published encoder loads into MONAI's ``ResNet`` key for key.
``medimg`` adds a fresh linear head (``fc``) with ``out_channels`` outputs.

The published encoder reads 3 channels (a CT window repeated); with ``in_channels=1``
set ``adapt_in_channels: true`` in ``model.pretrained`` to sum the first convolution.
"""

from __future__ import annotations

from typing import Any

from monai.networks import nets
from torch import nn

from medimg.models.networks import register_network

MERLIN_LAYERS = [3, 8, 36, 3]


@register_network(
    "merlin",
    task="classification",
    defaults={"dropout": 0.0},
    head=("fc",),
    description="Merlin I3ResNet-152 CT encoder (3x7x7 stem) with a linear classification head.",
)
def build_merlin(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
    """Build the Merlin encoder architecture with a linear head.

    Example:
        >>> net = build_merlin(3, 1, 2, dropout=0.0)
        >>> tuple(net.conv1.weight.shape)
        (64, 1, 3, 7, 7)
    """
    if spatial_dims != 3:
        raise ValueError("the Merlin encoder is 3D only (spatial_dims=3)")
    model = nets.ResNet(
        "bottleneck",
        MERLIN_LAYERS,
        [64, 128, 256, 512],
        spatial_dims=3,
        n_input_channels=in_channels,
        conv1_t_size=(3, 7, 7),
        conv1_t_stride=(1, 2, 2),
        shortcut_type="B",
        bias_downsample=False,
        num_classes=out_channels,
    )
    if params["dropout"]:
        model.fc = nn.Sequential(nn.Dropout(float(params["dropout"])), model.fc)
    return model
