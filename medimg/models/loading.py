"""Load pretrained weights into a network: key mapping, shape checks, loud report.

:func:`load_pretrained` resolves the source, reads it safely, maps checkpoint keys
(``strip_prefix`` → ``rename`` → ``add_prefix``), and copies every tensor whose
name and shape fit. A tensor of another shape is skipped and reported, except the
input convolution, which is adapted to a new channel count when
``adapt_in_channels`` is set. When fewer than ``min_encoder_fraction`` of the
network's encoder tensors were loaded, nothing is copied and
:class:`~medimg.errors.WeightsError` carries the full report and a key-mapping hint.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter

import torch
from torch import nn

from medimg.config.trust import require_pickle_permission
from medimg.config.weights import PretrainedSpec
from medimg.errors import WeightsError
from medimg.models.checkpoint import Checkpoint, detect_format, read_checkpoint
from medimg.models.networks import is_under
from medimg.models.report import LoadReport
from medimg.models.sources import ResolvedWeights, resolve_weights

log = logging.getLogger(__name__)


def map_keys(tensors: dict[str, torch.Tensor], spec: PretrainedSpec) -> tuple[dict[str, torch.Tensor], int]:
    """Apply ``strip_prefix``, ``rename`` rules and ``add_prefix``; return the new dict and renamed count.

    Example:
        >>> spec = PretrainedSpec(source="x.pt", strip_prefix="module.", add_prefix="encoder.")
        >>> list(map_keys({"module.conv.weight": torch.zeros(1)}, spec)[0])
        ['encoder.conv.weight']
    """
    rules = [(re.compile(r.pattern), r.replace) for r in spec.rename]
    out: dict[str, torch.Tensor] = {}
    renamed = 0
    for key, value in tensors.items():
        new = key
        for prefix in spec.strip_prefix:
            if new.startswith(prefix):
                new = new[len(prefix) :]
        for pattern, replacement in rules:
            new = pattern.sub(replacement, new)
        new = spec.add_prefix + new
        renamed += new != key
        if new in out:
            raise WeightsError(
                f"{spec.source}: key mapping sends two checkpoint keys to {new!r}; refine rename rules"
            )
        out[new] = value
    return out, renamed


def unique_state_keys(model: nn.Module) -> list[str]:
    """State-dict keys without aliases (modules registered twice, as in DynUNet's ``skip_layers``).

    Example:
        >>> unique_state_keys(nn.Linear(2, 1))
        ['weight', 'bias']
    """
    names = [n for n, _ in model.named_parameters()] + [n for n, _ in model.named_buffers()]
    wanted = set(names)
    return [k for k in model.state_dict() if k in wanted]


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a first-convolution kernel ``[out, C0, *k]`` to ``in_channels`` input channels.

    One channel sums the kernel over its channels (a grey image seen as C0 equal channels);
    more channels repeat the kernel cyclically and scale it by ``C0 / in_channels`` so the
    activation keeps its magnitude.

    Example:
        >>> adapt_input_channels(torch.ones(4, 3, 3, 3, 3), 1).shape
        torch.Size([4, 1, 3, 3, 3])
        >>> float(adapt_input_channels(torch.ones(4, 3, 1, 1, 1), 6)[0, 5].sum())
        0.5
    """
    old = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_channels / old)
    return weight.repeat(1, repeats, *([1] * (weight.dim() - 2)))[:, :in_channels] * (old / in_channels)


def _prefix_hint(source_keys: list[str], target_keys: list[str]) -> str | None:
    """Suggest a strip_prefix / add_prefix that would match more keys."""
    target = set(target_keys)
    baseline = len(target & set(source_keys))
    best: tuple[int, str] | None = None
    src_prefixes = Counter(k.split(".", 1)[0] + "." for k in source_keys if "." in k)
    tgt_prefixes = Counter(k.split(".", 1)[0] + "." for k in target_keys if "." in k)
    for prefix, _ in src_prefixes.most_common(3):
        hits = sum(1 for k in source_keys if k.startswith(prefix) and k[len(prefix) :] in target)
        if hits > baseline and (best is None or hits > best[0]):
            best = (hits, f"strip_prefix: {prefix!r}")
    for prefix, _ in tgt_prefixes.most_common(3):
        hits = sum(1 for k in source_keys if prefix + k in target)
        if hits > baseline and (best is None or hits > best[0]):
            best = (hits, f"add_prefix: {prefix!r}")
    if best is None:
        return None
    return f"{best[1]} would match {best[0]} tensors (now {baseline})"


