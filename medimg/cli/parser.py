"""The ``medimg`` argument parser: every command's ``register()``, and usage errors that keep their message.

:func:`medimg.cli.main.main` parses with :func:`build_parser`; a usage error raises
:class:`UsageError` (exit code 2) so that ``--json`` can print its error document.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from medimg import __version__
from medimg.errors import EXIT_USAGE

# Order is the order shown in ``medimg --help``.
COMMANDS: tuple[str, ...] = (
    "synth",
    "plan",
    "run",
    "tune",
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
# Commands that read a study workflow, which may ask for model.pretrained.allow_pickle.
WORKFLOW_COMMANDS: tuple[str, ...] = ("run", "reproduce", "tune")
ALLOW_PICKLE_HELP = (
    "permit model.pretrained.allow_pickle in the workflow: unpickle the pretrained weights file, which "
    "runs any code inside it (only for files you trust; same as MEDIMG_ALLOW_PICKLE=1)"
)


class UsageError(SystemExit):
    """argparse's usage error: exit code 2, with its message kept for ``--json``'s error document."""

    def __init__(self, message: str) -> None:
        super().__init__(EXIT_USAGE)
        self.message = message


class _Parser(argparse.ArgumentParser):
    """argparse's parser (and, by inheritance, every subcommand's), whose usage error keeps its message."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """Build the full argument parser (every subcommand registered)."""
    parser = _Parser(
        prog="medimg",
        description="Deep learning on medical images: DICOM/NIfTI in, trained models, "
        "predictions in the scan's own geometry, MLflow lineage, reports.",
        epilog="exit codes: 0 done; 1 some cases failed (count in the summary); 2 usage error; "
        "3 data, configuration or weights error (one line on stderr); 130 interrupted. "
        "With --json (every command that prints a result) stdout holds one JSON document: the result, "
        'or {"command", "error", "exit_code"} when the command stopped with 2, 3 or 130',
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
        if name in WORKFLOW_COMMANDS:
            sub_parser.add_argument("--allow-pickle", action="store_true", help=ALLOW_PICKLE_HELP)
        sub_parser.set_defaults(_execute=module.execute)
    return parser
