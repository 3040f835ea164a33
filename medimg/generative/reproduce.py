"""Reproduce a finished anomaly, super-resolution or synthesis run from its MLflow record, as ``medimg
reproduce`` does for the other tasks: the run's resolved workflow, its manifest with the run's own split (every file's
sha256 checked against the run's record first), the same seed; the test metrics side by side
(synthesis: the test cases' reconstruction error and KL, ``test_mse`` and ``test_kl``).

The steps shared with :mod:`medimg.training.reproduce` (download and hash check, the tag, the comparison
table) are that module's :func:`~medimg.training.reproduce.retrain_and_compare`; only the task check and
the study run differ (:func:`medimg.generative.run.run_generative`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medimg.errors import DataError
from medimg.training.reproduce import Reproduction, retrain_and_compare


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
    import yaml

    from medimg.config.generative import GENERATIVE_TASKS, load_generative_workflow
    from medimg.generative.run import run_generative

    def check_task(original: Any) -> None:
        task = original.data.tags.get("medimg.task")
        if task not in GENERATIVE_TASKS:
            raise DataError(
                f"MLflow run {run_id}: tag medimg.task is {task!r}, expected one of {GENERATIVE_TASKS}"
            )

    def retrain(raw: dict[str, Any]) -> Any:
        path = Path(raw["outputs"]["dir"]) / "workflow.reproduce.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return run_generative(load_generative_workflow(path))

    return retrain_and_compare(run_id, tracking_uri, out_dir, retrain, check_task)
