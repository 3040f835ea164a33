"""Reproduce a finished run from its MLflow record: same workflow, same data (hash-checked), same seed."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medimg.config.load import parse_workflow
from medimg.config.yaml_strict import load_yaml_file
from medimg.errors import DataError
from medimg.io.csvsafe import read_csv_unescaped


@dataclass
class Reproduction:
    """The original and reproduced metrics, side by side."""

    original_run: str
    new_run: str
    table: pd.DataFrame  # metric, original, reproduced, abs_diff

    def identical(self, tolerance: float = 0.0) -> bool:
        return bool(len(self.table)) and bool((self.table["abs_diff"] <= tolerance).all())


def reproduce_run(run_id: str, tracking_uri: str, out_dir: str | None = None) -> Reproduction:
    """Rebuild a run's workflow from its artifacts, verify its data, retrain and compare metrics.

    Raises:
        DataError: When a file the run used is missing or changed (each named on its own line).

    Example:
        >>> rep = reproduce_run("0f3c...", "sqlite:///runs/mlflow.db")  # doctest: +SKIP
        >>> rep.identical()  # doctest: +SKIP
        True
    """
    from medimg.training.run import run_workflow

    return retrain_and_compare(
        run_id, tracking_uri, out_dir, lambda raw: run_workflow(parse_workflow(raw, source=f"run {run_id}"))
    )


def retrain_and_compare(
    run_id: str,
    tracking_uri: str,
    out_dir: str | None,
    retrain: Callable[[dict[str, Any]], Any],
    check_run: Callable[[Any], None] | None = None,
) -> Reproduction:
    """The stages every reproduction shares: find the run (``check_run(run)`` may refuse it), fetch
    its resolved workflow with its hash-checked data (:func:`_fetch_checked`), ``retrain(raw)``
    (a result with ``run_id`` and ``metrics``), tag the new run ``medimg.reproduces`` and compare
    the test metrics.

    Raises:
        DataError: the run is not found, or a file it used is missing or changed.

    Example:
        >>> retrain_and_compare("0f3c...", "sqlite:///runs/mlflow.db", None, run_from_raw)  # doctest: +SKIP
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    original = _get_run(client, run_id, tracking_uri)
    if check_run is not None:
        check_run(original)
    res = retrain(_fetch_checked(run_id, tracking_uri, out_dir))
    client.set_tag(res.run_id, "medimg.reproduces", run_id)
    return Reproduction(run_id, res.run_id, _compare(original.data.metrics, res.metrics))


def _get_run(client: Any, run_id: str, tracking_uri: str) -> Any:
    """The MLflow run ``run_id``; a :class:`DataError` naming the store when it is not there."""
    try:
        return client.get_run(run_id)
    except Exception as exc:
        raise DataError(f"MLflow run {run_id} not found at {tracking_uri} ({exc})") from exc


def reproduce_runner(run_id: str, tracking_uri: str) -> Any:
    """What ``medimg reproduce RUN_ID`` runs: the reproduction of the task that made the run (its
    ``medimg.task`` tag; ``medimg.tasks.Task.reproduce``) when it has its own, else
    :func:`reproduce_run` (the common stages).

    Raises:
        DataError: the run is not found.
        ConfigError: the run's task has a study of its own and no reproduction yet.

    Example:
        >>> reproduce_runner("0f3c...", "sqlite:///runs/mlflow.db").__name__  # doctest: +SKIP
        'reproduce_run'
    """
    import mlflow

    from medimg.errors import ConfigError
    from medimg.tasks import get_task, task_entry, task_names

    run = _get_run(mlflow.MlflowClient(tracking_uri), run_id, tracking_uri)
    name = run.data.tags.get("medimg.task")
    task = get_task(name) if name in task_names() else None
    if task is not None and task.reproduce is not None:
        return task_entry(task, "reproduce")
    if task is not None and task.study is not None:
        raise ConfigError(f"MLflow run {run_id}: a {name} run cannot be reproduced yet (medimg reproduce)")
    return reproduce_run


def _fetch_checked(run_id: str, tracking_uri: str, out_dir: str | None) -> dict[str, Any]:
    """The run's resolved workflow, pointed at a copy of its manifest whose files are hash-checked."""
    from medimg.training.lineage import changed_files

    tmp = Path(tempfile.mkdtemp(prefix="medimg-reproduce-"))
    try:
        local = _download(run_id, tracking_uri, tmp)
        problems = changed_files(read_csv_unescaped(local["data/file_hashes.csv"]))
        if problems:
            raise DataError(
                f"run {run_id}: the data changed since the run; cannot reproduce:\n  " + "\n  ".join(problems)
            )
        raw = load_yaml_file(local["workflow.resolved.yaml"], f"run {run_id} workflow")
        out = Path(out_dir or f"{raw['outputs']['dir']}_reproduce_{run_id[:8]}").resolve()
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(local["data/manifest.csv"], out / "source_manifest.csv")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    raw["outputs"]["dir"] = str(out)
    raw["data"].update({"manifest": str(out / "source_manifest.csv"), "root": None, "synthetic": None})
    raw["data"]["split"]["use_manifest_split"] = True  # the run's own split, case for case
    raw["tracking"]["uri"] = tracking_uri
    raw["tracking"]["run_name"] = f"{raw['name']}-reproduce"
    return raw


def _download(run_id: str, tracking_uri: str, tmp: Path) -> dict[str, Path]:
    """The run's workflow, manifest and file hashes, downloaded into ``tmp``."""
    import mlflow

    local: dict[str, Path] = {}
    for art in ("workflow.resolved.yaml", "data/manifest.csv", "data/file_hashes.csv"):
        try:
            local[art] = Path(
                mlflow.artifacts.download_artifacts(
                    run_id=run_id,
                    artifact_path=art,
                    dst_path=str(tmp / art.replace("/", "_")),
                    tracking_uri=tracking_uri,
                )
            )
        except Exception as exc:
            raise DataError(
                f"MLflow run {run_id}: artifact {art!r} missing; it was not made by "
                f"medimg run, or its artifacts are gone ({exc})"
            ) from exc
    return local


def _compare(original: dict[str, float], reproduced: dict[str, float]) -> pd.DataFrame:
    """metric, original, reproduced, abs_diff for every test metric both runs have."""
    rows = [
        {
            "metric": key,
            "original": value,
            "reproduced": reproduced[key],
            "abs_diff": abs(value - reproduced[key]),
        }
        for key, value in sorted(original.items())
        if key.startswith("test_") and key in reproduced
    ]
    return pd.DataFrame(rows, columns=["metric", "original", "reproduced", "abs_diff"])
