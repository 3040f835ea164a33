"""Reproduce a finished anomaly, super-resolution or synthesis run from its MLflow record, as ``medimg
reproduce`` does for the other tasks: the run's resolved workflow, its manifest with the run's own split (every file's
sha256 checked against the run's record first), the same seed; the test metrics side by side
(synthesis: the test cases' reconstruction error and KL, ``test_mse`` and ``test_kl``).

The steps shared with :mod:`medimg.training.reproduce` (download and hash check, the comparison table)
are that module's; only the study run differs (:func:`medimg.generative.run.run_generative`).
"""

from __future__ import annotations

from pathlib import Path

from medimg.errors import DataError
from medimg.training.reproduce import Reproduction, _compare, _fetch_checked


def reproduce_generative(run_id: str, tracking_uri: str, out_dir: str | None = None) -> Reproduction:
    """Retrain a generative run from its record into a new MLflow run tagged ``medimg.reproduces``.

    Raises:
        DataError: the run is not found, is not a generative run, or a file it used is missing or
            changed (each named on its own line).

    Example:
        >>> rep = reproduce_generative("0f3c...", "sqlite:///runs/mlflow.db")  # doctest: +SKIP
        >>> rep.identical(1e-6)  # doctest: +SKIP
        True
    """
    import mlflow
    import yaml

    from medimg.config.generative import GENERATIVE_TASKS, load_generative_workflow
    from medimg.generative.run import run_generative

    client = mlflow.MlflowClient(tracking_uri)
    try:
        original = client.get_run(run_id)
    except Exception as exc:
        raise DataError(f"MLflow run {run_id} not found at {tracking_uri} ({exc})") from exc
    task = original.data.tags.get("medimg.task")
    if task not in GENERATIVE_TASKS:
        raise DataError(
            f"MLflow run {run_id}: tag medimg.task is {task!r}, expected one of {GENERATIVE_TASKS}"
        )
    raw = _fetch_checked(run_id, tracking_uri, out_dir)
    path = Path(raw["outputs"]["dir"]) / "workflow.reproduce.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    res = run_generative(load_generative_workflow(path))
    client.set_tag(res.run_id, "medimg.reproduces", run_id)
    return Reproduction(run_id, res.run_id, _compare(original.data.metrics, res.metrics))
