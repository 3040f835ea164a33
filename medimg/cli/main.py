"""Entry point of the ``medimg`` command.

Each subcommand lives in its own module ``medimg.cli.<name>`` exposing
``register(subparsers) -> argparse.ArgumentParser`` (cheap: argparse only) and
``execute(args) -> int`` (does the work; heavy imports happen here). Tests call
:func:`main` directly with an ``argv`` list.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from medimg import __version__
from medimg.errors import MedimgError

# Order is the order shown in ``medimg --help``.
COMMANDS: tuple[str, ...] = (
    "synth",
    "run",
    "evaluate",
    "predict",
    "scan",
    "convert",
    "deid",
    "explain",
    "reproduce",
    "pretrain",
    "weights",
    "schema",
)

log = logging.getLogger("medimg")


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (every subcommand registered)."""
    parser = argparse.ArgumentParser(
        prog="medimg",
        description="Deep learning on medical images: DICOM/NIfTI in, trained models, "
        "predictions in the scan's own geometry, MLflow lineage, reports.",
    )
    parser.add_argument("--version", action="version", version=f"medimg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"medimg.cli.{name}")
        except ModuleNotFoundError as exc:  # a command whose module is not present
            if exc.name == f"medimg.cli.{name}":
                continue
            raise
        sub_parser = module.register(sub)
        sub_parser.set_defaults(_execute=module.execute)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medimg`` command line and return its exit code.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
    """
    parser = build_parser()
    args = parser.parse_args(list(argv) if argv is not None else None)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "_execute", None):
        parser.print_help()
        return 2
    try:
        return int(args._execute(args) or 0)
    except MedimgError as exc:
        print(f"medimg {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
