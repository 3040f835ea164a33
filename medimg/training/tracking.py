"""MLflow set-up: a local SQLite store by default, any tracking URI accepted, no telemetry.

MLflow 3 expects a database store; Lightning's ``MLFlowLogger`` defaults to a ``file:``
store. medimg chooses ``sqlite:///runs/mlflow.db`` deliberately and puts artifacts in
``runs/mlartifacts`` beside it, so one folder holds a whole local study history.

MLflow (3.2 and later) collects usage telemetry by default and writes an installation id
to ``~/.config/mlflow/telemetry.json`` on first import. medimg turns that off
(``MLFLOW_DISABLE_TELEMETRY=true``) before MLflow is imported, unless the user set
``MLFLOW_DISABLE_TELEMETRY`` themselves (``MLFLOW_DISABLE_TELEMETRY=false`` turns it back on).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from medimg.errors import ConfigError

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
    import sys

    if "mlflow" in sys.modules:  # imported before medimg: stop its client from sending anything
        try:
            from mlflow.telemetry import set_telemetry_client

            set_telemetry_client()
        except Exception:  # pragma: no cover - an MLflow without telemetry
            pass


telemetry_off_by_default()


def resolve_tracking_uri(uri: str) -> str:
    """Make a relative SQLite URI absolute (and create its folder); other URIs pass through.

    Example:
        >>> resolve_tracking_uri("sqlite:///runs/mlflow.db").startswith("sqlite:////")
        True
    """
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        path = path if path.is_absolute() else Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    if uri.startswith(("http://", "https://", "postgresql", "mysql", "databricks", "file:")):
        return uri
    raise ConfigError(
        f"tracking.uri {uri!r}: expected sqlite:///PATH, http(s)://SERVER, postgresql://... or file:"
    )


def artifact_location(uri: str, experiment: str) -> str | None:
    """Where a new experiment keeps artifacts: beside the SQLite file; the server's choice otherwise."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///") :])
        return (db.parent / "mlartifacts" / experiment).resolve().as_uri()
    return None


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested workflow → ``{"optim.lr": "0.001", ...}`` (MLflow params)."""
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = str(v)[:5000]
    return out


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the code that runs (``unknown`` outside a git checkout)."""
    here = Path(cwd or Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}


def make_logger(
    uri: str,
    experiment: str,
    run_name: str | None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """A Lightning ``MLFlowLogger`` on ``uri`` (experiment created with a local artifact folder)."""
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    telemetry_off_by_default()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
    return MLFlowLogger(
        experiment_name=experiment,
        tracking_uri=uri,
        run_name=run_name,
        run_id=run_id,
        tags=tags,
        log_model=False,
    )
