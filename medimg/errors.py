"""Errors a user can cause, and the exit codes of the ``medimg`` command.

Each error message names the file, case or key and says what was expected. The
command line turns every :class:`MedimgError` into one line on stderr and exit
code :data:`EXIT_INPUT_ERROR`; the codes are documented in ``docs/refusals.md``.
"""

from __future__ import annotations

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
