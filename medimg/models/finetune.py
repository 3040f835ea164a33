"""Fine-tuning helpers: named parameter groups, encoder freezing.

These are plain-torch pieces; :mod:`medimg.models.finetune_callback` drives them
from a Lightning ``Trainer`` (unfreeze after N epochs, log learning rates).

* :func:`param_groups` — ``encoder`` at ``base_lr * backbone_lr_mult`` and ``head`` at
  ``base_lr`` (discriminative learning rates), each group named for the logs.
* :func:`set_encoder_frozen` — ``requires_grad`` off/on for the encoder.
* :func:`set_norm_frozen` — normalisation layers of the encoder in eval mode, no gradient.

The learning-rate schedule (warm-up, then cosine or constant) is the study's one schedule,
:func:`medimg.training.optim.warmup_cosine`, set in ``optim.warmup_epochs`` and
``optim.scheduler``; every group keeps its own base rate under it.
"""

from __future__ import annotations

from torch import nn

from medimg.config.weights import FinetuneSpec
from medimg.models.networks import is_under

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


def param_groups(
    model: nn.Module, base_lr: float, spec: FinetuneSpec, encoder_prefixes: list[str]
) -> list[dict]:
    """Split parameters into a named ``encoder`` group and a ``head`` group (the rest).

    Args:
        model: The network.
        base_lr: Learning rate of the head (and of everything outside the encoder).
        spec: ``backbone_lr_mult`` scales the encoder's learning rate.
        encoder_prefixes: Parameter-name prefixes of the encoder.

    Returns:
        Groups for any ``torch.optim`` optimizer: ``{"name", "params", "lr"}``; empty groups dropped.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> groups = param_groups(net, 1e-3, FinetuneSpec(backbone_lr_mult=0.1), ["0."])
        >>> [(g["name"], g["lr"], len(g["params"])) for g in groups]
        [('encoder', 0.0001, 2), ('head', 0.001, 2)]
    """
    encoder, head = [], []
    for name, param in model.named_parameters():
        (encoder if is_under(name, encoder_prefixes) else head).append(param)
    groups = [
        {"name": "encoder", "params": encoder, "lr": base_lr * spec.backbone_lr_mult},
        {"name": "head", "params": head, "lr": base_lr},
    ]
    return [g for g in groups if g["params"]]


def set_encoder_frozen(
    model: nn.Module, prefixes: list[str], frozen: bool, *, keep_norm_frozen: bool = False
) -> int:
    """Turn gradients of the encoder off (``frozen=True``) or back on; return how many tensors changed.

    Normalisation statistics keep updating while frozen (only gradients stop); with
    ``keep_norm_frozen`` an unfreeze leaves normalisation layers frozen.

    Example:
        >>> net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
        >>> set_encoder_frozen(net, ["0."], True), net[0].weight.requires_grad, net[1].weight.requires_grad
        (2, False, True)
    """
    norm_params = (
        {id(p) for p in _norm_parameters(model, prefixes)} if keep_norm_frozen and not frozen else set()
    )
    changed = 0
    for name, param in model.named_parameters():
        if is_under(name, prefixes) and id(param) not in norm_params and param.requires_grad == frozen:
            param.requires_grad_(not frozen)
            changed += 1
    return changed


def _norm_modules(model: nn.Module, prefixes: list[str]) -> list[nn.Module]:
    return [m for n, m in model.named_modules() if isinstance(m, NORM_TYPES) and is_under(n + ".", prefixes)]


def _norm_parameters(model: nn.Module, prefixes: list[str]) -> list[nn.Parameter]:
    return [p for m in _norm_modules(model, prefixes) for p in m.parameters(recurse=False)]


def set_norm_frozen(model: nn.Module, prefixes: list[str]) -> int:
    """Freeze the encoder's normalisation layers: eval mode (running statistics fixed) and no gradient.

    Call again after every ``model.train()`` (the Lightning callback does this each epoch).

    Example:
        >>> net = nn.Sequential(nn.Conv3d(1, 2, 1), nn.BatchNorm3d(2), nn.Conv3d(2, 1, 1))
        >>> set_norm_frozen(net, ["1."]), net[1].training, net[1].weight.requires_grad
        (1, False, False)
    """
    modules = _norm_modules(model, prefixes)
    for module in modules:
        module.eval()
        for param in module.parameters(recurse=False):
            param.requires_grad_(False)
    return len(modules)
