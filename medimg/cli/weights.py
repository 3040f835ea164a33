"""``medimg weights``: list presets and networks, inspect, convert, verify and test-load checkpoints.

The work is done by :mod:`medimg.models.weights_tools`. Examples::

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
from typing import Any

from medimg.cli.output import add_json_flag, emit

DESCRIPTION = (
    "Pretrained weights: list the named presets and networks, inspect a checkpoint without running code "
    "from it, convert it to .safetensors (optionally re-mapping keys), verify its sha256, or dry-run a load "
    "into a network and print the load report. A trained model folder carries model.json, the sha256 of its "
    "weights and workflow, checked at every load; `record` writes it for a folder you trust."
)
_KEY = "key holding the state dict inside the file"
_PICKLE = {"action": "store_true", "help": "allow full unpickling (trusted files only)"}
_STRIP = {"action": "append", "default": [], "help": "remove this key prefix (repeatable)"}
_ADD = {"default": "", "help": "prefix added to every key"}
# action: (help, [(flag, argparse keywords), ...]) in the order --help shows them
ACTIONS: dict[str, tuple[str, list[tuple[str, dict[str, Any]]]]] = {
    "list": ("named weight presets and available networks", []),
    "networks": (
        "networks (model.name) with their parameters and defaults",
        [("name", {"nargs": "?", "help": "show one network's parameters and defaults"})],
    ),
    "inspect": ("tensor count, dtypes, top-level modules of a checkpoint", [
        ("source", {"help": "file path or source (url:, bundle:, hf:, package:, runs:/, preset:)"}),
        ("--checkpoint-key", {"help": f"{_KEY} (auto-detected)"}), ("--allow-pickle", _PICKLE),
        ("--sha256", {"help": "expected sha256 (required for url: sources)"}),
        ("--keys", {"type": int, "default": 0, "metavar": "N", "help": "also print the first N keys and shapes"}),
    ]),
    "convert": ("write a checkpoint's tensors to .safetensors", [
        ("source", {"help": "input file path or source"}),
        ("output", {"help": "output .safetensors file (written atomically)"}),
        ("--checkpoint-key", {"help": _KEY}), ("--strip-prefix", _STRIP), ("--add-prefix", _ADD),
        ("--allow-pickle", _PICKLE), ("--sha256", {"help": "expected sha256 of the input"}),
    ]),
    "verify": ("check a file's sha256", [
        ("path", {"help": "file to hash"}),
        ("sha256", {"nargs": "?", "help": "expected hex sha256 (omit to print the hash)"}),
    ]),
    "record": ("write model.json (sha256 of weights and workflow) for a model folder you trust", [
        ("folder", {"help": "trained model folder (workflow.yaml + model.safetensors)"}),
        ("--force", {"action": "store_true", "help": "replace an existing model.json (its hashes are lost)"}),
    ]),
    "check": ("dry-run loading into a network and print the load report", [
        ("source", {"help": "file path or source"}),
        ("--network", {"required": True, "help": "network name (see: medimg weights list)"}),
        ("--in-channels", {"type": int, "default": 1, "help": "network input channels (default 1)"}),
        ("--out-channels", {"type": int, "default": 2, "help": "network outputs (default 2)"}),
        ("--spatial-dims", {"type": int, "default": 3, "choices": (2, 3), "help": "2 or 3 (default 3)"}),
        ("--param", {"action": "append", "default": [], "metavar": "KEY=JSON",
                     "help": "network parameter, value as JSON (repeatable), e.g. --param feature_size=48"}),
        ("--sha256", {"help": "expected sha256"}), ("--checkpoint-key", {"help": _KEY}),
        ("--strip-prefix", _STRIP), ("--add-prefix", _ADD),
        ("--adapt-in-channels", {"action": "store_true", "help": "adapt the first conv to --in-channels"}),
        ("--reinit-head", {"action": "store_true", "help": "never load the head"}),
        ("--min-encoder-fraction", {"type": float, "default": 0.9, "help": "fail below this (default 0.9)"}),
        ("--allow-pickle", _PICKLE),
    ]),
}  # fmt: skip


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``weights`` command and its actions to the ``medimg`` parser."""
    parser = subparsers.add_parser(
        "weights", help="list, inspect, convert, verify, check pretrained weights", description=DESCRIPTION
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, (help_text, options) in ACTIONS.items():
        action = actions.add_parser(name, help=help_text)
        for flag, keywords in options:
            action.add_argument(flag, **keywords)
        add_json_flag(action)
    return parser


def _spec_fields(args: argparse.Namespace, *extra: str) -> dict[str, Any]:
    names = ("source", "allow_pickle", "sha256", "checkpoint_key", *extra)
    return {name: getattr(args, name, None) for name in names}  # None: not an option of this action


def execute(args: argparse.Namespace) -> int:
    """Run the chosen ``weights`` action; return the exit code."""
    from medimg.models import weights_tools as tools

    def spec(*extra: str) -> Any:
        return tools.weights_spec(args.action, **_spec_fields(args, *extra))

    prefixes = "strip_prefix", "add_prefix"
    check = _spec_fields(args, *prefixes, "adapt_in_channels", "reinit_head", "min_encoder_fraction")
    shape = [getattr(args, name, None) for name in ("in_channels", "out_channels", "spatial_dims")]
    calls = {
        "list": lambda: tools.list_weights(),
        "networks": lambda: tools.describe_networks(args.name),
        "inspect": lambda: tools.inspect_weights(spec(), args.keys),
        "convert": lambda: tools.convert_weights(spec(*prefixes), args.output),
        "verify": lambda: tools.verify_file(args.path, args.sha256),
        "record": lambda: tools.record_folder(args.folder, force=args.force),
        "check": lambda: tools.check_weights(args.network, check, args.param, *shape),
    }
    document, lines = calls[args.action]()
    emit(args, document, lines)
    return 0
