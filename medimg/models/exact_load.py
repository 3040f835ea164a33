"""Load a trained network's weights exactly: every tensor present, every shape right, no pickle.

A trained model folder must fit its network tensor for tensor. Anything else (a missing
or extra key, a wrong shape, a file that is not safetensors) is refused with the file and
the first offending tensor named, instead of PyTorch's multi-page ``RuntimeError``.

Example:
    >>> from medimg.models.networks import build_network
    >>> net = build_network("unet", in_channels=1, out_channels=2)
    >>> load_state_exactly(net, dict(net.state_dict()), "copy")
"""

from __future__ import annotations

import torch

from medimg.errors import WeightsError
from medimg.models.checkpoint import format_of_head

_FORMAT_NAMES = {"zip": "a torch.save zip (pickle) archive", "pickle": "a raw pickle"}


def safetensors_from_bytes(content: bytes, source: str) -> dict[str, torch.Tensor]:
    """Decode safetensors bytes; anything else (a renamed pickle, a damaged file) is refused.

    Raises:
        WeightsError: Not safetensors, or damaged; the message names ``source``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    kind = format_of_head(content[:16])
    if kind != "safetensors":
        what = _FORMAT_NAMES.get(kind, "not a safetensors file (truncated or another format)")
        raise WeightsError(
            f"{source}: is {what}; a model folder holds safetensors only and medimg never unpickles it"
        )
    try:
        return load(content)
    except (SafetensorError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{source}: damaged safetensors file ({exc})") from None


def load_state_exactly(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``net`` after checking names and shapes one by one.

    Raises:
        WeightsError: Missing or unexpected tensors, or a tensor of the wrong shape (named).
    """
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsError(
            f"{source}: weights do not fit the network ({len(missing)} missing, e.g. {missing[:3]}; "
            f"{len(unexpected)} unexpected, e.g. {unexpected[:3]})"
        )
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise WeightsError(
                f"{source}: tensor {key!r} has shape {list(value.shape)}, the network expects "
                f"{list(own[key].shape)}"
            )
        if value.is_floating_point() != own[key].is_floating_point():
            raise WeightsError(
                f"{source}: tensor {key!r} is {value.dtype}, the network expects {own[key].dtype}"
            )
    net.load_state_dict(state, strict=True)
