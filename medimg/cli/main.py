"""Entry point of the ``medimg`` command.

The parser is built by :mod:`medimg.cli.parser`. Each subcommand lives in its own module ``medimg.cli.<name>`` exposing
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
import logging
import sys
from collections.abc import Sequence

from medimg.cli.output import emit_error, json_mode
from medimg.cli.parser import COMMANDS, UsageError, build_parser
from medimg.errors import (
    EXIT_INPUT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_SOME_FAILED,
    EXIT_USAGE,
    find_medimg_error,
)

__all__ = ["COMMANDS", "build_parser", "main", "one_line"]

log = logging.getLogger("medimg")


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
