"""Lenient conversions of DICOM element values: a missing or malformed value becomes ``None``.

Scanner exports hold empty strings, odd multiplicities and, in private tags read
without a dictionary, raw bytes; header reading must not fail on them. Times (TM, DT)
become seconds since midnight.
"""

from __future__ import annotations

from typing import Any


def number(value: Any) -> float | None:
    """A float from a DS/FD/IS value (or its text bytes), ``None`` when absent or malformed.

    Example:
        >>> number("3.5"), number(""), number(b"1000\\\\8"), number("n/a")
        (3.5, None, 1000.0, None)
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").split("\\")[0].strip("\x00 ")
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def integer(value: Any) -> int | None:
    """An int from an IS/US value, ``None`` when absent or malformed.

    Example:
        >>> integer("12"), integer(None)
        (12, None)
    """
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def floats(value: Any, n: int) -> tuple[float, ...] | None:
    """Exactly ``n`` floats from a multi-valued element, else ``None``.

    Example:
        >>> floats(["1", "0", "0"], 3), floats([1, 0], 3)
        ((1.0, 0.0, 0.0), None)
    """
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def dicom_seconds(value: Any) -> float | None:
    """Seconds since midnight of a DICOM TM (``HHMMSS.ffffff``) or DT (``YYYYMMDDHHMMSS.ffffff``) value.

    Example:
        >>> dicom_seconds("101502.5"), dicom_seconds("20220407101502.25")
        (36902.5, 36902.25)
    """
    text = str(value or "").strip().split("+")[0].split("-")[0]
    if len(text) >= 14 and text[:14].isdigit():
        text = text[8:]
    head, _, frac = text.partition(".")
    if len(head) < 6 or not head[:6].isdigit():
        return None
    seconds = int(head[:2]) * 3600 + int(head[2:4]) * 60 + int(head[4:6])
    return seconds + (float(f"0.{frac}") if frac.isdigit() else 0.0)
