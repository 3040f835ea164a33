"""Wall-clock durations in workflows: ``90s``, ``20m``, ``8h``, ``1d`` (``trainer.max_time``)."""

from __future__ import annotations

import re

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_FORM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")


def parse_duration(text: str) -> float:
    """Seconds in a duration written as a number and a unit (s, m, h or d).

    Raises:
        ValueError: ``text`` is not of that form or is not positive (the message shows the form).

    Example:
        >>> parse_duration("90s"), parse_duration("20m"), parse_duration("1.5h")
        (90.0, 1200.0, 5400.0)
    """
    match = _FORM.match(str(text))
    if not match:
        raise ValueError(
            f"expected a duration: a number and a unit s, m, h or d (e.g. 90s, 20m, 8h), got {text!r}"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"expected a positive duration (e.g. 90s, 20m, 8h), got {text!r}")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form of ``seconds`` that :func:`parse_duration` reads back.

    Example:
        >>> format_duration(1200), format_duration(5400), format_duration(45)
        ('20m', '90m', '45s')
    """
    for unit in ("d", "h", "m"):
        n = seconds / _UNITS[unit]
        if n >= 1 and float(n).is_integer():
            return f"{int(n)}{unit}"
    return f"{int(seconds)}s" if float(seconds).is_integer() else f"{seconds:g}s"
