"""Segmentation networks (MONAI implementations) registered under medimg names.

``unet``, ``dynunet``, ``segresnet`` and ``swinunetr``. Defaults are small enough
to train on a CPU test and are overridden in ``model.params`` of a workflow.
"""

from __future__ import annotations

from typing import Any

from monai.networks import nets
from torch import nn

from medimg.models.networks import as_tuples, monai_builder, register_network

# Encoder defaults shared with the classifiers built on these encoders
# (medimg.models.encoder_classifiers): the same values give the same tensors, so
# segmentation weights load into the classifier's encoder as they are.
SEGRESNET_ENCODER: dict[str, Any] = {
    "init_filters": 8,
    "blocks_down": (1, 2, 2, 4),
    "norm": ("GROUP", {"num_groups": 8}),
    "act": ("RELU", {"inplace": True}),
}
SWINUNETR_ENCODER: dict[str, Any] = {
    "feature_size": 24,
    "depths": (2, 2, 2, 2),
    "num_heads": (3, 6, 12, 24),
    "window_size": 7,
    "patch_size": 2,
    "drop_rate": 0.0,
    "attn_drop_rate": 0.0,
    "dropout_path_rate": 0.0,
    "normalize": True,
    "use_checkpoint": False,
    "use_v2": False,
}


def unet_encoder_prefixes(model: nn.Module) -> list[str]:
    """Key prefixes of the contracting path of a MONAI ``UNet`` (down blocks and bottom).

    MONAI nests the UNet as ``Sequential(down, SkipConnection(Sequential(...)), up)``;
    the down block of each level is ``<level>0.`` and the bottom layer is the innermost
    ``submodule``.

    Example:
        >>> net = nets.UNet(3, 1, 2, channels=(8, 16, 32), strides=(2, 2))
        >>> unet_encoder_prefixes(net)
        ['model.0.', 'model.1.submodule.0.', 'model.1.submodule.1.submodule.']
    """
    keys = list(model.state_dict())
    prefixes: list[str] = []
    level = "model."
    while any(k.startswith(level + "1.submodule.") for k in keys):
        prefixes.append(level + "0.")
        level = level + "1.submodule."
    prefixes.append(level)
    return prefixes


build_unet = register_network(
    "unet",
    task="segmentation",
    defaults={
        "channels": (16, 32, 64, 128, 256),
        "strides": (2, 2, 2, 2),
        "kernel_size": 3,
        "up_kernel_size": 3,
        "num_res_units": 2,
        "act": "PRELU",
        "norm": "INSTANCE",
        "dropout": 0.0,
        "bias": True,
        "adn_ordering": "NDA",
    },
    encoder=unet_encoder_prefixes,
    head=("model.2",),
    description="MONAI residual UNet (Kerfoot et al.); channels/strides set depth and width.",
)(monai_builder(nets.UNet, "channels", "strides"))


class DynUNet(nets.DynUNet):
    """MONAI's ``DynUNet`` with every weight once in its state dict.

    MONAI's ``skip_layers`` only re-references the encoder and decoder blocks, so its state dict
    holds every weight twice, under two names, and safetensors refuses to save tensors that share
    memory (a trained model folder could not be written). Here ``skip_layers`` is a plain
    attribute, not a submodule; state dicts that still carry ``skip_layers.*`` keys (MONAI's, older
    checkpoints) load, those keys being the same tensors again.

    Example:
        >>> net = DynUNet(3, 1, 2, kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2])
        >>> any(k.startswith("skip_layers.") for k in net.state_dict())
        False
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.__dict__["skip_layers"] = self._modules.pop("skip_layers")
        self._register_load_state_dict_pre_hook(_drop_skip_layer_keys)


def _drop_skip_layer_keys(state_dict: dict[str, Any], prefix: str, *_args: Any) -> None:
    for key in [k for k in state_dict if k.startswith(f"{prefix}skip_layers.")]:
        del state_dict[key]


def _dynunet_encoder(model: nn.Module) -> list[str]:
    # ``skip_layers`` only re-references the same modules (aliases), so it is not listed.
    return ["input_block.", "downsamples.", "bottleneck."]


@register_network(
    "dynunet",
    task="segmentation",
    defaults={
        "kernel_size": (3, 3, 3, 3, 3),
        "strides": (1, 2, 2, 2, 2),
        "upsample_kernel_size": None,
        "filters": None,
        "dropout": None,
        "norm_name": ("INSTANCE", {"affine": True}),
        "act_name": ("leakyrelu", {"inplace": True, "negative_slope": 0.01}),
        "deep_supervision": False,
        "deep_supr_num": 1,
        "res_block": False,
        "trans_bias": False,
    },
    encoder=_dynunet_encoder,
    head=("output_block", "deep_supervision_heads"),
    description="MONAI DynUNet (the nnU-Net architecture); upsample_kernel_size defaults to strides[1:].",
)
def build_dynunet(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
    """Build MONAI's ``DynUNet``; ``upsample_kernel_size`` defaults to ``strides[1:]``."""
    if params["upsample_kernel_size"] is None:
        params["upsample_kernel_size"] = list(params["strides"])[1:]
    return DynUNet(spatial_dims, in_channels, out_channels, **params)


build_segresnet = register_network(
    "segresnet",
    task="segmentation",
    defaults={
        **SEGRESNET_ENCODER,
        "dropout_prob": None,
        "use_conv_final": True,
        "blocks_up": (1, 1, 1),
        "upsample_mode": "nontrainable",
    },
    encoder=lambda model: ["convInit.", "down_layers."],
    head=("conv_final",),
    description="MONAI SegResNet (Myronenko, BraTS 2018 winner) without the VAE branch.",
)(monai_builder(nets.SegResNet, "blocks_down", "blocks_up"))

# input sides must be divisible by 32
build_swinunetr = register_network(
    "swinunetr",
    task="segmentation",
    defaults={**SWINUNETR_ENCODER, "norm_name": "instance"},
    encoder=lambda model: ["swinViT."],
    head=("out",),
    description="MONAI Swin UNETR; feature_size 48 matches the published self-supervised encoder.",
)(monai_builder(nets.SwinUNETR, "depths", "num_heads"))


@register_network(
    "flexunet",
    task="segmentation",
    defaults={
        "backbone": "resnet18",
        "decoder_channels": (256, 128, 64, 32, 16),
        "norm": ("batch", {"eps": 1e-3, "momentum": 0.1}),
        "act": ("relu", {"inplace": True}),
        "dropout": 0.0,
        "decoder_bias": False,
        "upsample": "nontrainable",
        "interp_mode": "nearest",
        "is_pad": True,
    },
    encoder=lambda model: ["encoder."],
    head=("segmentation_head",),
    description="MONAI FlexibleUNet: a ResNet/EfficientNet encoder (same keys as the classifiers, "
    "under 'encoder.') with a UNet decoder.",
)
def build_flexunet(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
    """Build MONAI's ``FlexibleUNet`` (never downloads: ``pretrained`` is always off).

    A ``resnetN`` classification checkpoint loads into its encoder with ``add_prefix: "encoder."``.
    """
    params = as_tuples(params, "decoder_channels")
    return nets.FlexibleUNet(in_channels, out_channels, pretrained=False, spatial_dims=spatial_dims, **params)
