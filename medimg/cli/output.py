"""What a command prints as its result: text lines for people, or one JSON document with ``--json``.

With ``--json`` stdout holds the JSON document and nothing else (logs and progress bars go
to stderr), so ``medimg scan DIR --json | jq .usable`` works. NaN and infinite numbers
become ``null``; paths and other objects are written as text.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """Add ``--json`` to a command's parser.

    Example:
        >>> p = argparse.ArgumentParser(); add_json_flag(p); p.parse_args(["--json"]).json
        True
    """
    parser.add_argument(
        "--json", action="store_true", help="print the result as one JSON document on stdout (nothing else)"
    )


def _plain(value: Any) -> Any:
    """JSON-ready copy: NaN/inf -> None, tuples and sets -> lists, NumPy scalars -> Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def to_json(document: Mapping[str, Any]) -> str:
    """The document as strict JSON text (no NaN), indented.

    Example:
        >>> to_json({"dice": float("nan"), "n": 3})
        '{\\n  "dice": null,\\n  "n": 3\\n}'
    """
    return json.dumps(_plain(document), indent=2, allow_nan=False)


def emit(args: argparse.Namespace, document: Mapping[str, Any], lines: Iterable[str]) -> None:
    """Print ``lines`` for people, or ``document`` as JSON when the command ran with ``--json``.

    Example:
        >>> emit(argparse.Namespace(json=False), {"n": 2}, ["2 cases"])
        2 cases
    """
    if getattr(args, "json", False):
        print(to_json(document))
    else:
        for line in lines:
            print(line)
