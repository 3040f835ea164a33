"""Network factory: one name per architecture, typed parameters, known encoder parts.

Every network medimg can train is registered here under the name a workflow uses
(``model.network``). An entry knows its task (segmentation or classification),
the keyword parameters it accepts with their defaults, which top-level modules
form its *encoder* (what pretrained weights, frozen epochs and backbone learning
rates act on) and which form its *head*.

The built-in entries live in :mod:`medimg.models.segmentation_nets`,
:mod:`medimg.models.classification_nets`, :mod:`medimg.models.merlin` and
:mod:`medimg.models.encoder_classifiers`; they
register themselves on first use of any function below.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from medimg.errors import ConfigError
from medimg.models.registry import Registry
from medimg.tasks import get_task

if TYPE_CHECKING:
    from medimg.config.schema import Workflow

Task = str  # a task name registered in medimg.tasks (``"segmentation"``, ``"classification"``)

_BUILTIN_MODULES = (
    "medimg.models.segmentation_nets",
    "medimg.models.classification_nets",
    "medimg.models.merlin",
    "medimg.models.encoder_classifiers",
)


@dataclass(frozen=True)
class NetworkInfo:
    """What medimg knows about one registered network.

    Attributes:
        name: Registry name (``"unet"``).
        task: The task it is built for, a name registered in :mod:`medimg.tasks`.
        build: ``build(spatial_dims, in_channels, out_channels, **params) -> nn.Module``.
        defaults: Every accepted parameter with medimg's default value.
        head: Module paths (no trailing dot) that form the task head, the layers whose shape
            follows ``out_channels`` (re-initialised on a class-count change).
        encoder: Optional function ``model -> list of key prefixes``; when absent the encoder
            is every top-level module that is not in ``head``.
        description: One line for ``medimg weights --list-networks`` and the docs.
    """

    name: str
    task: Task
    build: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)
    head: tuple[str, ...] = ()
    encoder: Callable[[nn.Module], list[str]] | None = None
    description: str = ""


NETWORKS: Registry[NetworkInfo] = Registry("network")


def register_network(
    name: str,
    *,
    task: Task,
    defaults: dict[str, Any] | None = None,
    head: tuple[str, ...] = (),
    encoder: Callable[[nn.Module], list[str]] | None = None,
    description: str = "",
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering a network builder under ``name`` (refuses duplicates).

    Example:
        >>> import torch
        >>> @register_network("doc-linear", task="classification", defaults={"bias": True}, head=("fc",))
        ... def build_linear(spatial_dims, in_channels, out_channels, bias=True):
        ...     return torch.nn.Sequential()
        >>> network_task("doc-linear")
        'classification'
    """

    def _register(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _load_builtins()
        get_task(task)  # a known task, or ConfigError naming the known ones
        info = NetworkInfo(name, task, build, dict(defaults or {}), tuple(head), encoder, description)
        NETWORKS.register(name, info, task=task)
        return build

    return _register


def monai_builder(network: Callable[..., nn.Module], *tuple_keys: str) -> Callable[..., nn.Module]:
    """The builder of a MONAI network class that takes the workflow's params as they are, the
    values of ``tuple_keys`` turned into tuples (a workflow gives lists; MONAI wants tuples).

    Example:
        >>> from monai.networks import nets
        >>> build = monai_builder(nets.SegResNet, "blocks_down")
        >>> type(build(3, 1, 2, init_filters=8, blocks_down=[1, 1])).__name__
        'SegResNet'
    """

    def build(spatial_dims: int, in_channels: int, out_channels: int, **params: Any) -> nn.Module:
        kwargs = as_tuples(params, *tuple_keys)
        return network(
            spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **kwargs
        )

    build.__doc__ = f"Build MONAI's ``{getattr(network, '__name__', network)}``."
    return build


def as_tuples(params: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``params`` with the values of ``keys`` as tuples (a workflow gives lists; MONAI's networks want tuples).

    Example:
        >>> as_tuples({"channels": [16, 32], "dropout": 0.0}, "channels")
        {'channels': (16, 32), 'dropout': 0.0}
    """
    return {**params, **{k: tuple(params[k]) for k in keys}}


_builtins_state = "unloaded"


def _load_builtins() -> None:
    """Import the built-in network modules once (a plug-in registering first cannot shadow them)."""
    global _builtins_state
    if _builtins_state != "unloaded":
        return
    _builtins_state = "loading"
    try:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
    finally:
        _builtins_state = "loaded"


def network_info(name: str) -> NetworkInfo:
    """Return the :class:`NetworkInfo` registered as ``name`` (ConfigError when unknown).

    Example:
        >>> network_info("unet").defaults["num_res_units"]
        2
    """
    _load_builtins()
    return NETWORKS.get(name)


def available_networks(task: Task | None = None) -> list[str]:
    """Return the names :func:`build_network` accepts, optionally for one task.

    Example:
        >>> "unet" in available_networks("segmentation")
        True
    """
    _load_builtins()
    if task is None:
        return NETWORKS.names()
    by_task: dict[str, list[str]] = {}
    for n in NETWORKS.names():
        by_task.setdefault(NETWORKS.get(n).task, []).append(n)
    return by_task.get(task, [])


def network_task(name: str) -> Task:
    """Return the task (``"segmentation"``, ``"classification"``, ...) a registered network is for.

    Example:
        >>> network_task("densenet121")
        'classification'
    """
    return network_info(name).task


def check_network_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Validate ``params`` for network ``name`` and return them merged over the defaults.

    Raises:
        ConfigError: For an unknown parameter, naming the network and the allowed ones.

    Example:
        >>> check_network_params("unet", {"dropout": 0.1})["dropout"]
        0.1
    """
    info = network_info(name)
    unknown = sorted(set(params) - set(info.defaults))
    if unknown:
        hints = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(info.defaults), n=1)
            hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        allowed = ", ".join(sorted(info.defaults)) or "(none)"
        raise ConfigError(
            f"network {name!r} does not accept parameter {', '.join(hints)}; allowed parameters: {allowed}"
        )
    return {**info.defaults, **params}


def build_network(
    name: str, *, spatial_dims: int = 3, in_channels: int, out_channels: int, **params: Any
) -> nn.Module:
    """Build a registered network.

    Args:
        name: Registry name, e.g. ``"unet"``, ``"swinunetr"``, ``"resnet50"``, ``"merlin"``.
        spatial_dims: 2 or 3.
        in_channels: Image channels (modalities) the network reads.
        out_channels: Segmentation classes (with background) or classification outputs.
        **params: Network-specific keyword arguments (see :func:`network_info`).

    Returns:
        The network, in training mode, with freshly initialised weights.

    Raises:
        ConfigError: Unknown name, unknown parameter, or values the architecture rejects.

    Example:
        >>> net = build_network("unet", spatial_dims=2, in_channels=1, out_channels=2,
        ...                     channels=[8, 16, 32], strides=[2, 2])
        >>> type(net).__name__
        'UNet'
    """
    info = network_info(name)
    merged = check_network_params(name, params)
    if spatial_dims not in (2, 3):
        raise ConfigError(f"network {name!r}: spatial_dims must be 2 or 3, got {spatial_dims!r}")
    for key, value in (("in_channels", in_channels), ("out_channels", out_channels)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"network {name!r}: {key} must be a positive integer, got {value!r}")
    try:
        return info.build(spatial_dims, in_channels, out_channels, **merged)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise ConfigError(f"network {name!r} cannot be built with parameters {params}: {exc}") from exc


def build_model(wf: Workflow) -> nn.Module:
    """The network a workflow names (``model.name``, ``model.params``), sized for its data and task.

    Output channels are the segmentation labels (background included) or the classes. Training
    builds its network with this, and so does every load of a trained model (the folder's
    ``workflow.yaml`` rebuilds the network its weights fit).

    Example:
        >>> from medimg.config.load import parse_workflow
        >>> wf = parse_workflow({"name": "demo", "task": "segmentation",
        ...     "data": {"manifest": "m.csv", "labels": {0: "background", 1: "liver"}},
        ...     "model": {"name": "unet", "params": {"channels": [4, 8], "strides": [2]}}})
        >>> build_model(wf).out_channels
        2
    """
    out = get_task(wf.task).out_channels(wf.data.labels, wf.data.num_classes)
    return build_network(
        wf.model.name, spatial_dims=3, in_channels=wf.data.channels, out_channels=out, **wf.model.params
    )


def _top_level(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_children() if any(True for _ in m.state_dict())]


def head_prefixes(name: str, model: nn.Module) -> list[str]:
    """Key prefixes (ending in ``.``) of the task head of ``model`` built as ``name``.

    Example:
        >>> net = build_network("resnet10", in_channels=1, out_channels=2)
        >>> head_prefixes("resnet10", net)
        ['fc.']
    """
    info = network_info(name)
    keys = list(model.state_dict())
    return [f"{h}." for h in info.head if any(k.startswith(f"{h}.") for k in keys)]


def encoder_prefixes(name: str, model: nn.Module) -> list[str]:
    """Key prefixes (ending in ``.``) of the encoder of ``model`` built as ``name``.

    The encoder is what pretrained weights are expected to cover, what
    ``freeze_encoder_epochs`` freezes and what ``backbone_lr_mult`` scales.

    Example:
        >>> net = build_network("densenet121", in_channels=1, out_channels=3)
        >>> encoder_prefixes("densenet121", net)
        ['features.']
    """
    info = network_info(name)
    if info.encoder is not None:
        return list(info.encoder(model))
    return [f"{n}." for n in _top_level(model) if n not in info.head]


def is_under(key: str, prefixes: list[str] | tuple[str, ...]) -> bool:
    """True when a parameter/state key starts with one of ``prefixes``.

    Example:
        >>> is_under("features.conv0.weight", ["features."])
        True
    """
    return any(key.startswith(p) for p in prefixes)