def plan_load(
    model: nn.Module,
    tensors: dict[str, torch.Tensor],
    spec: PretrainedSpec,
    *,
    encoder_prefixes: list[str] | None = None,
    head_prefixes: list[str] | None = None,
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Decide, tensor by tensor, what goes into ``model`` (nothing is copied yet).

    Returns:
        ``(values_to_copy, report)``; ``values_to_copy`` already has the network's dtypes.

    Example:
        >>> net = nn.Sequential(nn.Conv3d(1, 2, 3), nn.Conv3d(2, 2, 1))
        >>> values, report = plan_load(net, {"0.weight": torch.ones(2, 3, 3, 3, 3)},
        ...                            PretrainedSpec(source="x.pt", adapt_in_channels=True))
        >>> report.adapted[0][0], values["0.weight"].shape[1]
        ('0.weight', 1)
    """
    mapped, renamed = map_keys(tensors, spec)
    state = model.state_dict()
    alias_keys = set(state) - set(unique_state_keys(model))
    keys = [k for k in state if k not in alias_keys]
    encoder = list(encoder_prefixes) if encoder_prefixes else [""]
    head = list(head_prefixes) if head_prefixes is not None else []
    if spec.reinit_head and head_prefixes is None:
        head = sorted({k.split(".", 1)[0] + "." for k in keys if not is_under(k, encoder)})
    excludes = [re.compile(p) for p in spec.exclude]
    conv_keys = [k for k in keys if k.endswith("weight") and state[k].dim() >= 3]
    first_conv = conv_keys[0] if conv_keys else None
    report = LoadReport(
        source=spec.source, renamed=renamed, encoder_prefixes=encoder if encoder != [""] else []
    )
    values: dict[str, torch.Tensor] = {}
    for key in keys:
        in_encoder = is_under(key, encoder)
        if any(p.search(key) for p in excludes):  # deliberately left out: not counted against the encoder
            report.skipped.append((key, "excluded by model.pretrained.exclude"))
            continue
        report.encoder_total += in_encoder
        if spec.reinit_head and is_under(key, head) and not in_encoder:
            report.skipped.append((key, "head re-initialised (reinit_head)"))
            continue
        if _plan_tensor(key, state, mapped, spec, first_conv, values, report):
            report.encoder_loaded += in_encoder
    report.unexpected = [k for k in mapped if k not in state]
    _add_hints(report, mapped, keys, state, first_conv, values)
    return values, report


def _plan_tensor(
    key: str,
    state: dict[str, torch.Tensor],
    mapped: dict[str, torch.Tensor],
    spec: PretrainedSpec,
    first_conv: str | None,
    values: dict[str, torch.Tensor],
    report: LoadReport,
) -> bool:
    """Plan one tensor: matched, adapted (input channels), missing or shape-mismatched; True when loaded."""
    target = state[key]
    if key not in mapped:
        report.missing.append(key)
        return False
    source = mapped[key]
    if tuple(source.shape) == tuple(target.shape):
        values[key] = source.to(dtype=target.dtype)
        report.matched.append(key)
    elif _adaptable(key, source, target, state, first_conv, mapped) and spec.adapt_in_channels:
        values[key] = adapt_input_channels(source.float(), target.shape[1]).to(dtype=target.dtype)
        report.adapted.append((key, tuple(source.shape), tuple(target.shape)))
    else:
        report.shape_mismatched.append((key, tuple(source.shape), tuple(target.shape)))
        return False
    return True


def _add_hints(
    report: LoadReport,
    mapped: dict[str, torch.Tensor],
    keys: list[str],
    state: dict[str, torch.Tensor],
    first_conv: str | None,
    values: dict[str, torch.Tensor],
) -> None:
    """Hint at a key prefix when little loaded, and at adapt_in_channels when the input convolution differs."""
    if report.encoder_fraction < 0.5 or not values:
        report.hint = _prefix_hint(list(mapped), keys)
    if any(
        _adaptable(k, mapped[k], state[k], state, first_conv, mapped) for k, _, _ in report.shape_mismatched
    ):
        report.hint = (report.hint + "; " if report.hint else "") + (
            "the input convolution has another channel count: set adapt_in_channels: true"
        )


def _adaptable(
    key: str,
    source: torch.Tensor,
    target: torch.Tensor,
    state: dict[str, torch.Tensor],
    first_conv: str | None,
    mapped: dict[str, torch.Tensor],
) -> bool:
    """True for a kernel reading the image (same shape as the first conv's except dim 1)."""
    if first_conv is None or first_conv not in mapped or source.dim() < 3 or source.dim() != target.dim():
        return False
    if source.shape[0] != target.shape[0] or source.shape[2:] != target.shape[2:]:
        return False
    return target.shape[1] == state[first_conv].shape[1] and source.shape[1] == mapped[first_conv].shape[1]


MEDIMG_TASK_PREFIX = "net."


def _is_medimg_task_checkpoint(metadata: dict, tensors: dict[str, torch.Tensor]) -> bool:
    """A Lightning checkpoint of a medimg task: ``hyper_parameters.workflow`` and every key under ``net.``."""
    hparams = metadata.get("hyper_parameters")
    return (
        isinstance(hparams, dict)
        and "workflow" in hparams
        and bool(tensors)
        and all(k.startswith(MEDIMG_TASK_PREFIX) for k in tensors)
    )


def load_pretrained(
    model: nn.Module,
    spec: PretrainedSpec,
    *,
    encoder_prefixes: list[str] | None = None,
    head_prefixes: list[str] | None = None,
) -> LoadReport:
    """Load the weights ``spec`` names into ``model`` and return what happened.

    Args:
        model: The network (built by :func:`~medimg.models.networks.build_network`).
        spec: Source, hash and key mapping.
        encoder_prefixes: Key prefixes of the encoder (``encoder_prefixes(name, model)``); the
            ``min_encoder_fraction`` check counts these tensors. ``None``: every tensor counts.
        head_prefixes: Key prefixes of the head (for ``reinit_head``); ``None``: whatever is
            not in the encoder.

    Returns:
        The :class:`LoadReport` (also logged at INFO level).

    Raises:
        WeightsError: Source missing/unsafe/tampered, or too few encoder tensors loaded (the
            model is left untouched and the message holds the report).

    Example:
        >>> from medimg.models.networks import build_network, encoder_prefixes
        >>> net = build_network("resnet10", in_channels=1, out_channels=2)
        >>> report = load_pretrained(net, PretrainedSpec(source="resnet10.safetensors"),
        ...                          encoder_prefixes=encoder_prefixes("resnet10", net))  # doctest: +SKIP
    """
    resolved, checkpoint = _read_resolved(spec)
    spec, notes = _unwrap_task_checkpoint(resolved.spec, checkpoint)
    values, report = plan_load(
        model, checkpoint.tensors, spec, encoder_prefixes=encoder_prefixes, head_prefixes=head_prefixes
    )
    report.notes.extend(notes)
    report.source = resolved.origin
    report.path = str(resolved.path)
    report.file_format = checkpoint.format + (
        f"[{checkpoint.container_key}]" if checkpoint.container_key else ""
    )
    report.sha256 = spec.sha256
    _check_encoder_fraction(report, spec, resolved.origin)
    state = model.state_dict()
    with torch.no_grad():
        for key, value in values.items():
            state[key].copy_(value)
    log.info("%s", report.format())
    return report


def _read_resolved(spec: PretrainedSpec) -> tuple[ResolvedWeights, Checkpoint]:
    """Resolve the source (download, cache, sha256) and read its tensors; pickle only when allowed."""
    resolved = resolve_weights(spec)
    spec = resolved.spec
    if spec.allow_pickle:
        require_pickle_permission(
            str(resolved.path),
            f"model.pretrained (source {resolved.origin})",
            warn=detect_format(resolved.path) != "safetensors",
        )
    checkpoint = read_checkpoint(
        resolved.path, allow_pickle=spec.allow_pickle, checkpoint_key=spec.checkpoint_key
    )
    return resolved, checkpoint


def _unwrap_task_checkpoint(spec: PretrainedSpec, checkpoint: Checkpoint) -> tuple[PretrainedSpec, list[str]]:
    """A medimg training checkpoint: take the network keys from under the task prefix (unless told)."""
    notes = []
    if _is_medimg_task_checkpoint(checkpoint.metadata, checkpoint.tensors) and not spec.strip_prefix:
        spec = spec.model_copy(update={"strip_prefix": [MEDIMG_TASK_PREFIX]})
        notes.append(f"medimg training checkpoint: network keys taken from under {MEDIMG_TASK_PREFIX!r}")
    return spec, notes


def _check_encoder_fraction(report: LoadReport, spec: PretrainedSpec, origin: str) -> None:
    """Refuse (before anything is copied) when too few encoder tensors would load."""
    if report.encoder_fraction < spec.min_encoder_fraction:
        raise WeightsError(
            f"{origin}: only {report.encoder_loaded} of {report.encoder_total} encoder tensors "
            f"({100 * report.encoder_fraction:.1f}%) were loaded, below min_encoder_fraction "
            f"{spec.min_encoder_fraction:g}; the network was left untouched.\n{report.format()}"
        )


def build_pretrained_network(
    name: str,
    *,
    spatial_dims: int = 3,
    in_channels: int,
    out_channels: int,
    params: dict | None = None,
    pretrained: PretrainedSpec | dict | None = None,
) -> tuple[nn.Module, LoadReport | None]:
    """Build a registered network and, when ``pretrained`` is given, load it (encoder checked).

    Example:
        >>> net, report = build_pretrained_network("unet", in_channels=1, out_channels=2)
        >>> report is None
        True
    """
    from medimg.models.networks import build_network, encoder_prefixes, head_prefixes

    model = build_network(
        name, spatial_dims=spatial_dims, in_channels=in_channels, out_channels=out_channels, **(params or {})
    )
    if pretrained is None:
        return model, None
    spec = pretrained if isinstance(pretrained, PretrainedSpec) else PretrainedSpec.model_validate(pretrained)
    report = load_pretrained(
        model, spec, encoder_prefixes=encoder_prefixes(name, model), head_prefixes=head_prefixes(name, model)
    )
    return model, report
