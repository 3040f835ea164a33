"""Fine-tuning helpers: named parameter groups, encoder freezing, warm-up + cosine schedule.

These are plain-torch pieces; :mod:`medimg.models.finetune_callback` drives them
from a Lightning ``Trainer`` (unfreeze after N epochs, log learning rates).

* :func:`param_groups` — ``encoder`` at ``base_lr * backbone_lr_mult`` and ``head`` at
  ``base_lr`` (discriminative learning rates), each group named for the logs.
* :func:`set_encoder_frozen` — ``requires_grad`` off/on for the encoder.
* :func:`set_norm_frozen` — normalisation layers of the encoder in eval mode, no gradient.
* :func:`build_lr_scheduler` — per-step linear warm-up, then cosine or constant.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

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


def lr_factor(step: int, spec: FinetuneSpec, total_steps: int, warmup_steps: int) -> float:
    """Multiplier of every group's base learning rate at optimizer ``step`` (0-based).

    Example:
        >>> spec = FinetuneSpec(schedule="cosine", warmup_epochs=1)
        >>> [round(lr_factor(s, spec, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
        [0.5, 1.0, 1.0, 0.5, 0.0]
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if spec.schedule == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, max(0.0, (step - warmup_steps) / span))
    return spec.min_lr_ratio + (1.0 - spec.min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_lr_scheduler(
    optimizer: torch.optim.Optimizer, spec: FinetuneSpec, total_steps: int, warmup_steps: int
) -> LambdaLR:
    """Per-step scheduler: linear warm-up over ``warmup_steps``, then cosine (or constant) to ``total_steps``.

    Each group keeps its own base learning rate (so ``backbone_lr_mult`` holds throughout).
    Step it every optimizer step (Lightning: ``{"scheduler": s, "interval": "step"}``).

    Example:
        >>> net = nn.Linear(2, 1)
        >>> opt = torch.optim.SGD(param_groups(net, 0.1, FinetuneSpec(), ["weight"]), lr=0.1)
        >>> sched = build_lr_scheduler(opt, FinetuneSpec(schedule="cosine"), total_steps=4, warmup_steps=0)
        >>> [round(g["lr"], 3) for g in opt.param_groups]
        [0.1, 0.1]
    """
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    return LambdaLR(optimizer, lambda step: lr_factor(step, spec, total_steps, warmup_steps))
