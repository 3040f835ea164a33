"""What a command prints as its result: text lines for people, or one JSON document with ``--json``.

With ``--json`` stdout holds the JSON document and nothing else, so
``medimg scan DIR --json | jq .usable`` works: :func:`medimg.cli.main.main` runs the command
inside :func:`json_mode`, which sends everything else printed (progress bars, notes, a
library's ``print``) to stderr, and :func:`emit` writes the document to the real stdout. A
command that fails with ``--json`` prints ``{"command": ..., "error": ..., "exit_code": ...}``
instead (:func:`emit_error`), with the same exit code as without ``--json``. NaN and
infinite numbers become ``null``; paths and other objects are written as text
(:func:`medimg.cli.json_text.to_json`).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO

from medimg.cli.json_text import to_json

__all__ = ["add_json_flag", "emit", "emit_error", "json_mode", "to_json", "wants_json"]

JSON_HELP = "print the result as one JSON document on stdout (nothing else; logs go to stderr)"


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` to a command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_json_flag(p); p.parse_args(["--json"]).json
        True
    """
    parser.add_argument("--json", action="store_true", help=JSON_HELP)


def wants_json(args: argparse.Namespace) -> bool:
    """Whether the command ran with ``--json``.

    Example:
        >>> wants_json(argparse.Namespace(json=True)), wants_json(argparse.Namespace())
        (True, False)
    """
    return bool(getattr(args, "json", False))


def _stdout(args: argparse.Namespace) -> TextIO:
    """The stream the JSON document goes to: stdout as it was before :func:`json_mode` redirected it."""
    return getattr(args, "_json_stdout", None) or sys.stdout


@contextlib.contextmanager
def json_mode(args: argparse.Namespace) -> Iterator[None]:
    """While a ``--json`` command runs, send whatever it prints to stderr; :func:`emit` still reaches stdout.

    Lightning's progress bar and other libraries write to ``sys.stdout``; inside this block
    they write to stderr, so stdout holds nothing but the document. Without ``--json`` it does
    nothing.

    Example:
        >>> args = argparse.Namespace(json=False)
        >>> with json_mode(args):
        ...     emit(args, {"n": 1}, ["1 case"])
        1 case
    """
    if not wants_json(args):
        yield
        return
    args._json_stdout = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()


def options(args: argparse.Namespace, names: Iterable[str], **renamed: str) -> dict[str, Any]:
    """``args`` as a library function's keywords: ``names`` as they are, ``renamed`` keyword=arg.

    >>> options(argparse.Namespace(lr=0.1, param=["a=1"]), ["lr"], params="param")
    {'lr': 0.1, 'params': ['a=1']}
    """
    return {**{n: getattr(args, n) for n in names}, **{k: getattr(args, v) for k, v in renamed.items()}}


def emit(args: argparse.Namespace, document: Mapping[str, Any], lines: Iterable[str]) -> None:
    """Print ``lines`` for people, or ``document`` as JSON when the command ran with ``--json``.

    Example:
        >>> emit(argparse.Namespace(json=False), {"n": 2}, ["2 cases"])
        2 cases
    """
    if wants_json(args):
        stream = _stdout(args)
        print(to_json(document), file=stream, flush=True)
        args._json_emitted = True
    else:
        for line in lines:
            print(line)


def emit_error(args: argparse.Namespace, message: str, exit_code: int) -> None:
    """With ``--json``, the JSON document of a failed command (unless its result was already printed).

    The one-line message on stderr stays as it is; this adds its machine-readable twin on stdout.

    Example:
        >>> emit_error(argparse.Namespace(json=True, command="scan"), "x: folder not found", 3)
        {
          "command": "scan",
          "error": "x: folder not found",
          "exit_code": 3
        }
    """
    if wants_json(args) and not getattr(args, "_json_emitted", False):
        document = {"command": getattr(args, "command", None), "error": message, "exit_code": exit_code}
        emit(args, document, [])
