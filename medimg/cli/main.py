"""Entry point of the ``medimg`` command.

Each subcommand lives in its own module ``medimg.cli.<name>`` exposing
``register(subparsers) -> argparse.ArgumentParser`` (cheap: argparse only) and
``execute(args) -> int`` (does the work; heavy imports happen here). Tests call
:func:`main` directly with an ``argv`` list.

Exit codes (constants in :mod:`medimg.errors`, table in ``docs/refusals.md``): 0 done;
1 some cases failed (the count is in the printed summary); 2 usage error (argparse);
3 data, configuration or weights error, printed as one line
``medimg <command>: error: <message>``; 130 interrupted. A user's mistake never
prints a traceback, also when MONAI or Lightning wrapped the medimg error.

With ``--json`` (every command that prints a result has it) stdout holds exactly one JSON
document: the result, or ``{"command", "error", "exit_code"}`` when the command failed with
code 2, 3 or 130 (the one-line message still goes to stderr); see :mod:`medimg.cli.output`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import NoReturn

from medimg import __version__
from medimg.cli.output import emit_error, json_mode
from medimg.errors import (
    EXIT_INPUT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    find_medimg_error,
)

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
# Commands that read a study workflow, which may ask for model.pretrained.allow_pickle.
WORKFLOW_COMMANDS: tuple[str, ...] = ("run", "reproduce")
ALLOW_PICKLE_HELP = (
    "permit model.pretrained.allow_pickle in the workflow: unpickle the pretrained weights file, which "
    "runs any code inside it (only for files you trust; same as MEDIMG_ALLOW_PICKLE=1)"
)

log = logging.getLogger("medimg")


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


def one_line(message: str) -> str:
    """A possibly multi-line message joined into one line (``; `` between its lines).

    Example:
        >>> one_line("invalid workflow\\nx.yaml: optim.lrr: unknown key")
        'invalid workflow; x.yaml: optim.lrr: unknown key'
    """
    return "; ".join(line.strip() for line in str(message).splitlines() if line.strip())


def _run(args: argparse.Namespace) -> int:
    from medimg.config.trust import pickle_allowed_by_user

    with json_mode(args):
        if getattr(args, "allow_pickle", False):
            with pickle_allowed_by_user():
                return int(args._execute(args) or 0)
        return int(args._execute(args) or 0)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv``; a usage error with ``--json`` also prints its JSON document, then exits 2."""
    try:
        return parser.parse_args(argv)
    except UsageError as exc:
        if "--json" in argv:
            command = next((a for a in argv if a in COMMANDS), None)
            emit_error(argparse.Namespace(json=True, command=command), exc.message, EXIT_USAGE)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``medimg`` command line and return its exit code.

    Example:
        >>> main(["--version"])  # doctest: +SKIP
    """
    from medimg.telemetry import telemetry_off_by_default

    telemetry_off_by_default()
    parser = build_parser()
    args = _parse(parser, list(argv) if argv is not None else sys.argv[1:])
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "_execute", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        code = _run(args)
    except KeyboardInterrupt:
        print(f"medimg {args.command}: interrupted", file=sys.stderr)
        emit_error(args, "interrupted", EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
    except Exception as exc:
        error = find_medimg_error(exc)
        if error is None:
            raise  # a bug in medimg: the traceback is what a report needs
        log.debug("%s", args.command, exc_info=exc)
        message = one_line(str(error))
        print(f"medimg {args.command}: error: {message}", file=sys.stderr)
        emit_error(args, message, EXIT_INPUT_ERROR)
        return EXIT_INPUT_ERROR
    return EXIT_OK if code == 0 else EXIT_SOME_FAILED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
