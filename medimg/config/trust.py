"""Who may switch on code-running weight loading: the person running medimg, never a workflow file.

``model.pretrained.allow_pickle: true`` unpickles the pretrained weights file, which runs
any code inside it. A workflow is data that travels (shared folders, MLflow runs,
``medimg reproduce``), so it can ask for this but never grant it: the grant comes at run
time from the command line (``--allow-pickle``) or the environment
(``MEDIMG_ALLOW_PICKLE=1``), and each granted load logs a warning naming the file.

Example:
    >>> pickle_permitted()
    False
    >>> with pickle_allowed_by_user():
    ...     pickle_permitted()
    True
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from medimg.errors import ConfigError

if TYPE_CHECKING:
    from medimg.config.schema import Workflow

ALLOW_PICKLE_ENV = "MEDIMG_ALLOW_PICKLE"
ALLOW_PICKLE_KEY = "model.pretrained.allow_pickle"
_TRUE = ("1", "true", "yes", "on")
_granted = False

log = logging.getLogger("medimg.trust")


@contextmanager
def pickle_allowed_by_user() -> Iterator[None]:
    """Grant pickle loading for the duration of the block (what ``--allow-pickle`` does)."""
    global _granted
    before, _granted = _granted, True
    try:
        yield
    finally:
        _granted = before


def pickle_permitted() -> bool:
    """Whether the user granted pickle loading for this run (flag or ``MEDIMG_ALLOW_PICKLE``)."""
    return _granted or os.environ.get(ALLOW_PICKLE_ENV, "").strip().lower() in _TRUE


def require_pickle_permission(weights: str, asked_by: str, *, warn: bool = True) -> None:
    """Refuse unless the user granted pickle loading; when granted, warn naming ``weights``.

    Args:
        weights: The file (or source) that would be unpickled.
        asked_by: Where the request came from (the workflow file, or the run).
        warn: Log the warning (the load itself warns; a validation need not).

    Raises:
        ConfigError: Not granted; the message names the key and both ways to grant it.
    """
    if not pickle_permitted():
        raise ConfigError(
            f"{asked_by}: {ALLOW_PICKLE_KEY}: true asks to unpickle {weights}, which runs any code inside "
            f"that file; a workflow cannot allow this by itself. If you trust {weights}, run with "
            f"--allow-pickle or set {ALLOW_PICKLE_ENV}=1; better, convert it once with "
            f"`medimg weights convert` and use the .safetensors file"
        )
    if warn:
        log.warning(
            "unpickling %s (%s, allowed by --allow-pickle or %s): code inside it runs with your permissions",
            weights,
            ALLOW_PICKLE_KEY,
            ALLOW_PICKLE_ENV,
        )


def check_workflow_trust(wf: Workflow, source: str) -> None:
    """Refuse a workflow asking for ``allow_pickle`` unless the user granted it (the load warns).

    Example:
        >>> check_workflow_trust(load_workflow("shared.yaml"), "shared.yaml")  # doctest: +SKIP
    """
    pretrained = wf.model.pretrained
    if pretrained is not None and pretrained.allow_pickle:
        require_pickle_permission(pretrained.source, source, warn=False)
