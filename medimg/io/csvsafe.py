"""CSV cells that a spreadsheet cannot run: formula injection escaped on write, undone on read.

A cell beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is a formula
to Excel and LibreOffice; a folder name, a DICOM ``Manufacturer`` or a case id chosen by
whoever made the data can therefore run commands on the machine of the radiologist who
opens ``manifest.csv``. Every CSV medimg writes goes through :func:`escape_frame`:

* a text cell starting with one of those characters, or with ``'``, gets a leading ``'``
  (the spreadsheet convention for "this is text"); :func:`unescape_cell` removes exactly
  one, so the round trip is exact;
* a *path* cell instead gets ``./`` in front of a relative path: ``./=cmd/ct`` is inert in
  a spreadsheet and is the same file to every reader (``Path("./=cmd") == Path("=cmd")``),
  so manifests stay usable by readers that do not unescape.

Numbers are never touched (``-1.5`` in a numeric column stays a number).

Example:
    >>> escape_cell("=HYPERLINK(\\"http://x\\")")
    '\\'=HYPERLINK("http://x")'
    >>> escape_cell("=cmd/ct.nii.gz", path=True)
    './=cmd/ct.nii.gz'
    >>> unescape_cell(escape_cell("-3 dB"))
    '-3 dB'
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""First characters that make a spreadsheet cell a formula."""
QUOTE = "'"


def escape_cell(value: Any, *, path: bool = False) -> Any:
    """Escape one cell for CSV (non-text values are returned unchanged).

    Args:
        value: The cell.
        path: The cell is a file path: prefix ``./`` to a relative one instead of a quote.
    """
    if not isinstance(value, str) or not value:
        return value
    if path and value.startswith((*FORMULA_START, QUOTE)):
        return f".{os.sep}{value}"
    if value.startswith((*FORMULA_START, QUOTE)):
        return QUOTE + value
    return value


def unescape_cell(value: Any) -> Any:
    """Undo :func:`escape_cell` for a text cell (path cells need no undoing).

    Example:
        >>> unescape_cell("''quoted"), unescape_cell("plain")
        ("'quoted", 'plain')
    """
    if isinstance(value, str) and value.startswith(QUOTE):
        return value[1:]
    return value


def escape_frame(frame: pd.DataFrame, path_columns: Iterable[str] = ()) -> pd.DataFrame:
    """A copy of ``frame`` with every text cell escaped (``path_columns`` as paths).

    Example:
        >>> import pandas as pd
        >>> frame = pd.DataFrame({"image": ["=a/ct"], "model": ["@SUM(1)"], "n": [-1]})
        >>> escape_frame(frame, ["image"]).iloc[0].tolist()[:2], int(escape_frame(frame)["n"][0])
        (['./=a/ct', "'@SUM(1)"], -1)
    """
    paths = set(path_columns)
    out = frame.copy()
    for column in _text_columns(out):
        as_path = column in paths
        out[column] = [escape_cell(v, path=as_path) for v in out[column]]
    return out


def unescape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Undo :func:`escape_frame` on a CSV medimg wrote (read with text columns as ``object``)."""
    out = frame.copy()
    for column in _text_columns(out):
        out[column] = [unescape_cell(v) for v in out[column]]
    return out


def _text_columns(frame: pd.DataFrame) -> list[Any]:
    """Columns that may hold text (object or string dtype); numeric and boolean ones never do."""
    import pandas as pd

    return [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]


def escape_row(row: dict[str, Any], path_columns: Iterable[str] = ()) -> dict[str, Any]:
    """:func:`escape_cell` on every value of a ``csv.DictWriter`` row.

    Example:
        >>> escape_row({"case": "+1 555", "path": "-x/ct"}, ["path"])
        {'case': "'+1 555", 'path': './-x/ct'}
    """
    paths = set(path_columns)
    return {k: escape_cell(v, path=k in paths) for k, v in row.items()}


def read_csv_unescaped(path: str | os.PathLike[str], **kwargs: Any) -> pd.DataFrame:
    """``pandas.read_csv`` of a CSV medimg wrote, with the formula escaping undone.

    Example:
        >>> read_csv_unescaped("out/manifest.csv")  # doctest: +SKIP
    """
    import pandas as pd

    return unescape_frame(pd.read_csv(Path(path), **kwargs))
