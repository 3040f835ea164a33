"""MLflow's usage telemetry, off unless the user turns it on.

MLflow (3.2 and later) collects usage telemetry by default and writes an installation id
to ``~/.config/mlflow/telemetry.json`` on first import. medimg turns that off
(``MLFLOW_DISABLE_TELEMETRY=true``) before MLflow is imported, unless the user set
``MLFLOW_DISABLE_TELEMETRY`` themselves (``MLFLOW_DISABLE_TELEMETRY=false`` turns it back on).

Importing this module does it, so a module that imports MLflow at its top imports this one
first; every layer that talks to MLflow (``inference`` to load models, ``training`` to track
runs, ``cli``) reaches it from below, which is why it is a top-level module importing nothing
of medimg.
"""

from __future__ import annotations

import os
import sys

TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"


def telemetry_off_by_default() -> None:
    """Turn MLflow's usage telemetry off unless the user chose otherwise in ``MLFLOW_DISABLE_TELEMETRY``.

    Must run before ``import mlflow`` to keep MLflow from writing its installation id under the
    home folder; if MLflow was already imported, its telemetry client is dropped.

    Example:
        >>> telemetry_off_by_default()
        >>> os.environ["MLFLOW_DISABLE_TELEMETRY"] in ("true", "false", "1", "0", "True", "False")
        True
    """
    if TELEMETRY_ENV in os.environ:
        return
    os.environ[TELEMETRY_ENV] = "true"
    if "mlflow" in sys.modules:  # imported before medimg: stop its client from sending anything
        try:
            from mlflow.telemetry import set_telemetry_client

            set_telemetry_client()
        except Exception:  # pragma: no cover - an MLflow without telemetry
            pass


telemetry_off_by_default()
