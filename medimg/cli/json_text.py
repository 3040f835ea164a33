"""A command's result as strict JSON text: NaN and infinite numbers become ``null``, paths and other objects text."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any


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
