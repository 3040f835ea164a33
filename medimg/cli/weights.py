"""``medimg weights``: list presets and networks, inspect, convert, verify and test-load checkpoints.

Examples::

    medimg weights list
    medimg weights networks unet
    medimg weights inspect model.ckpt
    medimg weights convert model.ckpt encoder.safetensors --strip-prefix net.
    medimg weights verify encoder.safetensors 3f1c...e9
    medimg weights check preset:merlin-encoder --network merlin --in-channels 1 --adapt-in-channels
    medimg weights record runs/old_study/model
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from medimg.cli.output import add_json_flag, emit

DESCRIPTION = (
    "Pretrained weights: list the named presets and networks, inspect a checkpoint without running code "
    "from it, convert it to .safetensors (optionally re-mapping keys), verify its sha256, or dry-run a load "
    "into a network and print the load report. A trained model folder carries model.json, the sha256 of its "
    "weights and workflow, checked at every load; `record` writes it for a folder you trust."
)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``weights`` command and its actions to the ``medimg`` parser."""
    parser = subparsers.add_parser(
        "weights", help="list, inspect, convert, verify, check pretrained weights", description=DESCRIPTION
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    lister = actions.add_parser("list", help="named weight presets and available networks")

    networks = actions.add_parser("networks", help="networks (model.name) with their parameters and defaults")
    networks.add_argument("name", nargs="?", help="show one network's parameters and defaults")

    inspect = actions.add_parser("inspect", help="tensor count, dtypes, top-level modules of a checkpoint")
    inspect.add_argument("source", help="file path or source (url:, bundle:, hf:, package:, runs:/, preset:)")
    inspect.add_argument(
        "--checkpoint-key", help="key holding the state dict inside the file (auto-detected)"
    )
    inspect.add_argument(
        "--allow-pickle", action="store_true", help="allow full unpickling (trusted files only)"
    )
    inspect.add_argument("--sha256", help="expected sha256 (required for url: sources)")
    inspect.add_argument(
        "--keys", type=int, default=0, metavar="N", help="also print the first N keys and shapes"
    )

    convert = actions.add_parser("convert", help="write a checkpoint's tensors to .safetensors")
    convert.add_argument("source", help="input file path or source")
    convert.add_argument("output", help="output .safetensors file (written atomically)")
    convert.add_argument("--checkpoint-key", help="key holding the state dict inside the file")
    convert.add_argument(
        "--strip-prefix", action="append", default=[], help="remove this key prefix (repeatable)"
    )
    convert.add_argument("--add-prefix", default="", help="prefix added to every key")
    convert.add_argument(
        "--allow-pickle", action="store_true", help="allow full unpickling (trusted files only)"
    )
    convert.add_argument("--sha256", help="expected sha256 of the input")

    verify = actions.add_parser("verify", help="check a file's sha256")
    verify.add_argument("path", help="file to hash")
    verify.add_argument("sha256", nargs="?", help="expected hex sha256 (omit to print the hash)")

    record = actions.add_parser(
        "record", help="write model.json (sha256 of weights and workflow) for a model folder you trust"
    )
    record.add_argument("folder", help="trained model folder (workflow.yaml + model.safetensors)")
    record.add_argument(
        "--force", action="store_true", help="replace an existing model.json (its hashes are lost)"
    )

    check = actions.add_parser("check", help="dry-run loading into a network and print the load report")
    check.add_argument("source", help="file path or source")
    check.add_argument("--network", required=True, help="network name (see: medimg weights list)")
    check.add_argument("--in-channels", type=int, default=1, help="network input channels (default 1)")
    check.add_argument("--out-channels", type=int, default=2, help="network outputs (default 2)")
    check.add_argument("--spatial-dims", type=int, default=3, choices=(2, 3), help="2 or 3 (default 3)")
    check.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="network parameter, value as JSON (repeatable), e.g. --param feature_size=48",
    )
    check.add_argument("--sha256", help="expected sha256")
    check.add_argument("--checkpoint-key", help="key holding the state dict inside the file")
    check.add_argument(
        "--strip-prefix", action="append", default=[], help="remove this key prefix (repeatable)"
    )
    check.add_argument("--add-prefix", default="", help="prefix added to every key")
    check.add_argument(
        "--adapt-in-channels", action="store_true", help="adapt the first conv to --in-channels"
    )
    check.add_argument("--reinit-head", action="store_true", help="never load the head")
    check.add_argument(
        "--min-encoder-fraction", type=float, default=0.9, help="fail below this (default 0.9)"
    )
    check.add_argument(
        "--allow-pickle", action="store_true", help="allow full unpickling (trusted files only)"
    )
    for action in (lister, networks, inspect, convert, verify, record, check):
        add_json_flag(action)
    return parser


def _spec(args: argparse.Namespace, **extra: Any):
    from pydantic import ValidationError

    from medimg.config.weights import PretrainedSpec
    from medimg.errors import ConfigError

    fields = {"source": args.source, "allow_pickle": args.allow_pickle, **extra}
    for name in ("sha256", "checkpoint_key"):
        if getattr(args, name, None):
            fields[name] = getattr(args, name)
    try:
        return PretrainedSpec(**fields)
    except ValidationError as exc:
        raise ConfigError(f"weights {args.action}: {exc}") from None


def _list(args: argparse.Namespace) -> int:
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
    emit(args, document, lines)
    return 0


