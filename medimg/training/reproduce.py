"""Reproduce a finished run from its MLflow record: same workflow, same data (hash-checked), same seed."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

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
    import mlflow

    from medimg.training.lineage import changed_files
    from medimg.training.run import run_workflow

    client = mlflow.MlflowClient(tracking_uri)
    try:
        original = client.get_run(run_id)
    except Exception as exc:
        raise DataError(f"MLflow run {run_id} not found at {tracking_uri} ({exc})") from exc
    tmp = Path(tempfile.mkdtemp(prefix="medimg-reproduce-"))
    try:
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
    wf = parse_workflow(raw, source=f"run {run_id}")
    res = run_workflow(wf)
    client.set_tag(res.run_id, "medimg.reproduces", run_id)
    rows = []
    for key, value in sorted(original.data.metrics.items()):
        if key.startswith("test_") and key in res.metrics:
            rows.append(
                {
                    "metric": key,
                    "original": value,
                    "reproduced": res.metrics[key],
                    "abs_diff": abs(value - res.metrics[key]),
                }
            )
    return Reproduction(
        run_id, res.run_id, pd.DataFrame(rows, columns=["metric", "original", "reproduced", "abs_diff"])
    )
