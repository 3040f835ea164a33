"""MLflow set-up: a local SQLite store by default, any tracking URI accepted, no telemetry.

MLflow 3 expects a database store; Lightning's ``MLFlowLogger`` defaults to a ``file:``
store. medimg chooses ``sqlite:///runs/mlflow.db`` deliberately and puts artifacts in
``runs/mlartifacts`` beside it, so one folder holds a whole local study history.

MLflow's usage telemetry is off unless the user turns it on (:mod:`medimg.telemetry`, which
importing this module runs).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import Any

from medimg.errors import ConfigError
from medimg.telemetry import telemetry_off_by_default


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


def _git(args: list[str], here: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=here, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _code_dir(cwd: str | Path | None) -> Path:
    return Path(cwd or Path(__file__).resolve().parents[2])


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """Dirty flag of the checkout that runs (``unknown`` outside a git checkout).

    The commit itself is MLflow's system tag ``mlflow.source.git.commit``
    (:func:`source_tags`); only whether the checkout had uncommitted changes is medimg's own.

    Example:
        >>> sorted(git_state())
        ['git_dirty']
    """
    try:
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], _code_dir(cwd))
        return {"git_dirty": str(bool(dirty)).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_dirty": "unknown"}


def source_tags(cwd: str | Path | None = None) -> dict[str, str]:
    """MLflow's system tags for where a run comes from: the command, ``LOCAL``, the git commit.

    ``mlflow.source.name`` is the program that was started (``sys.argv[0]``, as MLflow
    records it); ``mlflow.source.git.commit`` is the commit of the medimg checkout that
    runs, left out outside a git checkout (an installed wheel).

    Example:
        >>> tags = source_tags()
        >>> tags["mlflow.source.type"], "mlflow.source.name" in tags
        ('LOCAL', True)
    """
    import sys

    program = sys.argv[0] if sys.argv and sys.argv[0] else "medimg"
    if Path(program).exists():
        program = str(Path(program).resolve())
    tags = {"mlflow.source.name": program, "mlflow.source.type": "LOCAL"}
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        tags["mlflow.source.git.commit"] = _git(["rev-parse", "HEAD"], _code_dir(cwd))
    return tags


def open_store(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri``; a local SQLite store is opened now (its schema created if new).

    MLflow keeps the opened store for the process, so the client :func:`make_logger` makes later
    reuses it. A tracking server is not contacted here.

    Example:
        >>> open_store("sqlite:///" + str(tmp / "mlflow.db")).search_experiments()  # doctest: +SKIP
        [<Experiment: ... name='Default' ...>]
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    telemetry_off_by_default()
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger  # noqa: F401  (imported now, used by make_logger)

    client = mlflow.MlflowClient(uri)
    if uri.startswith("sqlite:///"):
        client.search_experiments(max_results=1)  # opens the store: SQLite schema created or checked
    return client


def make_logger(
    uri: str,
    experiment: str,
    run_name: str | None,
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """A Lightning ``MLFlowLogger`` on ``uri`` (experiment created with a local artifact folder).

    A new run carries MLflow's source tags (:func:`source_tags`) under ``tags``, which win on a
    clash; a resumed run (``run_id``) keeps the tags it was created with.
    """
    import mlflow
    from lightning.pytorch.loggers import MLFlowLogger

    client = open_store(uri)
    mlflow.set_tracking_uri(uri)
    if client.get_experiment_by_name(experiment) is None:
        client.create_experiment(experiment, artifact_location=artifact_location(uri, experiment))
    return MLFlowLogger(
        experiment_name=experiment,
        tracking_uri=uri,
        run_name=run_name,
        run_id=run_id,
        tags={**source_tags(), **(tags or {})},
        log_model=False,
    )