def _networks(args: argparse.Namespace) -> int:
    from medimg.models.networks import available_networks, network_info

    infos = [network_info(name) for name in ([args.name] if args.name else available_networks())]
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
    emit(args, document, lines)
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from collections import Counter

    from medimg.models.checkpoint import read_checkpoint
    from medimg.models.sources import resolve_weights

    resolved = resolve_weights(_spec(args))
    ckpt = read_checkpoint(
        resolved.path, allow_pickle=args.allow_pickle, checkpoint_key=resolved.spec.checkpoint_key
    )
    dtypes = Counter(str(t.dtype).replace("torch.", "") for t in ckpt.tensors.values())
    modules = Counter(k.split(".", 1)[0] for k in ckpt.tensors)
    n_params = sum(t.numel() for t in ckpt.tensors.values())
    keys = list(ckpt.tensors)[: args.keys]
    dtype = {k: str(ckpt.tensors[k].dtype).replace("torch.", "") for k in keys}
    document = {
        "file": str(ckpt.path), "format": ckpt.format, "container_key": ckpt.container_key,
        "tensors": len(ckpt.tensors), "parameters": n_params, "dtypes": dict(dtypes.most_common()),
        "top_level": dict(modules.most_common()), "metadata": sorted(map(str, ckpt.metadata or {})),
        "keys": [{"key": k, "shape": list(ckpt.tensors[k].shape), "dtype": dtype[k]} for k in keys],
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
    lines += [f"  {k}  {list(ckpt.tensors[k].shape)}  {dtype[k]}" for k in keys]
    emit(args, document, lines)
    return 0


def _convert(args: argparse.Namespace) -> int:
    from safetensors.torch import save_file

    from medimg.io.atomic import atomic_write
    from medimg.models.checkpoint import read_checkpoint
    from medimg.models.download import sha256_of
    from medimg.models.loading import map_keys
    from medimg.models.sources import resolve_weights

    spec = _spec(args, strip_prefix=args.strip_prefix, add_prefix=args.add_prefix)
    resolved = resolve_weights(spec)
    ckpt = read_checkpoint(
        resolved.path, allow_pickle=args.allow_pickle, checkpoint_key=resolved.spec.checkpoint_key
    )
    tensors, renamed = map_keys(ckpt.tensors, spec)
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    with atomic_write(args.output, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"converted_from": resolved.path.name, "format": ckpt.format})
    digest = sha256_of(args.output)
    document = {"output": str(args.output), "tensors": len(tensors), "renamed": renamed, "sha256": digest}
    emit(
        args,
        document,
        [f"wrote {args.output}: {len(tensors)} tensors ({renamed} keys renamed), sha256 {digest}"],
    )
    return 0


def _verify(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medimg.errors import WeightsError
    from medimg.models.download import sha256_of, verify_sha256

    if not Path(args.path).is_file():
        raise WeightsError(f"{args.path}: file not found")
    if not args.sha256:
        digest = sha256_of(args.path)
        emit(args, {"path": str(args.path), "sha256": digest}, [f"{digest}  {args.path}"])
        return 0
    verify_sha256(args.path, args.sha256)
    emit(args, {"path": str(args.path), "sha256": args.sha256.lower(), "verified": True}, [f"OK {args.path}"])
    return 0


def _record(args: argparse.Namespace) -> int:
    from pathlib import Path

    from medimg.errors import WeightsError
    from medimg.models.record import RECORD_FILE, WEIGHTS_FILE, WORKFLOW_FILE, write_record

    folder = Path(args.folder)
    for name in (WEIGHTS_FILE, WORKFLOW_FILE):
        if not (folder / name).is_file():
            raise WeightsError(
                f"{folder / name}: not found; a trained model folder holds {WORKFLOW_FILE} and {WEIGHTS_FILE}"
            )
    if (folder / RECORD_FILE).exists() and not args.force:
        raise WeightsError(
            f"{folder / RECORD_FILE}: already exists; its hashes are what every load checks. Replace it "
            f"only if you trust the folder's current files (--force)"
        )
    record = write_record(folder)
    files = {str(folder / name): digest for name, digest in record["files"].items()}
    lines = [f"{digest}  {path}" for path, digest in files.items()]
    emit(
        args, {"record": str(folder / RECORD_FILE), "files": files}, [*lines, f"wrote {folder / RECORD_FILE}"]
    )
    return 0


def _check(args: argparse.Namespace) -> int:
    from medimg.errors import ConfigError
    from medimg.models.loading import load_pretrained
    from medimg.models.networks import build_network, encoder_prefixes, head_prefixes

    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--param {item!r}: expected KEY=JSON")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    model = build_network(
        args.network,
        spatial_dims=args.spatial_dims,
        in_channels=args.in_channels,
        out_channels=args.out_channels,
        **params,
    )
    spec = _spec(
        args,
        strip_prefix=args.strip_prefix,
        add_prefix=args.add_prefix,
        adapt_in_channels=args.adapt_in_channels,
        reinit_head=args.reinit_head,
        min_encoder_fraction=args.min_encoder_fraction,
    )
    report = load_pretrained(
        model,
        spec,
        encoder_prefixes=encoder_prefixes(args.network, model),
        head_prefixes=head_prefixes(args.network, model),
    )
    emit(args, report.to_dict(), [report.format()])
    return 0


def execute(args: argparse.Namespace) -> int:
    """Run the chosen ``weights`` action; return the exit code."""
    return {
        "list": _list,
        "networks": _networks,
        "inspect": _inspect,
        "convert": _convert,
        "verify": _verify,
        "check": _check,
        "record": _record,
    }[args.action](args)
