"""What ``medimg weights`` does, as functions: list presets and networks, inspect, convert, verify, record, check.

Each function returns ``(document, lines)``: the result as a JSON-ready dict and the same result as
text lines for people (what ``medimg weights ... --json`` and ``medimg weights ...`` print).

Example::

    from medimg.models.weights_tools import weights_spec, inspect_weights
    document, lines = inspect_weights(weights_spec("inspect", "model.ckpt"), keys=5)
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Result = tuple[dict[str, Any], list[str]]


def parse_params(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=JSON`` items as a dict (a value that is not JSON stays text).

    Example:
        >>> parse_params(["feature_size=48", "norm=batch"])
        {'feature_size': 48, 'norm': 'batch'}
    """
    from medimg.errors import ConfigError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=JSON")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def weights_spec(
    action: str,
    source: str,
    allow_pickle: bool = False,
    sha256: str | None = None,
    checkpoint_key: str | None = None,
    **extra: Any,
):
    """A :class:`~medimg.config.weights.PretrainedSpec`; a ConfigError names ``action`` when it is invalid."""
    from pydantic import ValidationError

    from medimg.config.weights import PretrainedSpec
    from medimg.errors import ConfigError

    fields = {"source": source, "allow_pickle": allow_pickle, **extra}
    for name, value in (("sha256", sha256), ("checkpoint_key", checkpoint_key)):
        if value:
            fields[name] = value
    try:
        return PretrainedSpec(**fields)
    except ValidationError as exc:
        raise ConfigError(f"weights {action}: {exc}") from None


def list_weights() -> Result:
    """The named weight presets and the available networks."""
    from medimg.models.networks import available_networks, network_info
    from medimg.models.presets import WEIGHT_PRESETS

    presets = [WEIGHT_PRESETS.get(n) for n in WEIGHT_PRESETS.names()]
    networks = [network_info(n) for n in available_networks()]
    document = {
        "presets": [
            {
                "name": p.name,
                "source": p.source,
                "network": p.network,
                "network_params": p.network_params,
                "in_channels": p.in_channels,
                "sha256": p.sha256,
                "description": p.description,
            }
            for p in presets
        ],
        "networks": [{"name": n.name, "task": n.task, "params": sorted(n.defaults)} for n in networks],
    }
    lines = ["Weight presets (model.pretrained.source: preset:<name>)"]
    for p in presets:
        if p.sha256:
            pinned = "sha256 pinned"
        else:
            pinned = "needs your sha256" if p.source.startswith("url:") else "local cache"
        lines.append(f"  {p.name:<22} {p.network:<12} in={p.in_channels}  {pinned:<24} {p.description}")
    lines.append("\nNetworks (model.network)")
    lines += [f"  {n.name:<16} {n.task:<15} {n.description}" for n in networks]
    return document, lines


def describe_networks(name: str | None = None) -> Result:
    """One network's (or every network's) parameters and defaults."""
    from medimg.models.networks import available_networks, network_info

    infos = [network_info(n) for n in ([name] if name else available_networks())]
    document = {
        "networks": [
            {
                "name": i.name,
                "task": i.task,
                "description": i.description,
                "defaults": dict(sorted(i.defaults.items())),
            }
            for i in infos
        ]
    }
    lines = []
    for info in infos:
        lines.append(f"{info.name} ({info.task}): {info.description}")
        lines += [f"    {key} = {value!r}" for key, value in sorted(info.defaults.items())]
    return document, lines


def inspect_weights(spec, keys: int = 0) -> Result:
    """Tensor count, dtypes and top-level modules of a checkpoint, and its first ``keys`` keys."""
    from collections import Counter

    from medimg.models.checkpoint import read_checkpoint
    from medimg.models.sources import resolve_weights

    resolved = resolve_weights(spec)
    ckpt = read_checkpoint(
        resolved.path, allow_pickle=spec.allow_pickle, checkpoint_key=resolved.spec.checkpoint_key
    )
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in ckpt.tensors.values())
    modules = Counter(k.split(".", 1)[0] for k in ckpt.tensors)
    n_params = sum(t.numel() for t in ckpt.tensors.values())
    first = list(ckpt.tensors)[:keys]
    dtype = {k: str(ckpt.tensors[k].dtype).replace("torch.", "") for k in first}
    document = {
        "file": str(ckpt.path), "format": ckpt.format, "container_key": ckpt.container_key,
        "tensors": len(ckpt.tensors), "parameters": n_params, "dtypes": dict(dtypes.most_common()),
        "top_level": dict(modules.most_common()), "metadata": sorted(map(str, ckpt.metadata or {})),
        "keys": [{"key": k, "shape": list(ckpt.tensors[k].shape), "dtype": dtype[k]} for k in first],
    }  # fmt: skip
    lines = [
        f"file:       {ckpt.path}",
        f"format:     {ckpt.format}"
        + (f" (state dict under {ckpt.container_key!r})" if ckpt.container_key else ""),
        f"tensors:    {len(ckpt.tensors)}  parameters: {n_params:,}",
        f"dtypes:     {', '.join(f'{d} x{c}' for d, c in dtypes.most_common())}",
        f"top level:  {', '.join(f'{m} ({c})' for m, c in modules.most_common(20))}",
    ]
    if ckpt.metadata:
        lines.append(f"also holds: {', '.join(sorted(map(str, ckpt.metadata)))}")
    lines += [f"  {k}  {list(ckpt.tensors[k].shape)}  {dtype[k]}" for k in first]
    return document, lines


