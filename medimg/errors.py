"""Errors a user can cause, and the exit codes of the ``medimg`` command.

Each error message names the file, case or key and says what was expected. The
command line turns every :class:`MedimgError` into one line on stderr and exit
code :data:`EXIT_INPUT_ERROR`; the codes are documented in ``docs/refusals.md``.
"""

from __future__ import annotations

import re

EXIT_OK = 0
"""Everything asked for was done."""
EXIT_SOME_FAILED = 1
"""The command ran, but some cases, files or series failed; the printed summary has the count."""
EXIT_USAGE = 2
"""The command line itself is wrong (unknown option, missing argument); argparse's usage message."""
EXIT_INPUT_ERROR = 3
"""A data, configuration or weights error (any :class:`MedimgError`), printed as one line."""
EXIT_INTERRUPTED = 130
"""Stopped by Ctrl-C (SIGINT), as shells report it (128 + 2)."""


class MedimgError(Exception):
    """Base class of every error medimg raises on purpose (bad input, bad config)."""


class ConfigError(MedimgError):
    """A workflow or command-line setting is missing, misspelled or impossible."""


class DataError(MedimgError):
    """An image, label or manifest cannot be used; the message names the file."""


class GeometryError(DataError):
    """Two volumes that must share a grid do not (shape, affine or orientation)."""


class WeightsError(MedimgError):
    """Pretrained weights cannot be found, verified or loaded safely."""


# A medimg error re-raised from a DataLoader worker keeps only its text: "medimg.errors.DataError: msg".
_WORKER_TEXT = re.compile(r"^medimg\.errors\.(\w+): (.*)$", re.MULTILINE)


def find_medimg_error(exc: BaseException) -> MedimgError | None:
    """The :class:`MedimgError` behind ``exc``: itself, one in its cause/context chain, or one whose
    text a DataLoader worker re-raised inside another exception; ``None`` for a genuine bug.

    MONAI wraps what a transform raised in ``RuntimeError: applying transform <...>``; the medimg
    error inside names the file and what was expected, so it is what users read.

    Example:
        >>> try:
        ...     try:
        ...         raise DataError("a.nii.gz: truncated")
        ...     except DataError as inner:
        ...         raise RuntimeError("applying transform LoadImaged") from inner
        ... except RuntimeError as outer:
        ...     str(find_medimg_error(outer))
        'a.nii.gz: truncated'
    """
    seen: set[int] = set()
    node: BaseException | None = exc
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        if isinstance(node, MedimgError) and not _WORKER_TEXT.search(str(node)):
            return node
        match = _WORKER_TEXT.findall(str(node))
        if match:
            kind, message = match[-1]
            cls = globals().get(kind, MedimgError)
            return cls(message) if isinstance(cls, type) and issubclass(cls, MedimgError) else None
        node = node.__cause__ or node.__context__
    return None