def convert_weights(spec, output: str | Path) -> Result:
    """Write a checkpoint's tensors (keys mapped as ``spec`` says) to ``output`` (.safetensors, atomic)."""
    from safetensors.torch import save_file

    from medimg.io.atomic import atomic_write
    from medimg.models.checkpoint import read_checkpoint
    from medimg.models.download import sha256_of
    from medimg.models.loading import map_keys
    from medimg.models.sources import resolve_weights

    resolved = resolve_weights(spec)
    ckpt = read_checkpoint(
        resolved.path, allow_pickle=spec.allow_pickle, checkpoint_key=resolved.spec.checkpoint_key
    )
    tensors, renamed = map_keys(ckpt.tensors, spec)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_write(output, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"converted_from": resolved.path.name, "format": ckpt.format})
    digest = sha256_of(output)
    document = {"output": str(output), "tensors": len(tensors), "renamed": renamed, "sha256": digest}
    return document, [f"wrote {output}: {len(tensors)} tensors ({renamed} keys renamed), sha256 {digest}"]


def verify_file(path: str | Path, sha256: str | None = None) -> Result:
    """Check a file's sha256 (print it when ``sha256`` is not given)."""
    from medimg.errors import WeightsError
    from medimg.models.download import sha256_of, verify_sha256

    if not Path(path).is_file():
        raise WeightsError(f"{path}: file not found")
    if not sha256:
        digest = sha256_of(path)
        return {"path": str(path), "sha256": digest}, [f"{digest}  {path}"]
    verify_sha256(path, sha256)
    return {"path": str(path), "sha256": sha256.lower(), "verified": True}, [f"OK {path}"]


def record_folder(folder: str | Path, force: bool = False) -> Result:
    """Write model.json (sha256 of weights, workflow and any postprocessing) for a model folder you trust."""
    from medimg.errors import WeightsError
    from medimg.models.record import POSTPROCESS_FILE, RECORD_FILE, WEIGHTS_FILE, WORKFLOW_FILE, write_record

    folder = Path(folder)
    for name in (WEIGHTS_FILE, WORKFLOW_FILE):
        if not (folder / name).is_file():
            raise WeightsError(
                f"{folder / name}: not found; a trained model folder holds {WORKFLOW_FILE} and {WEIGHTS_FILE}"
            )
    if (folder / RECORD_FILE).exists() and not force:
        raise WeightsError(
            f"{folder / RECORD_FILE}: already exists; its hashes are what every load checks. Replace it "
            f"only if you trust the folder's current files (--force)"
        )
    optional = (POSTPROCESS_FILE,) if (folder / POSTPROCESS_FILE).is_file() else ()
    record = write_record(folder, (WEIGHTS_FILE, WORKFLOW_FILE, *optional))
    files = {str(folder / name): digest for name, digest in record["files"].items()}
    lines = [f"{digest}  {path}" for path, digest in files.items()]
    return {"record": str(folder / RECORD_FILE), "files": files}, [*lines, f"wrote {folder / RECORD_FILE}"]


def check_weights(
    network: str,
    spec_fields: dict[str, Any],
    params: Sequence[str] = (),
    in_channels: int = 1,
    out_channels: int = 2,
    spatial_dims: int = 3,
) -> Result:
    """Dry-run loading weights into a network; the load report (``spec_fields`` go to :func:`weights_spec`)."""
    from medimg.models.loading import load_pretrained
    from medimg.models.networks import build_network, encoder_prefixes, head_prefixes

    model = build_network(
        network,
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        **parse_params(params),
    )
    report = load_pretrained(
        model,
        weights_spec("check", **spec_fields),
        encoder_prefixes=encoder_prefixes(network, model),
        head_prefixes=head_prefixes(network, model),
    )
    return report.to_dict(), [report.format()]
